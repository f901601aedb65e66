//! A proxy between the servers of a cluster, in the manner of the assignment's public one: it
//! listens on every forwarding address that differs from its server's bind address, holds each
//! datagram for a random time up to `delay` (so datagrams overtake each other), drops a share
//! of them when asked, cuts anything longer than 999 bytes as the public proxy does, and then
//! sends it to the destination's bind address **from the sender's forwarding address**, so
//! the receiving server knows who sent it.
//!
//! The public proxy holds at most 1,000 datagrams at once and exits ("Too many queued
//! messages!") when a server sends more; so does this one by default (`max_in_flight`): it
//! stops forwarding and reports the failure, so that a test sees what the public proxy would do.
//! A datagram's delay runs from when the kernel received it, not from when this thread read it:
//! on a busy machine the thread may not run for tens of milliseconds, and datagrams that waited
//! in its sockets that long are due already. Held, and counted against the limit, are only
//! those still within their delay, so the count measures the servers' traffic, not this
//! thread's scheduling.
//!
//! One thread, one epoll over the sockets and a heap of datagrams due; every datagram costs one
//! allocation, which is nothing at the rates a cluster of chat servers sees.

use chat_router::engine::Member;
use chat_router::rng::Rng;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The public proxy truncates longer datagrams; so do we, so that a server that sends more is caught.
pub const MAX_DATAGRAM: usize = 999;
/// The public proxy's limit on datagrams held at once.
pub const PUBLIC_MAX_IN_FLIGHT: usize = 1000;
/// A kernel timestamp further back than this is taken for a clock step, not a wait.
const MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub members: Vec<Member>,
    /// Each datagram waits a uniformly random time from zero to this.
    pub delay: Duration,
    /// Probability that a datagram is dropped.
    pub drop: f64,
    pub seed: u64,
    /// Datagrams held at once; one more and the proxy fails, as the public one exits.
    pub max_in_flight: usize,
}

impl std::fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "forwarded {}, dropped {} (--drop), truncated {} (over {MAX_DATAGRAM} bytes), \
             unroutable {}, at most {} held at once",
            self.forwarded, self.dropped, self.truncated, self.unroutable, self.most_in_flight
        )
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub forwarded: u64,
    pub dropped: u64,
    pub truncated: u64,
    /// From an address that is no server's bind address, or for which there is no proxied
    /// forwarding address to send from.
    pub unroutable: u64,
    /// The most datagrams held at once.
    pub most_in_flight: usize,
    /// A datagram arrived with `max_in_flight` held: the public proxy exits here ("Too many
    /// queued messages!"); this one stopped forwarding.
    pub failed: bool,
}

pub struct Proxy {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProxyStats>>,
}

struct Held {
    bytes: Vec<u8>,
    /// Index of the sender, whose forwarding socket sends it.
    via: usize,
    dst: SocketAddr,
}

impl Proxy {
    /// Binds the forwarding addresses and starts forwarding on a thread of its own.
    pub fn start(cfg: ProxyConfig) -> std::io::Result<Proxy> {
        let mut sockets: Vec<Option<UdpSocket>> = Vec::new();
        for m in &cfg.members {
            sockets.push(if m.forward == m.bind {
                None
            } else {
                let named = |e: std::io::Error| {
                    std::io::Error::new(e.kind(), format!("forwarding address {}: {e}", m.forward))
                };
                Some(UdpSocket::bind(m.forward).map_err(named)?)
            });
        }
        let poll = Poll::new()?;
        for (i, s) in sockets.iter_mut().enumerate() {
            if let Some(s) = s {
                poll.registry().register(s, Token(i), Interest::READABLE)?;
                // Switches the kernel's receive timestamps on (nothing received yet to stamp).
                let _ = crate::io::age_of_last_datagram(s.as_raw_fd());
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let (flag, failure) = (stop.clone(), failed.clone());
        let thread = std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || forward(cfg, sockets, poll, &flag, &failure))?;
        Ok(Proxy {
            stop,
            failed,
            thread: Some(thread),
        })
    }

    /// Whether it has failed as the public proxy would have (too many datagrams held).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Stops forwarding (what is still held is dropped) and returns the counts.
    pub fn stop(mut self) -> ProxyStats {
        self.halt()
    }

    fn halt(&mut self) -> ProxyStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.halt();
    }
}

fn forward(
    cfg: ProxyConfig,
    sockets: Vec<Option<UdpSocket>>,
    mut poll: Poll,
    stop: &AtomicBool,
    failed: &AtomicBool,
) -> ProxyStats {
    let mut stats = ProxyStats::default();
    let mut rng = Rng::new(cfg.seed);
    let mut events = Events::with_capacity(256);
    let mut held: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut bodies: ahash::AHashMap<u64, Held> = ahash::AHashMap::new();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; 65_536];
    let span = cfg.delay.as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = held
            .peek()
            .map_or(Duration::from_millis(50), |Reverse((due, _))| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        if poll.poll(&mut events, Some(wait)).is_err() {
            continue; // EINTR
        }
        for event in &events {
            let to = event.token().0;
            let Some(socket) = sockets.get(to).and_then(Option::as_ref) else {
                continue;
            };
            while let Ok((n, src)) = socket.recv_from(&mut buf) {
                let via = cfg.members.iter().position(|m| m.bind == src);
                let Some(via) = via.filter(|&v| sockets[v].is_some()) else {
                    stats.unroutable += 1;
                    continue;
                };
                if rng.chance(cfg.drop) {
                    stats.dropped += 1;
                    continue;
                }
                if n > MAX_DATAGRAM {
                    stats.truncated += 1;
                }
                let (bytes, dst) = (&buf[..n.min(MAX_DATAGRAM)], cfg.members[to].bind);
                let now = Instant::now();
                let age = crate::io::age_of_last_datagram(socket.as_raw_fd()).unwrap_or_default();
                let arrived = now.checked_sub(age.min(MAX_AGE)).unwrap_or(now);
                let due = arrived + Duration::from_nanos(rng.below(span.max(1)));
                if due <= now {
                    // Waited its delay in the socket already.
                    send(&sockets, via, bytes, dst, &mut stats);
                    continue;
                }
                if bodies.len() >= cfg.max_in_flight {
                    // The public proxy exits: nothing held or coming is forwarded any more.
                    stats.failed = true;
                    failed.store(true, Ordering::SeqCst);
                    return stats;
                }
                next_id += 1;
                held.push(Reverse((due, next_id)));
                bodies.insert(
                    next_id,
                    Held {
                        bytes: bytes.to_vec(),
                        via,
                        dst,
                    },
                );
                stats.most_in_flight = stats.most_in_flight.max(bodies.len());
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((due, id))) = held.peek() {
            if due > now {
                break;
            }
            held.pop();
            if let Some(h) = bodies.remove(&id) {
                send(&sockets, h.via, &h.bytes, h.dst, &mut stats);
            }
        }
    }
    stats
}

/// Forwards `bytes` to `dst` from the forwarding address of server `via`.
fn send(
    sockets: &[Option<UdpSocket>],
    via: usize,
    bytes: &[u8],
    dst: SocketAddr,
    stats: &mut ProxyStats,
) {
    if let Some(socket) = &sockets[via] {
        let _ = socket.send_to(bytes, dst);
        stats.forwarded += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdSocket;

    fn free() -> SocketAddr {
        StdSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Two servers' sockets, their cluster members, and a proxy on their forwarding addresses.
    fn two_servers(
        delay: Duration,
        max_in_flight: usize,
    ) -> (StdSocket, StdSocket, Vec<Member>, Proxy) {
        let a = StdSocket::bind("127.0.0.1:0").unwrap();
        let b = StdSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let members: Vec<Member> = [&a, &b]
            .iter()
            .map(|s| Member {
                forward: free(),
                bind: s.local_addr().unwrap(),
            })
            .collect();
        let proxy = Proxy::start(ProxyConfig {
            members: members.clone(),
            delay,
            drop: 0.0,
            seed: 1,
            max_in_flight,
        })
        .unwrap();
        (a, b, members, proxy)
    }

    #[test]
    fn forwards_from_the_senders_forwarding_address_and_cuts_long_datagrams() {
        let (a, b, members, proxy) = two_servers(Duration::from_millis(5), PUBLIC_MAX_IN_FLIGHT);
        // The stranger first: the proxy reads one socket in order, so it has counted the
        // stranger by the time anything of a's arrives at b.
        let stranger = StdSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(b"who?", members[1].forward).unwrap();
        a.send_to(b"hello", members[1].forward).unwrap();
        a.send_to(&[b'x'; 1200], members[1].forward).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2000];
        for _ in 0..2 {
            let (n, src) = b.recv_from(&mut buf).unwrap();
            assert_eq!(src, members[0].forward);
            got.push(n);
        }
        got.sort_unstable();
        assert_eq!(got, [5, MAX_DATAGRAM]);
        let stats = proxy.stop();
        assert_eq!(stats.forwarded, 2);
        assert_eq!(stats.truncated, 1);
        assert_eq!(stats.unroutable, 1);
        assert!(!stats.failed);
    }

    #[test]
    fn holding_more_than_its_limit_fails_as_the_public_proxy_exits() {
        let (a, _b, members, proxy) = two_servers(Duration::from_secs(10), 10);
        for _ in 0..11 {
            a.send_to(b"held", members[1].forward).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !proxy.failed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = proxy.stop();
        assert!(stats.failed, "{stats:?}");
        assert_eq!((stats.most_in_flight, stats.forwarded), (10, 0));
    }
}
