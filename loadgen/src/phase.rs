//! One measured phase against one target (the router, or the reflector for the ceiling):
//! start the sender and the receivers, print a progress line every second, stop sending at
//! the end of the schedule, wait for the deliveries still in flight, and sum up.

use crate::clients::Sockets;
use crate::latency::{human, Latency, Percentiles};
use crate::machine;
use crate::plan::Plan;
use crate::tracker::Tally;
use crate::traffic::Churn;
use crate::web::Browsers;
use crate::worker::{receive_loop, send_loop, ReceiveReport, Shared};
use crate::LoadError;
use serde::{Deserialize, Serialize};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the run waits for deliveries after the last send when some are still missing.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Silence that ends the drain early: nothing more is coming.
const DRAIN_QUIET: Duration = Duration::from_millis(500);

pub struct PhaseSpec<'a> {
    /// "router" or "ceiling", for progress lines.
    pub label: &'a str,
    pub target: SocketAddr,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    pub receivers: usize,
    /// Neighbor servers played by loadgen; their sockets follow the clients' in `sockets`.
    pub neighbors: usize,
    /// Churn clients; their sockets follow the neighbors'.
    pub churn: Option<Churn>,
    /// Whose CPU time to charge to deliveries: a process id and its threads' ids.
    pub cpu_of: Option<(u32, Vec<i32>)>,
    /// No progress lines.
    pub quiet: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    /// Messages per second the schedule asked for; `None`: as fast as possible.
    pub offered_rate: Option<f64>,
    /// Messages sent per second over the measured window.
    pub sent_per_s: f64,
    pub send_errors: u64,
    /// S2S_SAYs sent twice with the same id (federation), each owed an S2S_LEAVE.
    #[serde(default)]
    pub repeated_ids: u64,
    /// Logins, joins, leaves and logouts of churn clients (churn).
    #[serde(default)]
    pub churn_ops: u64,
    /// Deliveries per second of the messages sent in the measured window.
    pub deliveries_per_s: f64,
    pub tally: Tally,
    /// Lost deliveries as a share of expected ones, over the whole phase.
    pub loss_ratio: f64,
    pub latency: Percentiles,
    /// CPU time of the target's threads per delivery, where it can be read.
    pub cpu_ns_per_delivery: Option<f64>,
    /// What the router itself dropped during the phase, by its own counters (all reasons) and
    /// at its sockets (the kernel's): known when loadgen runs the router.
    #[serde(default)]
    pub router_drops: Option<u64>,
    #[serde(default)]
    pub router_kernel_drops: Option<u64>,
    /// Forged datagrams the attacker sent during the phase (hostile).
    #[serde(default)]
    pub hostile_sent: u64,
    /// The latency histogram: `[value_ns, count]` per non-empty bucket.
    pub histogram: Vec<(u64, u64)>,
}

impl PhaseResult {
    pub fn latency_histogram(&self) -> Latency {
        Latency::from_buckets(&self.histogram)
    }
}

pub fn run(
    spec: &PhaseSpec<'_>,
    sockets: Sockets<'_>,
    browsers: &Browsers,
    plan: &Plan,
) -> Result<PhaseResult, LoadError> {
    let epoch = Instant::now();
    let start_ns = 20_000_000; // a moment for the threads to start
    let measure_from_ns = start_ns + spec.warmup.as_nanos() as u64;
    let shared = Shared {
        epoch,
        sockets,
        neighbors: spec.neighbors,
        plan,
        target: spec.target,
        start_ns,
        measure_from_ns,
        end_ns: measure_from_ns + spec.duration.as_nanos() as u64,
        rate: spec.rate,
        churn: spec.churn,
        browsers,
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
    };
    let receivers = spec.receivers.clamp(1, sockets.len().max(1));
    let (progress_tx, progress_rx) = crossbeam_channel::bounded::<Latency>(64);
    std::thread::scope(|scope| {
        // However this closure ends, the receivers stop, so the scope can join them.
        let _stop = StopOnDrop(&shared.stop);
        let sender = scope.spawn(|| send_loop(&shared));
        let receiving: Vec<_> = (0..receivers)
            .map(|r| {
                let mine: Vec<u32> = (r as u32..sockets.len() as u32)
                    .step_by(receivers)
                    .collect();
                let (shared, tx) = (&shared, progress_tx.clone());
                scope.spawn(move || receive_loop(shared, &mine, &tx))
            })
            .collect();

        let mut progress = Progress::new(spec.label, spec.quiet);
        let wait_until = |ns: u64, progress: &mut Progress| {
            while shared.now_ns() < ns {
                let left = ns - shared.now_ns();
                std::thread::sleep(Duration::from_nanos(left.min(100_000_000)));
                progress.tick(&shared, &progress_rx);
            }
        };
        wait_until(measure_from_ns, &mut progress);
        let cpu_from = spec
            .cpu_of
            .as_ref()
            .and_then(|(pid, tids)| machine::threads_cpu_ns(*pid, tids));
        let delivered_from = shared.delivered.load(Ordering::Relaxed);
        wait_until(shared.end_ns, &mut progress);
        let sent = sender.join().map_err(|_| LoadError::Thread("sender"))?;
        drain(&shared, sent.expected);
        let cpu_to = spec
            .cpu_of
            .as_ref()
            .and_then(|(pid, tids)| machine::threads_cpu_ns(*pid, tids));
        let delivered = shared.delivered.load(Ordering::Relaxed) - delivered_from;
        shared.stop.store(true, Ordering::Relaxed);
        progress.finish();

        let mut total = ReceiveReport::default();
        for r in receiving {
            let report = r
                .join()
                .map_err(|_| LoadError::Thread("receiver"))?
                .map_err(LoadError::Socket)?;
            total.tally.add(&report.tally);
            total.latency.merge(&report.latency);
        }
        total.tally.expected = sent.expected;
        let secs = spec.duration.as_secs_f64();
        Ok(PhaseResult {
            offered_rate: spec.rate,
            sent_per_s: sent.measured as f64 / secs,
            send_errors: sent.send_errors,
            repeated_ids: sent.repeated_ids,
            churn_ops: sent.churn_ops,
            deliveries_per_s: total.latency.count() as f64 / secs,
            tally: total.tally,
            loss_ratio: if sent.expected == 0 {
                0.0
            } else {
                total.tally.lost() as f64 / sent.expected as f64
            },
            latency: total.latency.percentiles(),
            cpu_ns_per_delivery: match (cpu_from, cpu_to) {
                (Some(a), Some(b)) if delivered > 0 => {
                    Some(b.saturating_sub(a) as f64 / delivered as f64)
                }
                _ => None,
            },
            histogram: total.latency.buckets(),
            router_drops: None,
            router_kernel_drops: None,
            hostile_sent: 0,
        })
    })
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Waits until every expected delivery is in, or nothing has arrived for a while.
fn drain(shared: &Shared<'_>, expected: u64) {
    let deadline = Instant::now() + DRAIN_MAX;
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < deadline {
        let now = shared.delivered.load(Ordering::Relaxed);
        if now >= expected {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= DRAIN_QUIET {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The live line, once a second: elapsed time, send and delivery rates over the last second,
/// and that second's p99 latency.
struct Progress<'a> {
    label: &'a str,
    next: Instant,
    interval: Latency,
    /// Sent and delivered at the last line, and when.
    last: (u64, u64, Instant),
    terminal: bool,
    quiet: bool,
}

impl<'a> Progress<'a> {
    fn new(label: &'a str, quiet: bool) -> Self {
        Self {
            label,
            next: Instant::now() + Duration::from_secs(1),
            interval: Latency::new(),
            last: (0, 0, Instant::now()),
            terminal: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    fn tick(&mut self, shared: &Shared<'_>, rx: &crossbeam_channel::Receiver<Latency>) {
        for h in rx.try_iter() {
            self.interval.merge(&h);
        }
        if Instant::now() < self.next || self.quiet {
            return;
        }
        self.next += Duration::from_secs(1);
        let p99 = if self.interval.count() > 0 {
            human(self.interval.quantile_us(0.99))
        } else {
            "none delivered".into()
        };
        let (sent, delivered) = (
            shared.sent.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed),
        );
        let now = Instant::now();
        let secs = now.duration_since(self.last.2).as_secs_f64().max(1e-3);
        let per_s = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let line = format!(
            "{}: {:5.1}s  sent {:.0}/s  delivered {:.0}/s  last-second p99 {p99}",
            self.label,
            shared.epoch.elapsed().as_secs_f64(),
            per_s(sent, self.last.0),
            per_s(delivered, self.last.1),
        );
        self.last = (sent, delivered, now);
        self.interval.reset();
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r{line:<80}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.terminal && !self.quiet {
            eprintln!();
        }
    }
}
