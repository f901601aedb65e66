//! `loadgen compare A.json B.json ...`: runs side by side, each figure with its change from the
//! first run, so a commit's effect on throughput and latency reads off one table.

use crate::report::RunRecord;
use std::fmt::Write as _;

type Metric = (&'static str, fn(&RunRecord) -> Option<f64>);

fn metrics() -> Vec<Metric> {
    vec![
        ("sent msgs/s", |r| Some(r.result.sent_per_s)),
        ("deliveries/s", |r| Some(r.result.deliveries_per_s)),
        ("loss %", |r| Some(r.result.loss_ratio * 100.0)),
        ("p50 us", |r| Some(r.result.latency.p50_us)),
        ("p90 us", |r| Some(r.result.latency.p90_us)),
        ("p99 us", |r| Some(r.result.latency.p99_us)),
        ("p99.9 us", |r| Some(r.result.latency.p999_us)),
        ("max us", |r| Some(r.result.latency.max_us)),
        ("cpu ns/delivery", |r| r.result.cpu_ns_per_delivery),
        ("ceiling deliveries/s", |r| {
            r.ceiling.as_ref().map(|c| c.deliveries_per_s)
        }),
        ("router / ceiling", RunRecord::ceiling_ratio),
    ]
}

pub fn compare(runs: &[(String, RunRecord)]) -> String {
    let width = 22;
    let mut s = String::new();
    let mut line = |label: &str, cells: Vec<String>| {
        let _ = write!(s, "{label:<22}");
        for c in cells {
            let _ = write!(s, "{c:>width$}");
        }
        s.push('\n');
    };
    let name = |n: &str| {
        let n = n.rsplit('/').next().unwrap_or(n).trim_end_matches(".json");
        let keep = n.len().saturating_sub(width - 2);
        n[keep..].to_string()
    };
    line("run", runs.iter().map(|(n, _)| name(n)).collect());
    line(
        "scenario",
        runs.iter().map(|(_, r)| r.scenario.clone()).collect(),
    );
    line(
        "commit",
        runs.iter()
            .map(|(_, r)| match (&r.source.commit, r.source.dirty) {
                (Some(c), Some(true)) => format!("{}+dirty", &c[..c.len().min(10)]),
                (Some(c), _) => c[..c.len().min(10)].to_string(),
                _ => "-".into(),
            })
            .collect(),
    );
    line(
        "clients / rate",
        runs.iter()
            .map(|(_, r)| {
                let rate = r.params.rate.map_or("max".into(), |x| format!("{x:.0}"));
                format!("{} / {rate}", r.params.clients)
            })
            .collect(),
    );
    line(
        "backend / cores",
        runs.iter()
            .map(|(_, r)| format!("{} / {}", r.machine.backend, r.params.cores))
            .collect(),
    );
    for (label, get) in metrics() {
        let base = runs.first().and_then(|(_, r)| get(r));
        let cells = runs
            .iter()
            .enumerate()
            .map(|(i, (_, r))| match (get(r), base) {
                (None, _) => "-".into(),
                (Some(v), Some(b)) if i > 0 && b != 0.0 => {
                    format!("{} ({:+.1}%)", short(v), (v - b) / b * 100.0)
                }
                (Some(v), _) => short(v),
            })
            .collect();
        line(label, cells);
    }
    s
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}
