//! The only place with syscalls and `unsafe`: the io_uring backend, the recvmmsg/sendmmsg
//! backend, and the small wrappers the runtime needs (sockets, eventfd, signals, randomness).
//! Both backends offer the same three calls to a shard: `recv` what is ready, `send` an
//! outbox, `wait` until something happens.

mod mmsg;
pub mod spoof;
pub mod sys;
mod uring;

use crate::engine::{Counters, Outbox};
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

/// Receive buffer size: every DuckChat datagram is far smaller; longer ones are truncated,
/// which decoders accept (a request longer than its struct is valid).
pub const MAX_DATAGRAM: usize = 2048;
pub const RECV_BATCH: usize = 64;
pub const SEND_BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoKind {
    /// io_uring where the kernel allows it, otherwise recvmmsg/sendmmsg.
    Auto,
    /// io_uring (multishot RecvMsg with a provided buffer ring, batched SendMsg).
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
}

impl IoKind {
    /// The backend's name in start-up lines and reports.
    pub fn name(self) -> &'static str {
        match self {
            IoKind::Mmsg => "recvmmsg/sendmmsg",
            IoKind::Uring | IoKind::Auto => "io_uring",
        }
    }
}

/// The backend chosen for `wanted`, and why it fell back when it did.
pub fn choose(wanted: IoKind) -> Result<(IoKind, Option<String>), String> {
    match wanted {
        IoKind::Mmsg => Ok((IoKind::Mmsg, None)),
        IoKind::Uring => uring::probe().map(|()| (IoKind::Uring, None)),
        IoKind::Auto => Ok(match uring::probe() {
            Ok(()) => (IoKind::Uring, None),
            Err(why) => (IoKind::Mmsg, Some(why)),
        }),
    }
}

pub enum Backend {
    Uring(Box<uring::Uring>),
    Mmsg(Box<mmsg::Mmsg>),
}

impl Backend {
    /// A backend of `kind` (Uring or Mmsg, as returned by [`choose`]) over `socket`.
    pub fn new(kind: IoKind, socket: OwnedFd, wake: RawFd) -> std::io::Result<Self> {
        Ok(match kind {
            IoKind::Uring | IoKind::Auto => {
                Backend::Uring(Box::new(uring::Uring::new(socket, wake)?))
            }
            IoKind::Mmsg => Backend::Mmsg(Box::new(mmsg::Mmsg::new(socket, wake))),
        })
    }

    pub fn recv(&mut self, counters: &Counters, on: &mut dyn FnMut(SocketAddr, &[u8])) -> usize {
        match self {
            Backend::Uring(b) => b.recv(counters, on),
            Backend::Mmsg(b) => b.recv(on),
        }
    }

    pub fn send(&mut self, out: &Outbox, counters: &Counters) {
        match self {
            Backend::Uring(b) => b.send(out, counters),
            Backend::Mmsg(b) => b.send(out, counters),
        }
    }

    pub fn wait(&mut self, timeout: Duration) {
        match self {
            Backend::Uring(b) => b.wait(timeout),
            Backend::Mmsg(b) => b.wait(timeout),
        }
    }
}
