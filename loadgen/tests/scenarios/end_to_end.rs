//! A short real run: loadgen with its embedded router and the reflector, a few hundred
//! clients, then the result file written, read back and compared; and the command line.

use chat_router::io::IoKind;
use loadgen::plan::Membership;
use loadgen::report::RunRecord;
use loadgen::scenario::{self, RunArgs, Scenario};
use std::process::Command;
use std::time::Duration;

fn args(scenario: Scenario) -> RunArgs {
    RunArgs {
        scenario,
        clients: 300,
        membership: Membership::Fixed { members: 10 },
        rate: Some(1000.0),
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        receivers: 2,
        seed: 1,
        cores: 2,
        io: IoKind::Auto,
        browsers: 0,
        target_ws: None,
        target: None,
        target_pid: None,
        neighbors: 2,
        churn: loadgen::traffic::Churn {
            rate: 1000.0,
            pool: 50,
        },
        ceiling: true,
        hostile_rate: 2000.0,
        hostile_mix: loadgen::hostile::Mix {
            random: 1,
            mutated: 1,
            abusive: 2,
        },
        quiet: true,
    }
}

#[test]
fn fanout_through_the_embedded_router_and_the_reflector() {
    let record = scenario::run(&args(Scenario::Fanout)).unwrap();
    for (name, phase) in [
        ("router", &record.result),
        ("ceiling", record.ceiling.as_ref().unwrap()),
    ] {
        let t = phase.tally;
        // 1.3 s of 1000 msgs/s into channels of 10, each delivered to all ten members.
        assert_eq!(t.expected, 13_000, "{name}: {t:?}");
        // At this rate nothing may be lost, repeated or reordered: the router keeps each
        // client's messages in order.
        assert_eq!(t.lost(), 0, "{name}: {t:?}");
        assert_eq!(
            (t.duplicates, t.reordered, t.foreign),
            (0, 0, 0),
            "{name}: {t:?}"
        );
        // The measured second: 1000 messages, each to ten members.
        assert_eq!(phase.latency.count, 10_000, "{name}");
        assert_eq!(phase.deliveries_per_s, 10_000.0, "{name}");
        assert!(phase.latency.p50_us > 0.0 && phase.latency.p50_us <= phase.latency.p99_us);
        assert!(phase.cpu_ns_per_delivery.is_some_and(|ns| ns > 0.0));
    }
    let ratio = record.ceiling_ratio().unwrap();
    assert!(
        (0.9..=1.1).contains(&ratio),
        "same offered load, same deliveries: {ratio}"
    );

    // The table gives latencies in units a reader need not convert, and says when they are
    // queueing at saturation.
    let table = record.table();
    let p99 = table
        .lines()
        .find(|l| l.starts_with("latency p99 "))
        .expect("a p99 row");
    assert!(p99.ends_with(" us") || p99.ends_with(" ms"), "{table}");
    assert!(!table.contains("saturated"), "{table}");
    let mut flat_out = record.clone();
    flat_out.params.rate = None;
    assert!(flat_out.table().contains("runs saturated"));

    // Written, read back unchanged, compared.
    let dir = std::env::temp_dir().join(format!("loadgen-e2e-{}", std::process::id()));
    let path = record.write(&dir).unwrap();
    let back = RunRecord::read(&path).unwrap();
    assert!(back == record, "the record changed in the round trip");
    assert_eq!(
        back.result.latency_histogram().percentiles(),
        record.result.latency
    );
    let hgrm = std::fs::read_to_string(path.with_extension("hgrm")).unwrap();
    assert!(hgrm.contains("Total count"), "{hgrm}");

    // Other kinds of result in the same directory (an ordering run) are skipped with a note.
    let ordering = dir.join("ordering.json");
    std::fs::write(
        &ordering,
        r#"{"format":1,"scenario":"ordering","order":"total"}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "compare".as_ref(),
            path.as_os_str(),
            ordering.as_os_str(),
            path.as_os_str(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("deliveries/s") && text.contains("(+0.0%)"),
        "{text}"
    );
    // Run names whole, however long.
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(stem.len() > 30, "{stem}");
    let names = text.lines().next().unwrap();
    assert_eq!(names.matches(stem.as_str()).count(), 2, "{text}");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("skipping") && note.contains("an ordering result"),
        "{note}"
    );
    let only_other = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["compare".as_ref(), ordering.as_os_str()])
        .output()
        .unwrap();
    assert!(!only_other.status.success());

    let svg = dir.join("latency.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "plot".as_ref(),
            path.as_os_str(),
            "-o".as_ref(),
            svg.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        drawing.matches("<polyline").count(),
        2,
        "router and ceiling"
    );
    assert!(
        drawing.contains("Latency by percentile: fanout"),
        "the title"
    );
    assert!(
        drawing.contains(&format!("started {}", record.started)),
        "each run's start time"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn browsers_and_udp_clients_in_the_same_channels() {
    // A third of the clients are browsers, spread over every channel with the UDP clients.
    let mut run = args(Scenario::Fanout);
    run.browsers = 100;
    run.ceiling = false;
    let record = scenario::run(&run).unwrap();
    assert_eq!(record.params.browsers, 100);
    let t = record.result.tally;
    assert_eq!(t.expected, 13_000, "{t:?}");
    assert_eq!(t.lost(), 0, "{t:?}");
    assert_eq!(
        (t.duplicates, t.reordered, t.foreign, t.browsers_lost),
        (0, 0, 0, 0),
        "{t:?}"
    );
    assert_eq!(record.result.latency.count, 10_000);
}

#[test]
fn bad_arguments_and_bad_files_give_one_line() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), err)
    };
    let not_json = std::env::temp_dir().join(format!("loadgen-bad-{}.json", std::process::id()));
    std::fs::write(&not_json, "not json").unwrap();
    for args in [
        vec!["--rate", "fast"],
        vec!["--rate", "-100"],
        vec!["--cores", "-1"],
        vec!["--clients", "0"],
        vec!["--duration", "soon"],
        vec!["--zipf", "-1"],
        vec!["--clients", "10", "--browsers", "11"],
        vec!["compare", not_json.to_str().unwrap()],
        vec!["compare", "/nonexistent/run.json"],
    ] {
        let (ok, err) = run(&args);
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("loadgen: "), "{args:?}: {err}");
    }
    let _ = std::fs::remove_file(&not_json);
}

#[test]
fn flat_out_keeps_a_window_and_loses_nothing_to_overload() {
    let mut a = args(Scenario::Fanout);
    a.rate = None;
    a.clients = 100;
    a.duration = Duration::from_millis(500);
    a.ceiling = false;
    let record = scenario::run(&a).unwrap();
    let p = &record.result;
    // The window (256 messages to ten members each) turned over: the sender went on as
    // deliveries came back...
    let window = 256 * 10;
    assert!(p.tally.expected > 2 * window, "{:?}", p.tally);
    // ...and kept the router's input queue from overflowing, so what is sent arrives.
    assert!(p.loss_ratio < 0.01, "{:?}", p.tally);
    assert_eq!(
        (p.tally.duplicates, p.tally.reordered),
        (0, 0),
        "{:?}",
        p.tally
    );
}

#[test]
fn federation_forwards_to_neighbors_and_answers_repeated_ids_with_s2s_leave() {
    let mut a = args(Scenario::Federation);
    a.clients = 200;
    let record = scenario::run(&a).unwrap();
    let p = &record.result;
    let t = p.tally;
    // 1300 messages: 650 from clients (10 members + 2 neighbors each) and 650 injected by the
    // neighbors (10 members + the other neighbor).
    assert_eq!(t.expected, 650 * 12 + 650 * 11, "{t:?}");
    assert_eq!(t.lost(), 0, "{t:?}");
    // Each neighbor repeated the id of its 100th, 200th and 300th message: never delivered
    // twice, each answered with an S2S_LEAVE.
    assert_eq!(p.repeated_ids, 6);
    assert_eq!((t.duplicates, t.reordered), (0, 0), "{t:?}");
    assert_eq!(t.s2s_leaves, p.repeated_ids, "{t:?}");
    assert!(record.ceiling.is_none(), "the reflector speaks no S2S");
}

#[test]
fn churn_changes_membership_under_chat_without_errors_or_loss() {
    let mut a = args(Scenario::Churn);
    a.clients = 200;
    a.ceiling = false;
    let record = scenario::run(&a).unwrap();
    let p = &record.result;
    let t = p.tally;
    // 1.3 s at 1000 operations/s: 50 churn clients each through about six login, join,
    // leave, logout cycles, each request in order, so the router never answers with an error.
    assert_eq!(p.churn_ops, 1300);
    assert_eq!(t.churn_errors, 0, "{t:?}");
    assert!(
        t.churn_received > 0,
        "churn clients got chat while members: {t:?}"
    );
    // The chat itself (the 200 steady clients) is unaffected.
    assert_eq!(t.expected, 13_000, "{t:?}");
    assert_eq!((t.lost(), t.duplicates, t.reordered), (0, 0, 0), "{t:?}");
}

#[test]
fn hostile_forges_datagrams_while_clients_chat_and_the_router_counts_its_drops() {
    let mut a = args(Scenario::Hostile);
    a.clients = 200;
    let record = scenario::run(&a).unwrap();
    let baseline = record
        .baseline
        .as_ref()
        .expect("the run without the attack");
    let attacked = &record.result;
    assert!(attacked.hostile_sent >= 2000, "{}", attacked.hostile_sent);
    assert_eq!(baseline.hostile_sent, 0);
    // Reply-shaped, forged-from-itself, refused names...: the router counted what it refused.
    assert!(attacked.router_drops.unwrap() > 0, "{attacked:?}");
    assert!(attacked.router_kernel_drops.is_some());
    for p in [baseline, attacked] {
        let t = p.tally;
        assert_eq!(t.expected, 13_000, "{t:?}");
        assert_eq!((t.lost(), t.duplicates, t.reordered), (0, 0, 0), "{t:?}");
    }
    assert_eq!(record.params.hostile_mix.as_deref(), Some("1,1,2"));
    let table = record.table();
    assert!(
        table.contains("no attack") && table.contains("under attack"),
        "{table}"
    );
}
