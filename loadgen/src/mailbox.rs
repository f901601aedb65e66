//! `loadgen mailbox`: direct messages through the router's mailbox (`router --mailbox`), the
//! original protocol spoken by hand. Senders send on an open-loop schedule, each SEND on its own
//! connection as the original client does; half the recipients are connected (their pushes are
//! received and checked), the others are offline, and their stored messages are delivered when
//! they connect after the run. Reported: acknowledged SENDs per second and the latency from a
//! SEND's intended time to its answer, the latency to the push for online recipients, loss and
//! duplicates, and how fast the stored backlog is delivered.

use crate::latency::{human, Latency, Percentiles};
use crate::LoadError;
use serde::Serialize;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct MailboxArgs {
    pub target: SocketAddr,
    pub senders: usize,
    pub recipients: usize,
    /// SENDs per second in all; `None`: each sender as fast as its answers come.
    pub rate: Option<f64>,
    pub duration: Duration,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MailboxRecord {
    pub format: u32,
    /// `mailbox`.
    pub scenario: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    pub source: crate::report::Source,
    pub senders: usize,
    pub recipients: usize,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub acknowledged: u64,
    pub refused: u64,
    pub failed: u64,
    pub acknowledged_per_s: f64,
    /// From a SEND's intended time to its answer.
    pub ack_latency: Percentiles,
    /// From a SEND's intended time to the push to an online recipient.
    pub push_latency: Percentiles,
    pub pushed_online: u64,
    pub expected_online: u64,
    pub duplicates: u64,
    /// Messages that reached a recipient after a later one from the same sender.
    pub out_of_order: u64,
    /// Messages stored for offline recipients, and how fast they came once those connected.
    pub backlog: u64,
    pub backlog_delivered: u64,
    pub backlog_per_s: f64,
}

impl MailboxRecord {
    pub fn table(&self) -> String {
        let p = |l: &Percentiles| format!("p50 {}, p99 {}", human(l.p50_us), human(l.p99_us));
        format!(
            "mailbox: {} senders, {} recipients (half online), {}\n\
             acknowledged SENDs     {} ({:.0}/s), refused {}, failed {}\n\
             answer latency         {}\n\
             push latency (online)  {} ({} of {} pushed)\n\
             duplicates             {}, out of order {}\n\
             stored backlog         {} of {} delivered on connect, {:.0}/s\n",
            self.senders,
            self.recipients,
            self.rate
                .map_or("as fast as answers come".into(), |r| format!(
                    "{r:.0} SENDs/s"
                )),
            self.acknowledged,
            self.acknowledged_per_s,
            self.refused,
            self.failed,
            p(&self.ack_latency),
            p(&self.push_latency),
            self.pushed_online,
            self.expected_online,
            self.duplicates,
            self.out_of_order,
            self.backlog_delivered,
            self.backlog,
            self.backlog_per_s,
        )
    }
}

/// One request on its own connection; the answer, or `None` when the connection failed.
fn ask(target: SocketAddr, fields: &[&str]) -> Option<Vec<u8>> {
    ask_from(None, target, fields)
}

/// Where sender `s` connects from: a loopback address in a /24 of its own when the router is on
/// loopback (all of 127.0.0.0/8 is this host's), as many users on many hosts would; the
/// router caps connections per address and stored messages per /24, and a benchmark must not
/// measure those caps.
fn source_of(s: usize, target: SocketAddr) -> Option<std::net::IpAddr> {
    if !target.ip().is_loopback() || !target.is_ipv4() {
        return None;
    }
    let [b, c] = ((s % 65_000 + 256) as u16).to_be_bytes();
    Some(std::net::Ipv4Addr::new(127, b, c, 1).into())
}

/// [`ask`] from `source` (the system's choice when `None`).
fn ask_from(
    source: Option<std::net::IpAddr>,
    target: SocketAddr,
    fields: &[&str],
) -> Option<Vec<u8>> {
    let mut c = match source {
        None => TcpStream::connect(target).ok()?,
        Some(ip) => {
            let domain = socket2::Domain::for_address(target);
            let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).ok()?;
            socket.bind(&SocketAddr::new(ip, 0).into()).ok()?;
            socket.connect(&target.into()).ok()?;
            socket.into()
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let _ = c.set_nodelay(true);
    let mut request = Vec::with_capacity(64);
    for f in fields {
        request.extend_from_slice(f.as_bytes());
        request.push(0);
    }
    c.write_all(&request).ok()?;
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).ok()?;
    Some(answer)
}

/// A connected recipient's listen port and what arrived on it: (sender, sequence, intended ns).
struct Inbox {
    listener: TcpListener,
    got: Vec<(u32, u64, u64, u64)>,
}

/// Accepts pushes on every listener until `stop` (woken by epoll, so that an idle inbox costs
/// the router's CPU nothing), recording each message's stamp and arrival.
fn receive(inboxes: &Mutex<Vec<Inbox>>, epoch: Instant, stop: &AtomicBool) {
    use mio::{unix::SourceFd, Events, Interest, Poll, Token};
    use std::os::fd::AsRawFd;
    let Ok(mut poll) = Poll::new() else {
        return;
    };
    {
        let boxes = inboxes.lock().unwrap_or_else(|e| e.into_inner());
        for (i, inbox) in boxes.iter().enumerate() {
            let fd = inbox.listener.as_raw_fd();
            let _ = poll
                .registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE);
        }
    }
    let mut events = Events::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(10)))
            .is_err()
        {
            continue;
        }
        let mut boxes = inboxes.lock().unwrap_or_else(|e| e.into_inner());
        for event in events.iter() {
            let Some(inbox) = boxes.get_mut(event.token().0) else {
                continue;
            };
            // Edge-triggered: take every connection waiting.
            while let Ok((mut c, _)) = inbox.listener.accept() {
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut bytes = Vec::new();
                let _ = c.read_to_end(&mut bytes);
                let now = epoch.elapsed().as_nanos() as u64;
                let fields: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
                if fields.first() == Some(&&b"SEND_MESSAGE"[..]) {
                    if let Some(stamp) = fields.get(3).and_then(|t| parse_stamp(t)) {
                        inbox.got.push((stamp.0, stamp.1, stamp.2, now));
                    }
                }
            }
        }
    }
}

/// What arrived: each message once, in the order its sender sent it to that recipient?
#[derive(Default)]
struct Tally {
    seen: HashSet<(u32, u64)>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Tally {
    /// One recipient's pushes, in the order they came; `first` sees each new message's
    /// intended time and arrival.
    fn inbox(&mut self, inbox: &Inbox, mut first: impl FnMut(u64, u64)) {
        let mut last_seq = std::collections::HashMap::new();
        for &(sender, seq, intended, at) in &inbox.got {
            if !self.seen.insert((sender, seq)) {
                self.duplicates += 1;
                continue;
            }
            self.unique += 1;
            first(intended, at);
            let last = last_seq.entry(sender).or_insert(seq);
            if seq < *last {
                self.out_of_order += 1;
            }
            *last = (*last).max(seq);
        }
    }
}

/// Pushes received so far on all of `inboxes`.
fn received(inboxes: &Mutex<Vec<Inbox>>) -> u64 {
    let boxes = inboxes.lock().unwrap_or_else(|e| e.into_inner());
    boxes.iter().map(|i| i.got.len() as u64).sum()
}

/// `sender seq intended_ns`, in hex.
fn stamp(sender: u32, seq: u64, intended: u64) -> String {
    format!("{sender:x} {seq:x} {intended:x}")
}

fn parse_stamp(text: &[u8]) -> Option<(u32, u64, u64)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut f = text.split(' ');
    let mut next = || f.next().and_then(|v| u64::from_str_radix(v, 16).ok());
    Some((u32::try_from(next()?).ok()?, next()?, next()?))
}

pub fn run(args: &MailboxArgs) -> Result<MailboxRecord, LoadError> {
    let setup = |what: String| LoadError::Setup(what);
    let started_utc = crate::report::utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    // Names unique to this run, so that runs against one router do not meet.
    let run_id = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(args.seed, |d| d.as_micros() as u64 ^ args.seed)
            & 0xffff_ffff
    );
    let sender_name = |i: usize| format!("s{i}.{run_id}");
    let recipient_name = |i: usize| format!("r{i}.{run_id}");
    for i in 0..args.senders {
        if ask(args.target, &["REGISTER", &sender_name(i)]) != Some(vec![0]) {
            return Err(setup(format!(
                "cannot register a sender at {}",
                args.target
            )));
        }
    }
    let mut inboxes = Vec::new();
    for i in 0..args.recipients {
        if ask(args.target, &["REGISTER", &recipient_name(i)]) != Some(vec![0]) {
            return Err(setup("cannot register a recipient".into()));
        }
        if i.is_multiple_of(2) {
            let listener = TcpListener::bind("127.0.0.1:0").map_err(LoadError::Socket)?;
            listener.set_nonblocking(true).map_err(LoadError::Socket)?;
            let port = listener.local_addr().map_err(LoadError::Socket)?.port();
            let answer = ask(
                args.target,
                &["CONNECT", &recipient_name(i), &port.to_string()],
            );
            if answer != Some(vec![0]) {
                return Err(setup("cannot connect a recipient".into()));
            }
            inboxes.push(Inbox {
                listener,
                got: Vec::new(),
            });
        }
    }
    let inboxes = Mutex::new(inboxes);
    let epoch = Instant::now();
    let stop_receiving = AtomicBool::new(false);
    let end_ns = args.duration.as_nanos() as u64;
    let (acked, refused, failed) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let expected_online = AtomicU64::new(0);
    let backlog = AtomicU64::new(0);
    let ack_latency = Mutex::new(Latency::new());
    std::thread::scope(|scope| {
        scope.spawn(|| receive(&inboxes, epoch, &stop_receiving));
        let senders: Vec<_> = (0..args.senders)
            .map(|s| {
                let (acked, refused, failed) = (&acked, &refused, &failed);
                let (expected_online, backlog, ack_latency) =
                    (&expected_online, &backlog, &ack_latency);
                scope.spawn(move || {
                    let mut latency = Latency::new();
                    let interval = args.rate.map(|r| 1e9 * args.senders as f64 / r);
                    let me = sender_name(s);
                    let source = source_of(s, args.target);
                    for seq in 0u64.. {
                        let intended = match interval {
                            Some(every) => {
                                (seq as f64 * every + s as f64 * every / args.senders as f64) as u64
                            }
                            None => epoch.elapsed().as_nanos() as u64,
                        };
                        if intended >= end_ns {
                            break;
                        }
                        let now = epoch.elapsed().as_nanos() as u64;
                        if intended > now {
                            std::thread::sleep(Duration::from_nanos(intended - now));
                        }
                        let r = (s + seq as usize) % args.recipients;
                        let text = stamp(s as u32, seq, intended);
                        let send = ["SEND", me.as_str(), &recipient_name(r), &text];
                        match ask_from(source, args.target, &send) {
                            Some(a) if a.first() == Some(&0) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                let done = epoch.elapsed().as_nanos() as u64;
                                latency.record(done.saturating_sub(intended));
                                if r.is_multiple_of(2) {
                                    expected_online.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    backlog.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Some(_) => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    ack_latency
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .merge(&latency);
                })
            })
            .collect();
        for s in senders {
            let _ = s.join();
        }
        // Stragglers: pushes still on their way to online recipients.
        let want = expected_online.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if received(&inboxes) >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_receiving.store(true, Ordering::Relaxed);
    });
    let inboxes = inboxes.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut push_latency = Latency::new();
    let mut tally = Tally::default();
    for inbox in &inboxes {
        tally.inbox(inbox, |intended, at| {
            push_latency.record(at.saturating_sub(intended))
        });
    }
    let pushed_online = tally.unique;
    // The offline recipients connect now: their stored messages come, timed.
    let backlog = backlog.load(Ordering::Relaxed);
    let offline: Vec<usize> = (0..args.recipients).filter(|i| i % 2 == 1).collect();
    let mut late = Vec::new();
    for &i in &offline {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(LoadError::Socket)?;
        listener.set_nonblocking(true).map_err(LoadError::Socket)?;
        late.push(Inbox {
            listener,
            got: Vec::new(),
        });
        let port = late[late.len() - 1]
            .listener
            .local_addr()
            .map_err(LoadError::Socket)?
            .port();
        let _ = ask(
            args.target,
            &["CONNECT", &recipient_name(i), &port.to_string()],
        );
    }
    let late = Mutex::new(late);
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let mut backlog_delivered = 0;
    std::thread::scope(|scope| {
        scope.spawn(|| receive(&late, epoch, &stop));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            backlog_delivered = received(&late);
            if backlog_delivered >= backlog {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let backlog_secs = started.elapsed().as_secs_f64().max(1e-9);
    let late = late.into_inner().unwrap_or_else(|e| e.into_inner());
    for inbox in &late {
        tally.inbox(inbox, |_, _| {});
    }
    let backlog_delivered = tally.unique - pushed_online;
    let acknowledged = acked.load(Ordering::Relaxed);
    let ack_latency = ack_latency.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(MailboxRecord {
        format: 1,
        scenario: "mailbox".into(),
        started: started_utc,
        source: crate::report::Source::here(),
        senders: args.senders,
        recipients: args.recipients,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        acknowledged,
        refused: refused.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        acknowledged_per_s: acknowledged as f64 / args.duration.as_secs_f64(),
        ack_latency: ack_latency.percentiles(),
        push_latency: push_latency.percentiles(),
        pushed_online,
        expected_online: expected_online.load(Ordering::Relaxed),
        duplicates: tally.duplicates,
        out_of_order: tally.out_of_order,
        backlog,
        backlog_delivered,
        backlog_per_s: backlog_delivered as f64 / backlog_secs,
    })
}
