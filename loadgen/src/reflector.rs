//! The ceiling: a trivial reflector with the router's own I/O backends and thread count, but
//! no chat logic. It knows the plan, so for each SAY it sends the TXT_SAY (same size as the
//! router's) straight to the sender's channel members; everything else it ignores. Whatever
//! the router loses against it is what its sharding, sessions and state cost.

use crate::plan::{channel_name, client_name, Plan};
use crate::LoadError;
use ahash::AHashMap;
use chat_router::engine::Outbox;
use chat_router::io::{self, sys, Backend, IoKind, Transmit};
use chat_router::pinned::{Pinned, Start};
use chat_router::proto::duckchat::{self, Inbound, SayLayout, TXT_SAY_LEN};
use chat_router::proto::{Name, Text};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Member {
    name: Name,
    channel: u32,
}

struct Table {
    members: AHashMap<SocketAddr, Member>,
    channels: Vec<Vec<SocketAddr>>,
    channel_names: Vec<Name>,
}

pub struct Reflector {
    pub addr: SocketAddr,
    pub backend: &'static str,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<sys::EventFd>>,
    threads: Pinned,
}

impl Reflector {
    /// `threads` reflector threads (named `reflect-N`, pinned as the router's shards are) on one
    /// port of 127.0.0.1.
    pub fn start(
        plan: &Plan,
        client_addrs: &[SocketAddr],
        threads: usize,
        io: IoKind,
    ) -> Result<Reflector, LoadError> {
        let (kind, _) = io::choose(io).map_err(LoadError::Setup)?;
        let table = Arc::new(Table {
            members: client_addrs
                .iter()
                .zip(&plan.channel_of)
                .enumerate()
                .map(|(i, (&addr, &channel))| {
                    let name = Name::truncating(client_name(i as u32).as_bytes());
                    (addr, Member { name, channel })
                })
                .collect(),
            channels: plan
                .members
                .iter()
                .map(|m| m.iter().map(|&c| client_addrs[c as usize]).collect())
                .collect(),
            channel_names: (0..plan.members.len() as u32)
                .map(|c| Name::truncating(channel_name(c).as_bytes()))
                .collect(),
        });
        let first = sys::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)), true)
            .map_err(LoadError::Socket)?;
        let addr = sys::local_addr(&first).map_err(LoadError::Socket)?;
        let mut sockets = vec![first];
        for _ in 1..threads.max(1) {
            sockets.push(sys::bind_udp(addr, true).map_err(LoadError::Socket)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let wakers = (0..sockets.len())
            .map(|_| sys::EventFd::new().map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LoadError::Socket)?;
        let starts = sockets
            .into_iter()
            .zip(&wakers)
            .map(|(socket, waker)| Start {
                socket,
                wake: waker.raw(),
                payload: waker.clone(),
            })
            .collect();
        let body = {
            let (table, stop) = (table.clone(), stop.clone());
            move |_, backend, waker: Arc<sys::EventFd>| reflect(backend, &table, &stop, &waker)
        };
        let halt = || halt(&stop, &wakers);
        let threads = Pinned::start("reflect", kind, starts, body, halt)
            .map_err(|(_, e)| LoadError::Socket(e))?;
        Ok(Reflector {
            addr,
            backend: kind.name(),
            stop,
            wakers,
            threads,
        })
    }

    /// The reflector threads' kernel ids, for reading their CPU time from /proc.
    pub fn thread_ids(&self) -> &[i32] {
        &self.threads.thread_ids
    }
}

/// Tells every reflector thread to stop, and wakes the sleeping ones.
fn halt(stop: &AtomicBool, wakers: &[Arc<sys::EventFd>]) {
    stop.store(true, Ordering::SeqCst);
    for w in wakers {
        w.notify();
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        halt(&self.stop, &self.wakers);
        self.threads.join();
    }
}

fn reflect(mut backend: Backend, table: &Table, stop: &AtomicBool, waker: &sys::EventFd) {
    let mut out = Outbox::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let got = backend.recv(&mut |src, bytes| {
            let Ok(Inbound::Say { text, .. }) =
                duckchat::decode_inbound(bytes, SayLayout::UserFirst)
            else {
                return;
            };
            let Some(sender) = table.members.get(&src) else {
                return;
            };
            let channel = sender.channel as usize;
            let payload = out.payload(TXT_SAY_LEN, |buf| {
                let name = &table.channel_names[channel];
                duckchat::encode_txt_say(buf, name, &sender.name, &Text::truncating(text))
            });
            if let Some(payload) = payload {
                for &dst in &table.channels[channel] {
                    out.send(dst, payload);
                }
            }
        });
        if !out.is_empty() {
            backend.send(out.sends().iter().map(|s| Transmit {
                dst: s.dst,
                contents: out.bytes(s.payload),
            }));
            out.clear();
        }
        if got.datagrams == 0 {
            backend.wait(Duration::from_millis(50));
            waker.clear();
        }
    }
}
