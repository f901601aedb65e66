//! `--metrics ADDR`: the router's counters for Prometheus, at `http://ADDR/metrics`, on a thread
//! of its own. Nothing is counted for the metrics: a scrape reads the shards' own counters
//! (single-writer atomics, [`Counters`]) and the depth of the queues between shards, and encodes
//! them with `prometheus-client`; between scrapes the endpoint costs nothing. Metric names are
//! listed in `docs/metrics.md`.

use crate::background::Background;
use crate::engine::{Counters, DropReason, Histogram};
use crate::gate::{Gate, GateCounters, GatedListener};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The depth of each shard's inbox (messages from other shards waiting), read at scrape time.
pub type InboxDepths = Arc<dyn Fn() -> Vec<usize> + Send + Sync>;

/// What a scrape reads.
pub struct Sources {
    pub counters: Vec<Arc<Counters>>,
    pub inboxes: InboxDepths,
    /// Each TCP listener's connection counters, by listener name.
    pub gates: Vec<(&'static str, Arc<GateCounters>)>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sources({} shards)", self.counters.len())
    }
}

/// Per-shard counters: name (without the `chat_router_` prefix and `_total`), help, reader.
type Read = fn(&Counters) -> u64;
const COUNTERS: &[(&str, &str, Read)] = &[
    (
        "datagrams_in",
        "Datagrams (and stream frames) received",
        |c| c.datagrams_in.get(),
    ),
    ("datagrams_out", "Datagrams sent", |c| c.datagrams_out.get()),
    ("deliveries", "Chat messages delivered to a client", |c| {
        c.deliveries.get()
    }),
    ("decode_errors", "Requests that did not decode", |c| {
        c.decode_errors.get()
    }),
    ("errors_sent", "Error replies sent", |c| c.errors_sent.get()),
    (
        "errors_suppressed",
        "Error replies not sent (reply budget)",
        |c| c.errors_suppressed.get(),
    ),
    ("s2s_in", "Datagrams from other servers", |c| c.s2s_in.get()),
    ("s2s_out", "Datagrams to other servers", |c| c.s2s_out.get()),
    (
        "duplicates",
        "Datagrams or frames from servers handled already",
        |c| c.duplicates.get(),
    ),
    ("retransmissions", "Cluster datagrams sent again", |c| {
        c.retransmissions.get()
    }),
    ("users_expired", "Sessions logged out for silence", |c| {
        c.users_expired.get()
    }),
    (
        "sessions_evicted",
        "Sessions logged out to make room",
        |c| c.sessions_evicted.get(),
    ),
    (
        "logins_replaced",
        "Sessions logged out by a later login",
        |c| c.logins_replaced.get(),
    ),
    (
        "neighbors_expired",
        "Neighbors dropped from a channel's tree",
        |c| c.neighbors_expired.get(),
    ),
    ("peers_excluded", "Cluster servers excluded", |c| {
        c.peers_excluded.get()
    }),
    (
        "kernel_drops",
        "Datagrams the kernel dropped at the shard's socket",
        |c| c.kernel_drops.get(),
    ),
];

const GAUGES: &[(&str, &str, Read)] = &[
    ("sessions", "Sessions the shard is home to", |c| {
        c.sessions.get()
    }),
    ("channels", "Channels the shard owns", |c| c.channels.get()),
];

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for &(name, help, read) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (shard, c) in self.counters.iter().enumerate() {
                let labels = [("shard", shard.to_string())];
                ConstCounter::new(read(c)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "drops",
            "Datagrams or messages dropped, by reason (docs/metrics.md)",
            None,
            MetricType::Counter,
        )?;
        for (shard, c) in self.counters.iter().enumerate() {
            for why in DropReason::ALL {
                let labels = [("shard", shard.to_string()), ("reason", why.name().into())];
                ConstCounter::new(c.drops(why)).encode(family.encode_family(&labels)?)?;
            }
        }
        for &(name, help, read) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (shard, c) in self.counters.iter().enumerate() {
                let labels = [("shard", shard.to_string())];
                let value = i64::try_from(read(c)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "inbox_depth",
            "Messages from other shards waiting for this one",
            None,
            MetricType::Gauge,
        )?;
        for (shard, depth) in (self.inboxes)().into_iter().enumerate() {
            let labels = [("shard", shard.to_string())];
            let value = i64::try_from(depth).unwrap_or(i64::MAX);
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "connections_accepted",
            "TCP connections a listener let in",
            None,
            MetricType::Counter,
        )?;
        for (listener, c) in &self.gates {
            let labels = [("listener", listener.to_string())];
            ConstCounter::new(c.accepted.load(Relaxed)).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "connections_refused",
            "TCP connections a listener refused or closed, by reason (docs/limits.md)",
            None,
            MetricType::Counter,
        )?;
        for (listener, c) in &self.gates {
            for (reason, n) in [
                ("budget", &c.refused_budget),
                ("per_ip", &c.refused_per_ip),
                ("handshake_timeout", &c.handshake_timeouts),
                ("evicted", &c.evicted),
                ("accept_error", &c.accept_errors),
            ] {
                let labels = [
                    ("listener", listener.to_string()),
                    ("reason", reason.into()),
                ];
                ConstCounter::new(n.load(Relaxed)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "handling_seconds",
            "Time the engine took to handle one datagram",
            None,
            MetricType::Histogram,
        )?;
        let bounds: Vec<f64> = Histogram::bounds().chain([f64::INFINITY]).collect();
        for (shard, c) in self.counters.iter().enumerate() {
            let (counts, sum_ns) = c.handling.snapshot();
            let buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(counts).collect();
            let labels = [("shard", shard.to_string())];
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    sum_ns as f64 / 1e9,
                    counts.iter().sum(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

/// Everything a scrape returns, in the Prometheus text format.
pub fn render(sources: Arc<Sources>) -> String {
    let mut registry = Registry::with_prefix("chat_router");
    registry.register_collector(Box::new(sources));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

pub struct MetricsServer {
    pub local: SocketAddr,
    thread: Background,
}

impl MetricsServer {
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// Binds `listen` (errors are reported here, before anything runs) and starts the thread.
pub fn start(
    listen: SocketAddr,
    sources: Sources,
    gate: Arc<Gate>,
) -> std::io::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let sources = Arc::new(sources);
    let thread = Background::start("metrics", move || async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let sources = sources.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(sources),
                    )
                }
            }),
        );
        let _ = axum::serve(
            GatedListener {
                listener,
                gate,
                tls: None,
            },
            app,
        )
        .await;
    })?;
    Ok(MetricsServer { local, thread })
}
