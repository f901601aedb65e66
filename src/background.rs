//! A service on a thread of its own (the web server, the mailbox): a single-threaded tokio
//! runtime that runs one future until it ends or is stopped. Stopping drops its connections
//! and gives work in flight a short grace, no more.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::Notify;

/// How long stopping waits for work in flight (a blocking hand-over, a write).
const GRACE: Duration = Duration::from_millis(200);

pub struct Background {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts thread `name` running the future `run` makes (made there, inside the runtime,
    /// so that it may register sockets with it).
    pub fn start<F, Fut>(name: &str, run: F) -> std::io::Result<Self>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = run() => {}
                        _ = stopped.notified() => {}
                    }
                });
                runtime.shutdown_timeout(GRACE);
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
