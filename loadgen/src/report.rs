//! A run's record: every parameter, where the code and machine stood, and each phase's
//! results with its full histogram. Written as one JSON file per run (plus HdrHistogram
//! percentile text), read back by `compare` and `plot`, and printed as a table.

use crate::latency::human;
use crate::phase::PhaseResult;
use crate::LoadError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Bumped when a field changes meaning; readers refuse formats they do not know.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    pub scenario: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    pub params: Params,
    pub source: Source,
    pub machine: Machine,
    /// The scenario's own phase: the router for `fanout`, the reflector for `ceiling`.
    pub result: PhaseResult,
    pub ceiling: Option<PhaseResult>,
    /// The same traffic without the attack, just before it (hostile).
    #[serde(default)]
    pub baseline: Option<PhaseResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub clients: usize,
    /// `fixed:M` or `zipf:CHANNELS:EXPONENT`.
    pub membership: String,
    pub channels: usize,
    pub largest_channel: usize,
    /// `None`: as fast as possible.
    pub rate: Option<f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub receivers: usize,
    pub seed: u64,
    /// Router shards (embedded) and reflector threads.
    pub cores: usize,
    pub io: String,
    /// An external router's address; `None` when loadgen ran its own.
    pub target: Option<String>,
    /// Neighbor servers loadgen played (federation).
    #[serde(default)]
    pub neighbors: usize,
    /// Churn operations per second and churn clients (churn).
    #[serde(default)]
    pub churn_rate: Option<f64>,
    #[serde(default)]
    pub churn_clients: usize,
    /// Forged datagrams per second and their mix RANDOM,MUTATED,ABUSIVE (hostile).
    #[serde(default)]
    pub hostile_rate: Option<f64>,
    #[serde(default)]
    pub hostile_mix: Option<String>,
    /// How many of the clients were browsers (WebSocket).
    #[serde(default)]
    pub browsers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub commit: Option<String>,
    pub dirty: Option<bool>,
}

impl Source {
    /// The commit of the working directory loadgen runs in, and whether it had changes.
    pub fn here() -> Source {
        let found = crate::machine::commit(&std::env::current_dir().unwrap_or_default());
        Source {
            commit: found.as_ref().map(|s| s.0.clone()),
            dirty: found.map(|s| s.1),
        }
    }

    /// The commit's first ten characters, `+dirty` when the tree had changes.
    pub fn short(&self) -> Option<String> {
        let commit: String = self.commit.as_ref()?.chars().take(10).collect();
        let dirty = if self.dirty == Some(true) {
            "+dirty"
        } else {
            ""
        };
        Some(format!("{commit}{dirty}"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub backend: String,
}

impl RunRecord {
    /// What `result` measured.
    pub fn measured_name(&self) -> &'static str {
        if self.scenario == "ceiling" {
            "reflector"
        } else if self.scenario == "hostile" {
            "under attack"
        } else {
            "router"
        }
    }

    /// Router deliveries per second as a share of the ceiling's, when both were measured.
    pub fn ceiling_ratio(&self) -> Option<f64> {
        let c = self.ceiling.as_ref()?;
        (c.deliveries_per_s > 0.0).then(|| self.result.deliveries_per_s / c.deliveries_per_s)
    }

    /// A file name that sorts by time and says what ran: `20261122T021500Z-fanout-10000c-max-uring`.
    pub fn stem(&self) -> String {
        let rate = self
            .params
            .rate
            .map_or("max".to_string(), |r| format!("{r:.0}"));
        let time: String = self
            .started
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        format!(
            "{time}-{}-{}c-{rate}-{}",
            self.scenario,
            self.params.clients,
            self.backend()
        )
    }

    /// The I/O backend by the name `--io` gives it (`uring`, `mmsg`), or `external`.
    pub fn backend(&self) -> String {
        match self.machine.backend.as_str() {
            "io_uring" => "uring".to_string(),
            "recvmmsg/sendmmsg" => "mmsg".to_string(),
            other => other.replace('/', "+"),
        }
    }

    /// Writes `DIR/STEM.json` and `DIR/STEM.hgrm` (and `.ceiling.hgrm`); returns the JSON path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, LoadError> {
        let io = |e| LoadError::Results(dir.display().to_string(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let stem = self.stem();
        let json = dir.join(format!("{stem}.json"));
        let text = serde_json::to_string_pretty(self).map_err(|e| io(e.into()))?;
        std::fs::write(&json, text + "\n").map_err(io)?;
        let router = self.result.latency_histogram().percentile_text();
        std::fs::write(dir.join(format!("{stem}.hgrm")), router).map_err(io)?;
        for (name, phase) in [("ceiling", &self.ceiling), ("baseline", &self.baseline)] {
            if let Some(p) = phase {
                let text = p.latency_histogram().percentile_text();
                std::fs::write(dir.join(format!("{stem}.{name}.hgrm")), text).map_err(io)?;
            }
        }
        Ok(json)
    }

    pub fn read(path: &Path) -> Result<RunRecord, LoadError> {
        let bad = |why: String| LoadError::BadRecord(path.display().to_string(), why);
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if record.format != FORMAT {
            return Err(bad(format!(
                "format {} (this loadgen reads {FORMAT})",
                record.format
            )));
        }
        Ok(record)
    }

    /// The final table.
    pub fn table(&self) -> String {
        let mut phases = Vec::new();
        if let Some(b) = &self.baseline {
            phases.push(("no attack", b));
        }
        phases.push((self.measured_name(), &self.result));
        if let Some(c) = &self.ceiling {
            phases.push(("ceiling", c));
        }
        let mut s = String::new();
        let _ = write!(s, "{:<26}", self.scenario);
        for (name, _) in &phases {
            let _ = write!(s, " {name:>17}");
        }
        s.push('\n');
        for (label, value) in rows() {
            let _ = write!(s, "{label:<26}");
            for (_, p) in &phases {
                let _ = write!(s, " {:>17}", value(p));
            }
            s.push('\n');
        }
        if let Some(ratio) = self.ceiling_ratio() {
            let _ = writeln!(s, "router / ceiling deliveries: {ratio:.3}");
        }
        if self.params.rate.is_none() {
            s.push_str(SATURATED);
        }
        s
    }
}

/// What a reader of a `--rate max` table must know before quoting its latencies.
pub const SATURATED: &str = "note: at --rate max loadgen sends as fast as ~256 messages in \
flight allow, so the router runs saturated\n      and these latencies are time spent queueing \
there, not its latency at a load: use --rate N for that.\n";

type Row = (&'static str, fn(&PhaseResult) -> String);

/// The rows of the table and of `compare`.
pub fn rows() -> Vec<Row> {
    vec![
        ("offered msgs/s", |p| {
            p.offered_rate.map_or("max".into(), |r| format!("{r:.0}"))
        }),
        ("sent msgs/s", |p| format!("{:.0}", p.sent_per_s)),
        ("deliveries/s", |p| format!("{:.0}", p.deliveries_per_s)),
        ("expected deliveries", |p| p.tally.expected.to_string()),
        ("lost", |p| {
            format!("{} ({:.3}%)", p.tally.lost(), p.loss_ratio * 100.0)
        }),
        ("duplicates", |p| p.tally.duplicates.to_string()),
        ("reordered", |p| p.tally.reordered.to_string()),
        ("send errors", |p| p.send_errors.to_string()),
        ("churn ops / errors", |p| {
            format!("{} / {}", p.churn_ops, p.tally.churn_errors)
        }),
        ("repeated ids / S2S_LEAVEs", |p| {
            format!("{} / {}", p.repeated_ids, p.tally.s2s_leaves)
        }),
        ("router drops / kernel", |p| {
            let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
            format!("{} / {}", n(p.router_drops), n(p.router_kernel_drops))
        }),
        ("forged datagrams", |p| p.hostile_sent.to_string()),
        ("latency p50", |p| human(p.latency.p50_us)),
        ("latency p90", |p| human(p.latency.p90_us)),
        ("latency p99", |p| human(p.latency.p99_us)),
        ("latency p99.9", |p| human(p.latency.p999_us)),
        ("latency max", |p| human(p.latency.max_us)),
        ("cpu ns/delivery", |p| {
            p.cpu_ns_per_delivery
                .map_or("-".into(), |v| format!("{v:.0}"))
        }),
    ]
}

pub use chat_router::utc::utc;
