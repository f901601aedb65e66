//! The only place with syscalls and `unsafe`: the io_uring backend, the recvmmsg/sendmmsg
//! backend, and the small wrappers the runtime needs (sockets, eventfd, signals, randomness).
//! Both backends offer the same three calls to a shard: `recv` what is ready, `send` a batch of
//! [`Transmit`]s, `wait` until something happens. They know nothing of the engine: they take
//! and give addresses and bytes, and report what they could not do ([`Received`], [`Sent`])
//! for the caller to count. One back-pressure policy in both: a datagram the kernel will not
//! take now is dropped and reported, never waited for (a shard serves everyone else meanwhile).

mod mmsg;
pub mod sys;
mod uring;

use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

/// Receive buffer size: every DuckChat datagram is far smaller; longer ones are truncated,
/// which decoders accept (a request longer than its struct is valid).
pub const MAX_DATAGRAM: usize = 2048;
pub const RECV_BATCH: usize = 64;
pub const SEND_BATCH: usize = 256;

/// One datagram to send: where, and its bytes (borrowed until the send returns).
#[derive(Debug, Clone, Copy)]
pub struct Transmit<'a> {
    pub dst: SocketAddr,
    pub contents: &'a [u8],
}

/// What one `recv` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Datagrams handed to the callback.
    pub datagrams: usize,
    /// Datagrams the kernel dropped because no receive buffer was free (io_uring's ENOBUFS).
    pub no_buffer: u64,
}

/// What one `send` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    /// Refused by the kernel, a full send buffer included.
    pub failed: u64,
}

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

    /// Hands every datagram that is ready to `on`, without blocking.
    pub fn recv(&mut self, on: &mut dyn FnMut(SocketAddr, &[u8])) -> Received {
        match self {
            Backend::Uring(b) => b.recv(on),
            Backend::Mmsg(b) => b.recv(on),
        }
    }

    /// Sends every transmit, in order, without blocking.
    pub fn send<'a>(&mut self, transmits: impl Iterator<Item = Transmit<'a>>) -> Sent {
        match self {
            Backend::Uring(b) => b.send(transmits),
            Backend::Mmsg(b) => b.send(transmits),
        }
    }

    pub fn wait(&mut self, timeout: Duration) {
        match self {
            Backend::Uring(b) => b.wait(timeout),
            Backend::Mmsg(b) => b.wait(timeout),
        }
    }

    /// Whether the wake-up eventfd fired since the last call: only then does it need the
    /// read that clears it (a syscall saved on every other wake-up).
    pub fn take_woken(&mut self) -> bool {
        match self {
            Backend::Uring(b) => b.take_woken(),
            Backend::Mmsg(b) => b.take_woken(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Both backends over real sockets: a datagram the kernel refuses is reported and skipped,
    /// the others go in order, and the receiver gets exactly those.
    #[test]
    fn sends_report_failures_and_receives_come_in_order() {
        let mut kinds = vec![IoKind::Mmsg];
        if uring::probe().is_ok() {
            kinds.push(IoKind::Uring);
        }
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        for kind in kinds {
            let (wake_a, wake_b) = (sys::EventFd::new().unwrap(), sys::EventFd::new().unwrap());
            let a = sys::bind_udp(localhost, false).unwrap();
            let b = sys::bind_udp(localhost, false).unwrap();
            let to_b = sys::local_addr(&b).unwrap();
            let mut sender = Backend::new(kind, a, wake_a.raw()).unwrap();
            let mut receiver = Backend::new(kind, b, wake_b.raw()).unwrap();
            // An IPv4 socket cannot send to an IPv6 address: the kernel refuses that one.
            let nowhere = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 9));
            let plan = [
                (to_b, "one"),
                (nowhere, "lost"),
                (to_b, "two"),
                (to_b, "three"),
            ];
            let sent = sender.send(plan.iter().map(|&(dst, text)| Transmit {
                dst,
                contents: text.as_bytes(),
            }));
            assert_eq!(sent, Sent { sent: 3, failed: 1 }, "{kind:?}");
            let mut got: Vec<String> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            while got.len() < 3 && Instant::now() < deadline {
                receiver.wait(Duration::from_millis(100));
                let received = receiver
                    .recv(&mut |_, bytes| got.push(String::from_utf8_lossy(bytes).into_owned()));
                assert_eq!(received.no_buffer, 0);
            }
            assert_eq!(got, ["one", "two", "three"], "{kind:?}");
        }
    }
}
