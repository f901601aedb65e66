//! `loadgen plot FILES... -o latency.svg`: percentile curves, the usual HdrHistogram picture.
//! x is the percentile on a log scale of 1/(1-p) (so 99%, 99.9%, 99.99% are evenly spaced),
//! y is latency on a log scale. Each run is one colour; its ceiling phase, when it has one,
//! is the same colour dashed. The legend names each run with its commit and start time, so a
//! picture taken out of `results/` still says what it shows.

use crate::latency::Latency;
use std::fmt::Write as _;

const WIDTH: f64 = 960.0;
/// At least this tall; taller when the legend needs it.
const MIN_HEIGHT: f64 = 520.0;
/// The y axis starts no lower than this: nothing crosses loopback faster, and a histogram's
/// lowest bucket (a clamped 1 ns) would otherwise stretch the axis over empty decades.
const FLOOR_US: f64 = 1.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 50.0;
/// Legend rows: a label and, below it, its detail.
const LEGEND_ROW: f64 = 34.0;
/// The last percentile drawn: 99.999%.
const NINES: f64 = 5.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub struct Series {
    pub label: String,
    /// A second, smaller legend line: the run's commit and when it started.
    pub detail: String,
    pub latency: Latency,
    /// Drawn dashed in the colour of the series before it (a run's ceiling).
    pub companion: bool,
}

/// The curve's points as (nines, microseconds): nines = log10(1 / (1 - p)).
pub fn curve(latency: &Latency) -> Vec<(f64, f64)> {
    (0..=(NINES * 20.0) as usize)
        .map(|i| {
            let nines = i as f64 / 20.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, latency.quantile_us(q).max(FLOOR_US))
        })
        .collect()
}

pub fn svg(title: &str, series: &[Series]) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .filter(|s| s.latency.count() > 0)
        .map(|s| curve(&s.latency))
        .collect();
    let all = curves.iter().flatten().map(|p| p.1);
    let lo = all.clone().fold(f64::INFINITY, f64::min).max(FLOOR_US);
    let hi = all.fold(0.0, f64::max).max(lo * 10.0);
    let (y0, y1) = (lo.log10().floor(), hi.log10().ceil());
    let plot_w = WIDTH - LEFT - RIGHT;
    let legend_h = TOP + 14.0 + curves.len() as f64 * LEGEND_ROW;
    let height = MIN_HEIGHT.max(legend_h);
    let plot_h = height - TOP - BOTTOM;
    let x = |nines: f64| LEFT + nines / NINES * plot_w;
    let y = |us: f64| TOP + plot_h - (us.log10() - y0) / (y1 - y0) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">latency (log scale)</text>"#,
        TOP + plot_h / 2.0
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let xi = x(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xi:.1}" y1="{TOP}" x2="{xi:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xi:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let mut decade = y0;
    while decade <= y1 {
        let us = 10f64.powf(decade);
        let yi = y(us);
        let label = if us >= 1e6 {
            format!("{:.0} s", us / 1e6)
        } else if us >= 1e3 {
            format!("{:.0} ms", us / 1e3)
        } else {
            format!("{us:.0} us")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yi:.1}" x2="{:.1}" y2="{yi:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yi + 4.0
        );
        decade += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1 / (1 - p))</text>"#,
        LEFT + plot_w / 2.0,
        height - 8.0
    );
    let mut colour = 0;
    let drawn = series.iter().filter(|s| s.latency.count() > 0);
    for (i, item) in drawn.enumerate() {
        if i > 0 && !item.companion {
            colour += 1;
        }
        let c = COLOURS[colour % COLOURS.len()];
        let dash = if item.companion {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let points: Vec<String> = curves[i]
            .iter()
            .map(|&(n, us)| format!("{:.1},{:.1}", x(n), y(us)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            points.join(" ")
        );
        let ly = TOP + 14.0 + i as f64 * LEGEND_ROW;
        let lx = WIDTH - RIGHT + 12.0;
        let _ = writeln!(
            s,
            r##"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="2"{dash}/><text x="{:.1}" y="{ly:.1}">{}</text><text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            ly - 4.0,
            lx + 24.0,
            ly - 4.0,
            lx + 30.0,
            escape(&item.label),
            lx + 30.0,
            ly + 13.0,
            escape(&item.detail)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(values_us: impl Iterator<Item = u64>) -> Latency {
        let mut h = Latency::new();
        for us in values_us {
            h.record(us * 1000);
        }
        h
    }

    #[test]
    fn curves_rise_with_the_percentile() {
        let c = curve(&latency(1..=100_000));
        assert_eq!(c.first().unwrap().0, 0.0);
        assert_eq!(c.last().unwrap().0, NINES);
        assert!(c.windows(2).all(|w| w[1].1 >= w[0].1), "{c:?}");
        // p99 of 1..=100000 us is 99,000 us.
        let p99 = c.iter().find(|p| (p.0 - 2.0).abs() < 1e-9).unwrap().1;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.002, "{p99}");
    }

    #[test]
    fn one_curve_and_one_legend_entry_per_series() {
        let series = vec![
            Series {
                label: "a <router>".into(),
                detail: "commit 1479a05, 2026-11-22T02:28:09Z".into(),
                latency: latency(10..1000),
                companion: false,
            },
            Series {
                label: "a ceiling".into(),
                detail: String::new(),
                latency: latency(5..500),
                companion: true,
            },
            Series {
                label: "empty".into(),
                detail: String::new(),
                latency: Latency::new(),
                companion: false,
            },
        ];
        let svg = svg("fanout & churn", &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">fanout &amp; churn</text>"), "the title");
        assert!(svg.contains(">latency (log scale)</text>"), "the y axis");
        assert!(svg.contains(">percentile (log scale"), "the x axis");
        assert!(svg.contains("commit 1479a05, 2026-11-22T02:28:09Z"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "curve and legend"
        );
        assert!(svg.contains("a &lt;router&gt;"));
        assert!(!svg.contains("empty"));
        // Same colour for a run and its ceiling.
        assert_eq!(svg.matches(COLOURS[0]).count(), 4);
    }

    #[test]
    fn the_picture_grows_to_hold_every_legend_entry() {
        let series: Vec<Series> = (0..30)
            .map(|i| Series {
                label: format!("run {i}"),
                detail: String::new(),
                latency: latency(1..100),
                companion: false,
            })
            .collect();
        let svg = svg("many", &series);
        let height: f64 = svg
            .split("height=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|h| h.parse().ok())
            .expect("the svg's height");
        let last_entry = svg.rfind(">run 29</text>").expect("the last legend entry");
        let y: f64 = svg[..last_entry]
            .rsplit("y=\"")
            .next()
            .and_then(|rest| rest.split('"').next())
            .and_then(|v| v.parse().ok())
            .expect("its y");
        assert!(y < height, "entry at {y}, picture {height} tall");
        assert!(height > MIN_HEIGHT);
    }
}
