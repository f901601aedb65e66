//! `router`: command line -> validated configuration -> runtime.

use chat_router::config::{self, ConfigError};
use chat_router::engine::Config;
use chat_router::io::{sys, IoKind};
use chat_router::proto::duckchat::SayLayout;
use chat_router::runtime::{self, RuntimeConfig};
use clap::{Parser, ValueEnum};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Layout {
    /// username @12, channel @44: the course specification.
    UserFirst,
    /// channel @12, username @44: seed 000's variant.
    ChannelFirst,
}

/// A DuckChat server that federates with other DuckChat servers, on a sharded, thread-per-core
/// io_uring engine.
///
/// Started as the course servers are: `router HOST PORT [NEIGHBOR_HOST NEIGHBOR_PORT]...`,
/// or equivalently `router --listen ADDR [--neighbor ADDR]...`.
#[derive(Debug, Parser)]
#[command(name = "router", version)]
struct Cli {
    /// HOST PORT of this server, then HOST PORT of each neighbor (hosts may be names).
    #[arg(value_name = "HOST PORT")]
    course: Vec<String>,

    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// A neighbor server's address; repeat for each neighbor.
    #[arg(long = "neighbor", value_name = "ADDR")]
    neighbors: Vec<String>,

    /// Shards (threads pinned to cores) [default: all available cores].
    #[arg(long)]
    cores: Option<usize>,

    /// I/O backend: auto uses io_uring when the kernel allows it.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoKind,

    /// Users silent for longer than this are logged out.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration)]
    user_timeout: Duration,

    /// How often S2S_JOIN is re-sent for every subscribed channel.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    s2s_refresh: Duration,

    /// A neighbor that has not refreshed a channel for this long leaves its tree.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration)]
    s2s_timeout: Duration,

    /// Field order of S2S_SAY, for peers that put the channel first.
    #[arg(long, value_enum, default_value = "user-first")]
    s2s_say_layout: Layout,

    /// Print the course's log lines (costs nothing when off).
    #[arg(short, long)]
    verbose: bool,

    /// Print a one-line summary this often.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    stats_every: Option<Duration>,
}

fn duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text).map_err(|e| e.to_string())
}

fn validate(cli: Cli) -> Result<RuntimeConfig, ConfigError> {
    let (listen, mut neighbors) = match (cli.course.is_empty(), &cli.listen) {
        (false, Some(_)) => return Err(ConfigError::ListenTwice),
        (false, None) => config::parse_course_args(&cli.course)?,
        (true, listen) => (
            config::parse_address(listen.as_deref().unwrap_or("127.0.0.1:4000"))?,
            Vec::new(),
        ),
    };
    for n in &cli.neighbors {
        neighbors.push(config::parse_address(n)?);
    }
    for (name, d) in [
        ("--user-timeout", cli.user_timeout),
        ("--s2s-refresh", cli.s2s_refresh),
        ("--s2s-timeout", cli.s2s_timeout),
    ] {
        if d.is_zero() {
            return Err(ConfigError::Zero(name));
        }
    }
    if cli.cores == Some(0) {
        return Err(ConfigError::Zero("--cores"));
    }
    let mut engine = Config::new(listen);
    engine.neighbors = neighbors;
    engine.user_timeout = cli.user_timeout;
    engine.s2s_refresh = cli.s2s_refresh;
    engine.s2s_timeout = cli.s2s_timeout;
    engine.say_layout = match cli.s2s_say_layout {
        Layout::UserFirst => SayLayout::UserFirst,
        Layout::ChannelFirst => SayLayout::ChannelFirst,
    };
    engine.verbose = cli.verbose;
    engine.hash_seeds = [
        sys::random_u64(),
        sys::random_u64(),
        sys::random_u64(),
        sys::random_u64(),
    ];
    let cores = cli
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(RuntimeConfig {
        engine,
        cores,
        io: cli.io,
        stats_every: cli.stats_every,
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line names the problem; the usage is one --help away.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("error: invalid arguments");
            eprintln!(
                "router: {} (see router --help)",
                line.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    let cfg = match validate(cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("router: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("router: {e}");
            ExitCode::FAILURE
        }
    }
}
