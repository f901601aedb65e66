//! The `ordering` scenario: many text clients spread over the servers of a cluster and over its
//! rooms (every room has members on every server), each joining one room, then, once the cluster
//! carries a message from every server to every room's members, sending numbered messages on an
//! open-loop schedule. What every client receives goes to the ordering checker
//! (`chat_router::check`): lost, duplicated, corrupted messages, FIFO and total-order
//! violations; the latency of every delivery is measured from the message's intended send time.
//!
//! One thread does it all over one epoll: a cluster of chat servers is slow next to loadgen.

use crate::latency::{human, Latency};
use crate::LoadError;
use chat_router::check::{self, Checker, Report};
use chat_router::rng::Rng;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct OrderingArgs {
    /// The servers' bind addresses, where their clients talk to them.
    pub servers: Vec<SocketAddr>,
    pub clients: usize,
    pub rooms: u32,
    /// Messages each client sends.
    pub messages: u64,
    /// Between two messages of one client (clients are spread evenly over it).
    pub interval: Duration,
    /// Bytes per message.
    pub len: usize,
    /// The longest wait for stragglers once everything is sent.
    pub drain: Duration,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct OrderingResult {
    pub report: Report,
    /// From intended send time to arrival, every delivery.
    pub latency: Latency,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// Datagrams the kernel dropped at the clients' own sockets (full receive queues): a loss
    /// these explain is the test machine's, not the routers'.
    pub client_socket_drops: u64,
}

impl OrderingResult {
    pub fn deliveries_per_sec(&self) -> f64 {
        self.report.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn table(&self, total: bool) -> String {
        let r = &self.report;
        let p = self.latency.percentiles();
        format!(
            "messages sent      {}\n\
             refused            {} (answered -ERR: sent to no one, the sender told)\n\
             deliveries         {} of {} ({:.0}/s)\n\
             lost               {}\n\
             duplicates         {}\n\
             corrupt            {}\n\
             foreign            {}\n\
             fifo violations    {}\n\
             total violations   {}{}\n\
             latency            p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n\
             client drops       {} (kernel, at the clients' sockets)\n\
             verdict            {}\n",
            r.sent,
            r.refused,
            r.delivered,
            r.expected,
            self.deliveries_per_sec(),
            r.lost,
            r.duplicates,
            r.corrupt,
            r.foreign,
            r.fifo_violations,
            r.total_violations,
            if total { "" } else { " (not required)" },
            human(p.p50_us),
            human(p.p90_us),
            human(p.p99_us),
            human(p.p999_us),
            human(p.max_us),
            self.client_socket_drops,
            if r.clean(total) {
                "clean"
            } else {
                "VIOLATIONS"
            },
        )
    }
}

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    /// The index of `server`.
    home: usize,
    room: u32,
    joined: bool,
}

pub fn run(args: &OrderingArgs) -> Result<OrderingResult, LoadError> {
    if args.servers.is_empty() || args.clients == 0 || args.rooms == 0 {
        return Err(LoadError::Setup(
            "the ordering scenario needs servers, clients and rooms".into(),
        ));
    }
    crate::clients::reserve_descriptors(args.clients)?;
    let poll = Poll::new().map_err(LoadError::Socket)?;
    let n = args.servers.len();
    let mut clients = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let mut socket =
            UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(LoadError::Socket)?;
        // Deliveries come in bursts (a room's messages, retransmissions after a loss) and this
        // process may not be scheduled when they do: the default buffer holds ~90 of them.
        let _ = chat_router::io::sys::set_receive_buffer(socket.as_raw_fd(), 4 << 20);
        poll.registry()
            .register(&mut socket, Token(c), Interest::READABLE)
            .map_err(LoadError::Socket)?;
        clients.push(Client {
            socket,
            server: args.servers[c % n],
            home: c % n,
            room: (c / n) as u32 % args.rooms + 1,
            joined: false,
        });
    }
    let mut net = Net {
        poll,
        events: Events::with_capacity(1024),
        buf: vec![0u8; 65_536],
    };
    join(&mut clients, &mut net, args.seed)?;
    settle(&clients, n, &mut net)?;

    let mut checker = Checker::default();
    for (c, client) in clients.iter().enumerate() {
        checker.member(c as u32, client.room);
    }
    // Open loop: client c sends message k at start + (k - 1) * interval + c's offset.
    let schedule = Schedule {
        start: Instant::now() + Duration::from_millis(10),
        interval: args.interval,
        clients: args.clients,
    };
    let mut tally = Tally {
        checker,
        latency: Latency::new(),
        received: 0,
        last_arrival: schedule.start,
    };
    let mut next_seq = vec![1u64; args.clients];
    let mut sent = 0u64;
    let total = args.messages * args.clients as u64;
    while sent < total {
        let now = Instant::now();
        let mut next_due = now + Duration::from_millis(50);
        for (c, client) in clients.iter().enumerate() {
            while next_seq[c] <= args.messages {
                let due = schedule.intended(c, next_seq[c]);
                if due > now {
                    next_due = next_due.min(due);
                    break;
                }
                let text = check::message(next_seq[c], c as u32, client.room, args.len);
                // A full socket buffer is the only failure on loopback; the checker counts the loss.
                let _ = client.socket.send_to(text.as_bytes(), client.server);
                tally.checker.sent(c as u32, next_seq[c], text.len());
                next_seq[c] += 1;
                sent += 1;
            }
        }
        let wait = next_due.saturating_duration_since(Instant::now());
        tally.receive(&mut net, &clients, wait, &schedule)?;
    }
    let expected: u64 = clients
        .iter()
        .map(|c| clients.iter().filter(|o| o.room == c.room).count() as u64 * args.messages)
        .sum();
    let deadline = Instant::now() + args.drain;
    while tally.received < expected && Instant::now() < deadline {
        tally.receive(&mut net, &clients, Duration::from_millis(50), &schedule)?;
    }
    // Anything beyond the expected (duplicates, strays) arrives within a short quiet time.
    let quiet = Instant::now() + Duration::from_millis(200);
    while Instant::now() < quiet {
        tally.receive(&mut net, &clients, Duration::from_millis(20), &schedule)?;
    }
    for client in &clients {
        let _ = client.socket.send_to(b"/quit", client.server);
    }
    let client_socket_drops = clients
        .iter()
        .filter_map(|c| chat_router::io::sys::socket_drops(c.socket.as_raw_fd()).ok())
        .map(u64::from)
        .sum();
    Ok(OrderingResult {
        report: tally.checker.report(),
        latency: tally.latency,
        elapsed: tally.last_arrival.saturating_duration_since(schedule.start),
        client_socket_drops,
    })
}

struct Schedule {
    start: Instant,
    interval: Duration,
    clients: usize,
}

impl Schedule {
    fn intended(&self, client: usize, seq: u64) -> Instant {
        let offset = self.interval.mul_f64(client as f64 / self.clients as f64);
        self.start + self.interval.mul_f64(seq.saturating_sub(1) as f64) + offset
    }
}

struct Tally {
    checker: Checker,
    latency: Latency,
    received: u64,
    last_arrival: Instant,
}

impl Tally {
    fn receive(
        &mut self,
        net: &mut Net,
        clients: &[Client],
        wait: Duration,
        schedule: &Schedule,
    ) -> Result<(), LoadError> {
        net.receive(clients, wait, |c, bytes, at| {
            if is_probe(bytes) {
                return; // a late copy from before the measurement
            }
            self.checker.received(c as u32, bytes);
            if let Some(d) = check::parse_delivery(bytes) {
                if (d.sender as usize) < schedule.clients {
                    let sent_at = schedule.intended(d.sender as usize, d.seq);
                    self.latency
                        .record(at.saturating_duration_since(sent_at).as_nanos() as u64);
                }
            }
            self.received += 1;
            self.last_arrival = at;
        })
    }
}

struct Net {
    poll: Poll,
    events: Events,
    buf: Vec<u8>,
}

impl Net {
    /// Waits up to `wait` for datagrams and hands each to `f` with its client and arrival time.
    fn receive(
        &mut self,
        clients: &[Client],
        wait: Duration,
        mut f: impl FnMut(usize, &[u8], Instant),
    ) -> Result<(), LoadError> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(LoadError::Socket(e)),
        }
        for event in &self.events {
            let c = event.token().0;
            while let Ok((n, _)) = clients[c].socket.recv_from(&mut self.buf) {
                f(c, &self.buf[..n], Instant::now());
            }
        }
        Ok(())
    }
}

/// Every client joins its room and waits for the reply; a request whose reply does not come is
/// sent again (a second reply then says the client is already in the room, which is as good).
fn join(clients: &mut [Client], net: &mut Net, seed: u64) -> Result<(), LoadError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rng = Rng::new(seed);
    while clients.iter().any(|c| !c.joined) {
        if Instant::now() > deadline {
            let missing = clients.iter().filter(|c| !c.joined).count();
            return Err(LoadError::Setup(format!(
                "{missing} clients got no reply to /join within 10 s: is the cluster running?"
            )));
        }
        for c in clients.iter().filter(|c| !c.joined) {
            let _ = c
                .socket
                .send_to(format!("/join {}", c.room).as_bytes(), c.server);
        }
        let until = Instant::now() + Duration::from_millis(500 + rng.below(100));
        while Instant::now() < until && clients.iter().any(|c| !c.joined) {
            let mut replies = Vec::new();
            net.receive(clients, Duration::from_millis(20), |c, bytes, _| {
                if bytes.starts_with(b"+OK") || bytes.starts_with(b"-ERR You are already") {
                    replies.push(c);
                }
            })?;
            for c in replies {
                clients[c].joined = true;
            }
        }
    }
    Ok(())
}

/// What `settle` sends: `~ready S<server>`, delivered as `<nick> ~ready S<server>`.
const PROBE: &str = "~ready S";

fn is_probe(delivery: &[u8]) -> bool {
    probe_server(delivery).is_some()
}

fn probe_server(delivery: &[u8]) -> Option<usize> {
    check::delivered_text(delivery)?
        .strip_prefix(PROBE)?
        .parse()
        .ok()
}

/// Waits until the cluster carries a message from every server to every member of every room:
/// one client of each room on each server says `~ready`, again every 250 ms, until every
/// client has heard from every server of its room. Servers started just before the run (or
/// before a proxy between them) may not have found one another yet, or have given up on a
/// peer that was not there and not yet admitted it again; a message sent then reaches some
/// members only, which would be the start's loss counted as the cluster's.
fn settle(clients: &[Client], servers: usize, net: &mut Net) -> Result<(), LoadError> {
    const LIMIT: Duration = Duration::from_secs(30);
    // By room: the first client on each server, and which servers have one.
    let mut speakers: ahash::AHashMap<u32, Vec<Option<usize>>> = ahash::AHashMap::new();
    for (c, client) in clients.iter().enumerate() {
        let slot = &mut speakers
            .entry(client.room)
            .or_insert_with(|| vec![None; servers])[client.home];
        slot.get_or_insert(c);
    }
    let mut heard = vec![vec![false; servers]; clients.len()];
    let deaf = |heard: &[Vec<bool>], c: usize| {
        let room = &speakers[&clients[c].room];
        (0..servers).any(|s| room[s].is_some() && !heard[c][s])
    };
    let deadline = Instant::now() + LIMIT;
    while (0..clients.len()).any(|c| deaf(&heard, c)) {
        if Instant::now() > deadline {
            let waiting = (0..clients.len()).filter(|&c| deaf(&heard, c)).count();
            return Err(LoadError::Setup(format!(
                "{waiting} clients did not hear from every server of their room within {LIMIT:?}: \
                 are the servers of the cluster reaching one another?"
            )));
        }
        for room in speakers.values() {
            for (s, speaker) in room.iter().enumerate() {
                if let Some(c) = *speaker {
                    let line = format!("{PROBE}{s}");
                    let _ = clients[c]
                        .socket
                        .send_to(line.as_bytes(), clients[c].server);
                }
            }
        }
        let until = Instant::now() + Duration::from_millis(250);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            net.receive(clients, left, |c, bytes, _| {
                if let Some(s) = probe_server(bytes).filter(|&s| s < servers) {
                    heard[c][s] = true;
                }
            })?;
        }
    }
    Ok(())
}

/// An ordering run as a results file (its own format: `compare` and `plot` read the load runs).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OrderingRecord {
    pub format: u32,
    pub scenario: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    /// The ordering the routers were asked for (`total` also requires no total-order violation).
    pub order: String,
    pub servers: usize,
    pub clients: usize,
    pub rooms: u32,
    pub messages_per_client: u64,
    pub interval_ms: f64,
    pub message_bytes: usize,
    pub source: crate::report::Source,
    pub machine_cores: usize,
    pub kernel: String,
    pub sent: u64,
    /// Messages the cluster refused with `-ERR` (reached no one; not expected).
    #[serde(default)]
    pub refused: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub fifo_violations: u64,
    pub total_violations: u64,
    pub clean: bool,
    pub deliveries_per_s: f64,
    pub latency: crate::latency::Percentiles,
    /// `[value_ns, count]` per non-empty bucket.
    pub histogram: Vec<(u64, u64)>,
    /// The proxy between the servers, when the run had its own (`--proxy-delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyUse>,
    /// What the servers under test were (`--label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What went through the proxy between the servers during an ordering run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProxyUse {
    pub delay_ms: f64,
    pub drop: f64,
    /// Datagrams between servers forwarded, and per message sent.
    pub forwarded: u64,
    pub per_message: f64,
    pub most_in_flight: usize,
    /// Held more than the public proxy's limit, where that one exits.
    pub failed: bool,
}

impl ProxyUse {
    pub fn new(delay: Duration, drop: f64, stats: &crate::proxy::ProxyStats, sent: u64) -> Self {
        Self {
            delay_ms: delay.as_secs_f64() * 1e3,
            drop,
            forwarded: stats.forwarded,
            per_message: stats.forwarded as f64 / sent.max(1) as f64,
            most_in_flight: stats.most_in_flight,
            failed: stats.failed,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "between servers    {} datagrams ({:.1} per message), at most {} held at once{}\n",
            self.forwarded,
            self.per_message,
            self.most_in_flight,
            if self.failed {
                " (over the public proxy's limit: it would have exited)"
            } else {
                ""
            }
        )
    }
}

impl OrderingRecord {
    pub fn new(args: &OrderingArgs, order: &str, result: &OrderingResult) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let r = &result.report;
        Self {
            format: 1,
            scenario: "ordering".into(),
            started: crate::report::utc(started),
            order: order.into(),
            servers: args.servers.len(),
            clients: args.clients,
            rooms: args.rooms,
            messages_per_client: args.messages,
            interval_ms: args.interval.as_secs_f64() * 1e3,
            message_bytes: args.len,
            source: crate::report::Source::here(),
            machine_cores: crate::machine::cores(),
            kernel: crate::machine::kernel(),
            sent: r.sent,
            expected: r.expected,
            delivered: r.delivered,
            lost: r.lost,
            duplicates: r.duplicates,
            corrupt: r.corrupt,
            foreign: r.foreign,
            refused: r.refused,
            label: None,
            fifo_violations: r.fifo_violations,
            total_violations: r.total_violations,
            clean: r.clean(order == "total"),
            deliveries_per_s: result.deliveries_per_sec(),
            latency: result.latency.percentiles(),
            histogram: result.latency.buckets(),
            proxy: None,
        }
    }

    /// Writes `DIR/<time>-ordering-<order>-<servers>s-<clients>c.json` and its `.hgrm`.
    pub fn write(
        &self,
        dir: &std::path::Path,
        result: &OrderingResult,
    ) -> Result<std::path::PathBuf, LoadError> {
        let io = |e| LoadError::Results(dir.display().to_string(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let time: String = self
            .started
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let stem = format!(
            "{time}-ordering-{}-{}s-{}c",
            self.order, self.servers, self.clients
        );
        let json = dir.join(format!("{stem}.json"));
        let text = serde_json::to_string_pretty(self).map_err(|e| io(e.into()))?;
        std::fs::write(&json, text + "\n").map_err(io)?;
        std::fs::write(
            dir.join(format!("{stem}.hgrm")),
            result.latency.percentile_text(),
        )
        .map_err(io)?;
        Ok(json)
    }
}
