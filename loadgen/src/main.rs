//! `loadgen`: run a scenario (the default) or compare result files.

use chat_router::config::{self, parse_cluster, parse_duration};
use chat_router::engine::Member;
use chat_router::io::{sys, IoKind};
use clap::{Parser, Subcommand};
use loadgen::hostile::Mix;
use loadgen::ordering::{OrderingArgs, OrderingRecord, ProxyUse};
use loadgen::plan::Membership;
use loadgen::plot::{svg, Series};
use loadgen::proxy::{Proxy, ProxyConfig};
use loadgen::report::RunRecord;
use loadgen::scenario::{self, RunArgs, Scenario};
use loadgen::traffic::Churn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Floods a chat router with simulated DuckChat clients and tells the truth about latency",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunOpts,
}

#[derive(Subcommand)]
enum Command {
    /// Print result files side by side, with each figure's change from the first.
    Compare {
        /// Load-run JSON files (`results/*.json`; other kinds of result are skipped with a note).
        #[arg(required = true, num_args = 1.., value_name = "FILES")]
        files: Vec<PathBuf>,
    },
    /// Sit on a cluster's forwarding addresses and delay (so reorder) and drop the datagrams
    /// between its servers, until interrupted.
    Proxy {
        /// The cluster file the servers use (lines FORWARD_ADDR,BIND_ADDR).
        #[arg(long, value_name = "FILE")]
        cluster: PathBuf,
        /// Each datagram waits a random time from zero to this.
        #[arg(long, default_value = "10ms", value_parser = parse_duration, allow_hyphen_values = true)]
        delay: Duration,
        /// Share of datagrams dropped (0 to 1).
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        drop: f64,
        /// Seed of the delays and drops (the same seed, the same choices).
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        seed: u64,
        /// Datagrams held at once; one more and it fails and exits, as the public proxy
        /// does ("Too many queued messages!").
        #[arg(long, value_name = "N", default_value_t = loadgen::proxy::PUBLIC_MAX_IN_FLIGHT, allow_negative_numbers = true)]
        max_in_flight: usize,
    },
    /// Play text clients across a cluster, send numbered messages and check what arrives:
    /// loss, duplicates, FIFO and total-order violations, latency. Exits 1 on any violation.
    Ordering(OrderingOpts),
    /// Direct messages through a router's mailbox (`router --mailbox`): senders on an
    /// open-loop schedule, online and offline recipients; acknowledged SENDs per second, answer
    /// and push latency, loss and duplicates, and how fast the stored backlog is delivered.
    Mailbox(MailboxOpts),
    /// Draw the latency percentile curves of result files into an SVG.
    Plot {
        /// Load-run JSON files (`results/*.json`; other kinds of result are skipped with a note).
        #[arg(required = true, num_args = 1.., value_name = "FILES")]
        files: Vec<PathBuf>,
        /// The SVG file to write.
        #[arg(short, long, default_value = "latency.svg")]
        output: PathBuf,
        /// The plot's title [default: "Latency by percentile: " and the runs' scenarios].
        #[arg(long)]
        title: Option<String>,
    },
}

#[derive(clap::Args)]
struct MailboxOpts {
    /// The router's mailbox address.
    #[arg(long, value_name = "ADDR")]
    target: SocketAddr,
    /// Concurrent senders, each a registered user sending one request per connection.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    senders: usize,
    /// Recipients; every other one is connected during the run, the rest only after it.
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    recipients: usize,
    /// SENDs per second in all, or `max`: each sender as fast as its answers come.
    #[arg(long, default_value = "max", value_parser = parse_rate, allow_negative_numbers = true)]
    rate: Rate,
    /// How long the senders send.
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    duration: Duration,
    /// Seed of the recipients' and texts' random choices.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    seed: u64,
    /// Write the run's JSON into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct OrderingOpts {
    /// The cluster file the servers use; clients talk to the bind addresses.
    #[arg(long, value_name = "FILE")]
    cluster: PathBuf,
    /// The ordering the servers run (total order is checked only for `total`).
    #[arg(long, default_value = "total", value_parser = ["unordered", "fifo", "total"])]
    order: String,
    /// Text clients, spread over the servers in turn.
    #[arg(long, default_value_t = 250, allow_negative_numbers = true)]
    clients: usize,
    /// Rooms the clients are spread over (1 to R); every room gets clients on every server.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    rooms: u32,
    /// Messages each client sends.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true)]
    messages: u64,
    /// Between two messages of one client.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, allow_hyphen_values = true)]
    interval: Duration,
    /// Bytes per message (up to 1000).
    #[arg(long, default_value_t = 40, allow_negative_numbers = true)]
    len: usize,
    /// The longest wait for stragglers once all is sent.
    #[arg(long, default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    drain: Duration,
    /// Write the run's JSON and percentile files into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// What the servers under test are (a build, another implementation), kept in the record:
    /// the record's commit is loadgen's own checkout.
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
    /// Run the proxy here, on the cluster's forwarding addresses (instead of `loadgen
    /// proxy`), delaying each datagram up to this, and report the datagrams between servers
    /// per message.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, allow_hyphen_values = true)]
    proxy_delay: Option<Duration>,
    /// With --proxy-delay: the share of datagrams it drops (0 to 1).
    #[arg(
        long,
        default_value_t = 0.0,
        requires = "proxy_delay",
        allow_negative_numbers = true
    )]
    proxy_drop: f64,
}

#[derive(clap::Args)]
struct RunOpts {
    /// What the simulated clients do (each value is described below).
    #[arg(long, value_enum, default_value = "fanout")]
    scenario: Scenario,
    /// Simulated clients, each with its own UDP socket.
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    clients: usize,
    /// Members per channel (every client is in one channel).
    #[arg(
        long,
        default_value_t = 10,
        conflicts_with = "zipf",
        allow_negative_numbers = true
    )]
    members: usize,
    /// Skewed channel sizes: clients pick one of --channels channels with Zipf exponent S.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    zipf: Option<f64>,
    /// Channels for --zipf (default: clients / 10).
    #[arg(long, requires = "zipf", allow_negative_numbers = true)]
    channels: Option<usize>,
    /// Messages per second on an open-loop schedule, or `max` for as fast as possible.
    #[arg(long, default_value = "max", value_parser = parse_rate, allow_negative_numbers = true)]
    rate: Rate,
    /// Measured time, after the warm-up (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    duration: Duration,
    /// Time sent but not measured, before the measured time.
    #[arg(long, default_value = "2s", value_parser = parse_duration, allow_hyphen_values = true)]
    warmup: Duration,
    /// Receiving threads (each owns a share of the client sockets).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    receivers: usize,
    /// Shards of the embedded router, and threads of the reflector.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    cores: usize,
    /// I/O backend of the embedded router and of the reflector.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoKind,
    /// The last N of --clients are browsers: WebSocket clients speaking the router's JSON
    /// protocol in the same channels (the embedded router serves WebSocket for them).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    browsers: usize,
    /// An external router's --ws address, for --browsers.
    #[arg(long, value_name = "ADDR", requires = "target")]
    target_ws: Option<SocketAddr>,
    /// An external router to load instead of an embedded one.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// The external router's pid, to read its shards' CPU time.
    #[arg(long, requires = "target", allow_negative_numbers = true)]
    target_pid: Option<u32>,
    /// Neighbor servers loadgen plays in the `federation` scenario.
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    neighbors: usize,
    /// Logins, joins, leaves and logouts per second in the `churn` scenario.
    #[arg(long, default_value_t = 1000.0, allow_negative_numbers = true)]
    churn_rate: f64,
    /// Clients that churn (besides --clients, which chat).
    #[arg(long, default_value_t = 256, allow_negative_numbers = true)]
    churn_clients: usize,
    /// Forged datagrams per second in the `hostile` scenario.
    #[arg(long, default_value_t = 20_000.0, allow_negative_numbers = true)]
    hostile_rate: f64,
    /// Weights of random, mutated and valid-but-abusive forged datagrams (`hostile`).
    #[arg(long, value_name = "R,M,A", default_value = "1,1,2", value_parser = Mix::parse)]
    hostile_mix: Mix,
    /// Skip the ceiling run that follows `fanout` and `churn`.
    #[arg(long)]
    no_ceiling: bool,
    /// Write the run's JSON and percentile files into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed of every random choice (channels, rates, forged bytes): the same seed, the same run.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    seed: u64,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy)]
struct Rate(Option<f64>);

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "max" {
        return Ok(Rate(None));
    }
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate(Some(r))),
        _ => Err(format!(
            "{s:?} is not a rate: give messages per second (e.g. 50000) or `max`"
        )),
    }
}

fn mailbox(opts: MailboxOpts) -> Result<(), String> {
    if opts.senders == 0 || opts.recipients < 2 || opts.duration.is_zero() {
        return Err("--senders at least 1, --recipients at least 2, --duration above zero".into());
    }
    let args = loadgen::mailbox::MailboxArgs {
        target: opts.target,
        senders: opts.senders,
        recipients: opts.recipients,
        rate: opts.rate.0,
        duration: opts.duration,
        seed: opts.seed,
    };
    let record = loadgen::mailbox::run(&args).map_err(|e| e.to_string())?;
    print!("{}", record.table());
    if let Some(dir) = opts.out {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stamp = record.started.replace(['-', ':'], "");
        let rate = opts.rate.0.map_or("max".into(), |r| format!("{r:.0}"));
        let path = dir.join(format!("{stamp}-mailbox-{}s-{rate}.json", opts.senders));
        let json = serde_json::to_string_pretty(&record).map_err(|e| e.to_string())?;
        std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run(opts: RunOpts) -> Result<(), String> {
    if opts.clients == 0 || opts.members == 0 || opts.receivers == 0 || opts.cores == 0 {
        return Err("--clients, --members, --receivers and --cores must be at least 1".into());
    }
    if opts.browsers > opts.clients {
        return Err(
            "--browsers is how many of the --clients are browsers: at most --clients".into(),
        );
    }
    if !(opts.hostile_rate > 0.0 && opts.hostile_rate.is_finite()) {
        return Err("--hostile-rate must be positive".into());
    }
    if opts.churn_clients == 0 || !(opts.churn_rate > 0.0 && opts.churn_rate.is_finite()) {
        return Err("--churn-rate must be positive and --churn-clients at least 1".into());
    }
    let membership = match opts.zipf {
        Some(exponent) if exponent > 0.0 && exponent.is_finite() => Membership::Zipf {
            channels: opts.channels.unwrap_or(opts.clients / 10).max(1),
            exponent,
        },
        Some(_) => return Err("--zipf needs a positive exponent".into()),
        None => Membership::Fixed {
            members: opts.members,
        },
    };
    let args = RunArgs {
        scenario: opts.scenario,
        clients: opts.clients,
        membership,
        rate: opts.rate.0,
        warmup: opts.warmup,
        duration: opts.duration,
        receivers: opts.receivers,
        seed: opts.seed,
        cores: opts.cores,
        io: opts.io,
        browsers: opts.browsers,
        target_ws: opts.target_ws,
        target: opts.target,
        target_pid: opts.target_pid,
        neighbors: opts.neighbors,
        churn: Churn {
            rate: opts.churn_rate,
            pool: opts.churn_clients,
        },
        ceiling: !opts.no_ceiling,
        hostile_rate: opts.hostile_rate,
        hostile_mix: opts.hostile_mix,
        quiet: opts.quiet,
    };
    if args.duration.is_zero() {
        return Err("--duration must be longer than zero".into());
    }
    let record = scenario::run(&args).map_err(|e| e.to_string())?;
    print!("{}", record.table());
    if let Some(dir) = opts.out {
        let path = record.write(&dir).map_err(|e| e.to_string())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The load runs among `files`. Other results kept in `results/` (ordering, mailbox,
/// federation-scale runs) are skipped with a note; a file that is no result at all is an error.
fn read_all(files: &[PathBuf]) -> Result<Vec<(String, RunRecord)>, String> {
    let mut runs = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match RunRecord::read(f) {
            Ok(record) => runs.push((name, record)),
            Err(e) => match other_result_kind(f) {
                Some(kind) => eprintln!("loadgen: skipping {name}: {kind}, not a load run"),
                None => return Err(e.to_string()),
            },
        }
    }
    if runs.is_empty() {
        return Err(format!(
            "none of the {} file(s) is a load run (`loadgen --out DIR` writes them)",
            files.len()
        ));
    }
    Ok(runs)
}

/// What kind of result a JSON file in `results/` is, when it is not a load run.
fn other_result_kind(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let kind = if let Some(scenario) = value.get("scenario").and_then(|s| s.as_str()) {
        scenario.to_string()
    } else if value.get("acknowledged").is_some() {
        "mailbox".to_string()
    } else {
        value.get("kind")?.as_str()?.to_string()
    };
    let article = match kind.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    };
    Some(format!("{article} {kind} result"))
}

fn compare(files: &[PathBuf]) -> Result<(), String> {
    print!("{}", loadgen::compare::compare(&read_all(files)?));
    Ok(())
}

fn plot(files: &[PathBuf], output: &Path, title: Option<String>) -> Result<(), String> {
    let runs = read_all(files)?;
    let title = title.unwrap_or_else(|| {
        let mut scenarios: Vec<&str> = Vec::new();
        for (_, r) in &runs {
            if !scenarios.contains(&r.scenario.as_str()) {
                scenarios.push(&r.scenario);
            }
        }
        format!("Latency by percentile: {}", scenarios.join(", "))
    });
    let mut series = Vec::new();
    for (_, record) in runs {
        // The stem without its timestamp: scenario, clients, rate, backend.
        let stem = record.stem();
        let label = stem.split_once('-').map_or(stem.as_str(), |(_, rest)| rest);
        let commit = record.source.short().unwrap_or_else(|| "unknown".into());
        let detail = format!("commit {commit}, started {}", record.started);
        series.push(Series {
            label: format!("{label} {}", record.measured_name()),
            detail: detail.clone(),
            latency: record.result.latency_histogram(),
            companion: false,
        });
        if let Some(c) = &record.ceiling {
            series.push(Series {
                label: format!("{label} ceiling"),
                detail,
                latency: c.latency_histogram(),
                companion: true,
            });
        }
    }
    std::fs::write(output, svg(&title, &series))
        .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
    println!("wrote {}", output.display());
    Ok(())
}

fn read_cluster(file: &Path) -> Result<Vec<Member>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read cluster file {}: {e}", file.display()))?;
    parse_cluster(&text).map_err(|e| format!("{}: {e}", file.display()))
}

fn proxy(
    cluster: &Path,
    delay: Duration,
    drop: f64,
    seed: u64,
    max_in_flight: usize,
) -> Result<(), String> {
    if !(0.0..=1.0).contains(&drop) {
        return Err(format!("--drop {drop} is not a share from 0 to 1"));
    }
    if max_in_flight == 0 {
        return Err("--max-in-flight must be above zero".into());
    }
    let members = read_cluster(cluster)?;
    let proxied = members.iter().filter(|m| m.forward != m.bind).count();
    // Blocked before the forwarding thread starts, so that it inherits the mask and the
    // signals wait for this thread.
    let signals = [libc::SIGINT, libc::SIGTERM];
    sys::block_signals(&signals).map_err(|e| format!("cannot block SIGINT/SIGTERM: {e}"))?;
    let proxy = Proxy::start(ProxyConfig {
        members,
        delay,
        drop,
        seed,
        max_in_flight,
    })
    .map_err(|e| format!("cannot bind {e}"))?;
    println!(
        "proxy: on {proxied} forwarding address(es), delay up to {delay:?}, drop {drop}, \
         at most {max_in_flight} datagrams held"
    );
    // Until a signal, or the servers overrun it.
    let signal = loop {
        if proxy.failed() {
            break None;
        }
        if let Some(signal) = sys::wait_signal(&signals, Duration::from_millis(50)) {
            break Some(signal);
        }
    };
    let stats = proxy.stop();
    match signal {
        Some(signal) => {
            let name = if signal == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            println!("proxy: stopping on {name}: {stats}");
            Ok(())
        }
        None => Err(format!(
            "Too many queued messages! More than {max_in_flight} datagrams were held at once, \
             where the public proxy exits ({stats})"
        )),
    }
}

fn check_ordering(opts: OrderingOpts) -> Result<(), String> {
    if opts.len > chat_router::proto::text::MAX_MESSAGE || opts.len < 24 {
        return Err("--len must be from 24 to 1000 bytes".into());
    }
    if opts.clients == 0 || opts.rooms == 0 || opts.messages == 0 || opts.interval.is_zero() {
        return Err("--clients, --rooms, --messages and --interval must be above zero".into());
    }
    let members = read_cluster(&opts.cluster)?;
    let proxy = match opts.proxy_delay {
        Some(delay) => {
            if !(0.0..=1.0).contains(&opts.proxy_drop) {
                return Err(format!(
                    "--proxy-drop {} is not a share from 0 to 1",
                    opts.proxy_drop
                ));
            }
            let proxy = Proxy::start(ProxyConfig {
                members: members.clone(),
                delay,
                drop: opts.proxy_drop,
                seed: 1,
                max_in_flight: loadgen::proxy::PUBLIC_MAX_IN_FLIGHT,
            })
            .map_err(|e| format!("cannot bind {e}"))?;
            Some((proxy, delay))
        }
        None => None,
    };
    let args = OrderingArgs {
        servers: members.iter().map(|m| m.bind).collect(),
        clients: opts.clients,
        rooms: opts.rooms,
        messages: opts.messages,
        interval: opts.interval,
        len: opts.len,
        drain: opts.drain,
        seed: 1,
    };
    let (order, out) = (opts.order.as_str(), opts.out.as_deref());
    let result = loadgen::ordering::run(&args).map_err(|e| e.to_string())?;
    print!("{}", result.table(order == "total"));
    let proxy_use = proxy.map(|(proxy, delay)| {
        let stats = proxy.stop();
        ProxyUse::new(delay, opts.proxy_drop, &stats, result.report.sent)
    });
    if let Some(p) = &proxy_use {
        print!("{}", p.line());
    }
    if let Some(dir) = out {
        let mut record = OrderingRecord::new(&args, order, &result);
        record.proxy = proxy_use;
        record.label = opts.label;
        let path = record.write(dir, &result).map_err(|e| e.to_string())?;
        println!("wrote {}", path.display());
    }
    if result.report.clean(order == "total") {
        Ok(())
    } else {
        Err("ordering violations (see the table)".into())
    }
}

fn main() -> ExitCode {
    let cli = match config::parse_command_line::<Cli>("loadgen") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let outcome = match cli.command {
        Some(Command::Compare { files }) => compare(&files),
        Some(Command::Plot {
            files,
            output,
            title,
        }) => plot(&files, &output, title),
        Some(Command::Proxy {
            cluster,
            delay,
            drop,
            seed,
            max_in_flight,
        }) => proxy(&cluster, delay, drop, seed, max_in_flight),
        Some(Command::Ordering(opts)) => check_ordering(opts),
        Some(Command::Mailbox(opts)) => mailbox(opts),
        None => run(cli.run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
