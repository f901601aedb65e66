//! The two kinds of loadgen thread. One sender walks the open-loop schedule and sends each
//! message from the next client's own socket (round robin, so client `k % n` sends message
//! `k` with sequence number `k / n`). Receivers each own a share of the client sockets, wait
//! on them with epoll, and account for every delivery: tracker, tally, latency.

use crate::clients::Sockets;
use crate::latency::Latency;
use crate::pacer::Pacer;
use crate::plan::Plan;
use crate::stamp::Stamp;
use crate::tracker::{Arrival, Tally, Tracker};
use crate::traffic::{Churn, Traffic};
use crate::web::Browsers;
use chat_router::proto::duckchat::{self, Inbound, Outbound, SayLayout};
use crossbeam_channel::Sender;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Messages sent before the sender looks at the clock again when it is behind.
const BURST: usize = 256;
/// Every client says something at least this often, so that the router never times it out.
const KEEP_ALIVE_EVERY: u64 = 30_000_000_000;
const PROGRESS_EVERY: u64 = 1_000_000_000;
/// Flat out, the sender keeps about this many messages in flight. Unlimited, it would only
/// measure how fast the kernel drops datagrams at a full socket: the router would shed most
/// of the load at its input and the figure would say more about the overload than the router.
pub const MAX_IN_FLIGHT: f64 = 256.0;
/// A window that has not moved for this long has lost deliveries; they are written off so
/// that the sender goes on. Long enough that a router descheduled on a busy machine is not
/// taken for loss (writing off what is merely late overfills the router's socket).
const STALL_NS: u64 = 100_000_000;

/// What all threads of one phase share.
pub struct Shared<'a> {
    pub epoch: Instant,
    /// Non-blocking: one per client, then one per neighbor server.
    pub sockets: Sockets<'a>,
    /// Neighbor servers played by loadgen (their sockets follow the clients').
    pub neighbors: usize,
    pub plan: &'a Plan,
    pub target: SocketAddr,
    /// The phase's clock, in nanoseconds since `epoch`: sends start at `start_ns`, latency
    /// counts for messages intended in `[measure_from_ns, end_ns)`, sends stop at `end_ns`.
    pub start_ns: u64,
    pub measure_from_ns: u64,
    pub end_ns: u64,
    /// `None`: as fast as possible, with at most [`MAX_IN_FLIGHT`] messages' worth of
    /// deliveries outstanding.
    pub rate: Option<f64>,
    /// Churn clients, whose sockets follow the neighbors'.
    pub churn: Option<Churn>,
    /// The clients that are browsers (WebSocket) rather than UDP clients.
    pub browsers: &'a Browsers,
    pub stop: AtomicBool,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
}

impl Shared<'_> {
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn measured(&self, intended_ns: u64) -> bool {
        (self.measure_from_ns..self.end_ns).contains(&intended_ns)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SendReport {
    pub sent: u64,
    /// Messages whose intended time fell in the measured window.
    pub measured: u64,
    pub expected: u64,
    pub send_errors: u64,
    /// S2S_SAYs sent a second time with the same id.
    pub repeated_ids: u64,
    pub churn_ops: u64,
}

pub fn send_loop(shared: &Shared<'_>) -> SendReport {
    crate::io::set_timer_slack(1_000);
    let plan = shared.plan;
    let n = plan.clients() as u64;
    let churners = shared.churn.map_or(0, |c| c.pool);
    let mut traffic = Traffic::new(plan, shared.neighbors, churners, shared.start_ns);
    let mut pacer = Pacer::new(shared.start_ns, shared.rate);
    let mut report = SendReport::default();
    let mut keep_alive = KeepAlive::new(shared.start_ns, n as usize);
    let mut churn = shared
        .churn
        .map(|c| Pacer::new(shared.start_ns, Some(c.rate)));
    let churn_socket = plan.clients() + shared.neighbors;
    let mut window = shared.rate.is_none().then(|| Window::new(plan));
    let mut buf = [0u8; 256];
    // Paced, every message of the schedule before `end_ns` goes out, however late the sender
    // wakes; flat out, sending stops at `end_ns`.
    let finished = |pacer: &Pacer, now: u64| match shared.rate {
        Some(_) => pacer.next_due() >= shared.end_ns,
        None => now >= shared.end_ns,
    };
    // Churn has a schedule of its own: every operation before `end_ns` goes out too.
    let churn_finished =
        |churn: &Option<Pacer>| churn.as_ref().is_none_or(|c| c.next_due() >= shared.end_ns);
    loop {
        let now = shared.now_ns();
        if finished(&pacer, now) && churn_finished(&churn) {
            break;
        }
        for _ in 0..BURST {
            if finished(&pacer, now) {
                break;
            }
            if let Some(w) = &mut window {
                if w.full(now, report.expected, shared) {
                    break;
                }
            }
            let Some(due) = pacer.due(now) else { break };
            // Flat out, the schedule is meaningless; the stamp then carries the real send time.
            let intended = if shared.rate.is_some() { due } else { now };
            let k = pacer.issued() - 1;
            let Some(m) = traffic.message(k, intended, &mut buf) else {
                report.send_errors += 1; // could not be encoded
                continue;
            };
            if shared.browsers.is_browser(m.socket) {
                let channel = traffic.channel_name(m.channel);
                if shared.browsers.say(m.socket, channel, &m.stamp) {
                    report.sent += 1;
                    report.expected += m.expected;
                    report.measured += u64::from(shared.measured(intended));
                } else {
                    report.send_errors += 1;
                }
                continue;
            }
            let sock = shared.sockets.get(m.socket);
            match sock.send_to(&buf[..m.len], shared.target) {
                Ok(_) => {
                    report.sent += 1;
                    report.expected += m.expected;
                    report.measured += u64::from(shared.measured(intended));
                    if m.repeat && sock.send_to(&buf[..m.len], shared.target).is_ok() {
                        report.repeated_ids += 1;
                        // The router answers with S2S_LEAVE and drops this neighbor from the
                        // channel's tree; a DuckChat server's refresh would join again, and
                        // this one does at once, so that it keeps receiving.
                        let mut join = [0u8; duckchat::CHANNEL_REQ_LEN];
                        let request = Inbound::S2sJoin {
                            channel: traffic.channel_name(m.channel).as_bytes(),
                        };
                        if let Ok(len) = request.encode(&mut join, SayLayout::UserFirst) {
                            let _ = sock.send_to(&join[..len], shared.target);
                        }
                    }
                }
                Err(_) => report.send_errors += 1,
            }
        }
        keep_alive.step(now, shared);
        if let Some(churn_pacer) = &mut churn {
            for _ in 0..BURST {
                // Only operations scheduled before the end: a sender that wakes late must not
                // add one the schedule does not hold.
                if churn_pacer.next_due() >= shared.end_ns || churn_pacer.due(now).is_none() {
                    break;
                }
                let k = churn_pacer.issued() - 1;
                if let Some((i, len)) = traffic.churn_operation(k, &mut buf) {
                    let _ = shared
                        .sockets
                        .get(churn_socket + i)
                        .send_to(&buf[..len], shared.target);
                    report.churn_ops += 1;
                }
            }
        }
        shared.sent.store(report.sent, Ordering::Relaxed);
        let next = match &churn {
            Some(churn_pacer) => pacer.next_due().min(churn_pacer.next_due()),
            None => pacer.next_due(),
        };
        if next > now {
            std::thread::sleep(Duration::from_nanos(next - now));
        } else if window.is_some() {
            // Windowed: give the receivers the core while the window is full.
            std::thread::yield_now();
        }
    }
    report
}

/// The flat-out sender's limit on deliveries outstanding.
struct Window {
    limit: u64,
    written_off: u64,
    last_delivered: u64,
    moved_at: u64,
}

impl Window {
    fn new(plan: &Plan) -> Self {
        Self {
            limit: (MAX_IN_FLIGHT * plan.mean_fanout()).ceil() as u64,
            written_off: 0,
            last_delivered: 0,
            moved_at: 0,
        }
    }

    /// Whether another message would overfill the window.
    fn full(&mut self, now: u64, expected: u64, shared: &Shared<'_>) -> bool {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != self.last_delivered {
            (self.last_delivered, self.moved_at) = (delivered, now);
        }
        let outstanding = expected.saturating_sub(delivered + self.written_off);
        if outstanding < self.limit {
            return false;
        }
        if now.saturating_sub(self.moved_at) > STALL_NS {
            self.written_off += outstanding;
            self.moved_at = now;
            return false;
        }
        true
    }
}

/// Sweeps through all clients every [`KEEP_ALIVE_EVERY`], a few per sender iteration.
struct KeepAlive {
    next_sweep_ns: u64,
    cursor: usize,
    clients: usize,
}

impl KeepAlive {
    fn new(start_ns: u64, clients: usize) -> Self {
        Self {
            next_sweep_ns: start_ns + KEEP_ALIVE_EVERY,
            cursor: clients,
            clients,
        }
    }

    fn step(&mut self, now: u64, shared: &Shared<'_>) {
        if now >= self.next_sweep_ns {
            self.next_sweep_ns += KEEP_ALIVE_EVERY;
            self.cursor = 0;
        }
        let mut buf = [0u8; 8];
        let Ok(len) = Inbound::KeepAlive.encode(&mut buf, SayLayout::UserFirst) else {
            return;
        };
        let end = (self.cursor + 64).min(self.clients);
        // A browser's session lasts as long as its connection.
        for client in (self.cursor..end).filter(|&c| !shared.browsers.is_browser(c)) {
            let _ = shared
                .sockets
                .get(client)
                .send_to(&buf[..len], shared.target);
        }
        self.cursor = end;
    }
}

#[derive(Debug, Default)]
pub struct ReceiveReport {
    pub tally: Tally,
    pub latency: Latency,
}

/// Receives on the sockets of `clients` until `shared.stop`; sends the latency of each second
/// to `progress`.
pub fn receive_loop(
    shared: &Shared<'_>,
    clients: &[u32],
    progress: &Sender<Latency>,
) -> std::io::Result<ReceiveReport> {
    let mut poll = Poll::new()?;
    for &c in clients {
        let fd = match shared.browsers.is_browser(c as usize) {
            true => shared.browsers.fd(c as usize),
            false => shared.sockets.get(c as usize).as_raw_fd(),
        };
        poll.registry()
            .register(&mut SourceFd(&fd), Token(c as usize), Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut tracker = Tracker::new();
    let mut report = ReceiveReport::default();
    let mut interval = Latency::new();
    let mut next_progress = shared.now_ns() + PROGRESS_EVERY;
    let mut buf = [0u8; 2048];
    // Sockets: clients, then neighbor servers, then churn clients.
    let first_neighbor = shared.plan.clients();
    let first_churn = first_neighbor + shared.neighbors;
    while !shared.stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(5)))?;
        let before = report.tally.unique;
        for event in &events {
            let receiver = event.token().0 as u32;
            if shared.browsers.is_browser(receiver as usize) {
                let now = shared.now_ns();
                let (tracker, report, interval) = (&mut tracker, &mut report, &mut interval);
                let alive =
                    shared
                        .browsers
                        .read(receiver as usize, |text| match Stamp::parse(text) {
                            Some(stamp) => {
                                account(shared, receiver, stamp, now, tracker, report, interval)
                            }
                            None => report.tally.foreign += 1,
                        });
                if !alive {
                    report.tally.browsers_lost += 1;
                    let fd = shared.browsers.fd(receiver as usize);
                    let _ = poll.registry().deregister(&mut SourceFd(&fd));
                }
                continue;
            }
            let sock = shared.sockets.get(receiver as usize);
            loop {
                let n = match sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break, // ICMP errors surface here; nothing to account
                };
                let now = shared.now_ns();
                if receiver as usize >= first_churn {
                    // Churn clients: chat they get while members is not the chat's to count.
                    match duckchat::decode_outbound(&buf[..n]) {
                        Ok(Outbound::Error { .. }) => report.tally.churn_errors += 1,
                        _ => report.tally.churn_received += 1,
                    }
                    continue;
                }
                let from_router = if receiver as usize >= first_neighbor {
                    forwarded(&buf[..n])
                } else {
                    delivery(&buf[..n])
                };
                let stamp = match from_router {
                    Received::Stamp(stamp) => stamp,
                    Received::Leave => {
                        report.tally.s2s_leaves += 1;
                        continue;
                    }
                    Received::Other => {
                        report.tally.foreign += 1;
                        continue;
                    }
                };
                account(
                    shared,
                    receiver,
                    stamp,
                    now,
                    &mut tracker,
                    &mut report,
                    &mut interval,
                );
            }
        }
        shared
            .delivered
            .fetch_add(report.tally.unique - before, Ordering::Relaxed);
        let now = shared.now_ns();
        if now >= next_progress {
            next_progress = now + PROGRESS_EVERY;
            let _ = progress.try_send(interval.clone());
            interval.reset();
        }
    }
    Ok(report)
}

/// One delivery of `stamp` to `receiver` at `now`: tracked, tallied and, when its intended
/// time is in the measured window and it is not a duplicate, its latency recorded.
fn account(
    shared: &Shared<'_>,
    receiver: u32,
    stamp: Stamp,
    now: u64,
    tracker: &mut Tracker,
    report: &mut ReceiveReport,
    interval: &mut Latency,
) {
    let arrival = tracker.arrive(receiver, stamp.sender, stamp.seq);
    report.tally.count(arrival);
    if arrival != Arrival::Duplicate && shared.measured(stamp.intended_ns) {
        let ns = now.saturating_sub(stamp.intended_ns);
        report.latency.record(ns);
        interval.record(ns);
    }
}

enum Received {
    Stamp(Stamp),
    Leave,
    Other,
}

/// What a client socket got: a TXT_SAY of ours, or something else.
fn delivery(datagram: &[u8]) -> Received {
    match duckchat::decode_outbound(datagram) {
        Ok(Outbound::Say { text, .. }) => {
            Stamp::parse(text).map_or(Received::Other, Received::Stamp)
        }
        _ => Received::Other,
    }
}

/// What a neighbor socket got: a forwarded S2S_SAY of ours, an S2S_LEAVE, or something else
/// (the router's own S2S_JOINs).
fn forwarded(datagram: &[u8]) -> Received {
    match duckchat::decode_inbound(datagram, SayLayout::UserFirst) {
        Ok(Inbound::S2sSay(say)) => Stamp::parse(say.text).map_or(Received::Other, Received::Stamp),
        Ok(Inbound::S2sLeave { .. }) => Received::Leave,
        _ => Received::Other,
    }
}
