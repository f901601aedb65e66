//! Threads pinned one per core, each running one I/O backend: the router's shards and
//! loadgen's reflector start theirs here, the same way. Each thread builds its backend itself
//! (io_uring state stays on the thread that uses it), reports ready with its kernel thread id
//! (to read its CPU time from /proc), then runs until its body returns.

use crate::io::{sys, Backend, IoKind};
use std::os::fd::{OwnedFd, RawFd};
use std::thread::JoinHandle;

/// What each thread is given: its socket, the eventfd that wakes its backend, and the caller's
/// own payload (an engine, say).
pub struct Start<T> {
    pub socket: OwnedFd,
    pub wake: RawFd,
    pub payload: T,
}

pub struct Pinned {
    /// Kernel thread ids, in start order.
    pub thread_ids: Vec<i32>,
    threads: Vec<JoinHandle<()>>,
}

impl Pinned {
    /// Starts a thread named `{name}-{i}` for each start, pinned to core `i` (round robin over
    /// the cores there are), that runs `body(i, backend, payload)`. Returns once every thread is
    /// ready; or, when one fails, calls `halt` (which must make every body return), joins the
    /// threads that did start and returns the failure with its index.
    pub fn start<T, F>(
        name: &str,
        kind: IoKind,
        starts: Vec<Start<T>>,
        body: F,
        halt: impl FnOnce(),
    ) -> Result<Pinned, (usize, std::io::Error)>
    where
        T: Send + 'static,
        F: Fn(usize, Backend, T) + Send + Sync + Clone + 'static,
    {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut pinned = Pinned {
            thread_ids: Vec::with_capacity(starts.len()),
            threads: Vec::with_capacity(starts.len()),
        };
        for (i, start) in starts.into_iter().enumerate() {
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let (ready, body) = (ready_tx.clone(), body.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    match Backend::new(kind, start.socket, start.wake) {
                        Ok(backend) => {
                            let _ = ready.send(Ok(sys::thread_id()));
                            body(i, backend, start.payload);
                        }
                        Err(e) => {
                            let _ = ready.send(Err((i, e)));
                        }
                    }
                });
            match thread {
                Ok(thread) => pinned.threads.push(thread),
                Err(e) => {
                    drop(ready_tx);
                    return Err(pinned.abandon(halt, (i, e)));
                }
            }
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..pinned.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(tid)) => pinned.thread_ids.push(tid),
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
        match failure {
            Some(e) => Err(pinned.abandon(halt, e)),
            None => Ok(pinned),
        }
    }

    fn abandon<E>(mut self, halt: impl FnOnce(), error: E) -> E {
        halt();
        self.join();
        error
    }

    /// Waits for every thread to return (the caller has told them to stop).
    pub fn join(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
