//! `router`: command line -> validated configuration -> runtime.

use chat_router::config::{self, ConfigError};
use chat_router::engine::{Cluster, Config, Federation, Limits, Neighbors, Order, Peer};
use chat_router::io::{sys, IoKind};
use chat_router::mailbox::MailboxConfig;
use chat_router::proto::duckchat::SayLayout;
use chat_router::proto::group::Key;
use chat_router::proto::text;
use chat_router::runtime::{self, RuntimeConfig};
use chat_router::streams::irc::IrcConfig;
use chat_router::streams::web::WebConfig;
use clap::{CommandFactory, Parser, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Layout {
    /// username @12, channel @44: the course specification.
    UserFirst,
    /// channel @12, username @44: seed 000's variant.
    ChannelFirst,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Flush {
    /// Group commit: one flush for every request waiting.
    Group,
    /// One flush per request.
    Each,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Commit {
    /// One flush per commit; after a crash, checksums tell the last whole commit.
    Checksum,
    /// Two flushes per commit: the new state is on disk before it is made current.
    TwoPhase,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OrderArg {
    Unordered,
    Fifo,
    Total,
}

/// A chat server for DuckChat and text-line clients on one UDP port, on a sharded,
/// thread-per-core io_uring engine. It federates either as a DuckChat server with neighbors or as
/// one server of a static cluster with ordered multicast.
///
/// DuckChat federation, as the course servers are started: `router HOST PORT
/// [NEIGHBOR_HOST NEIGHBOR_PORT]...`, or `router --listen ADDR [--neighbor ADDR]...`.
///
/// Cluster: `router --cluster FILE --index I [--order total] [-v]`, or as the original
/// `chatserver [-o total] [-v] FILE I` (used when FILE is an existing file).
#[derive(Debug, Parser)]
#[command(name = "router", version = env!("CHAT_ROUTER_VERSION"))]
struct Cli {
    /// HOST PORT of this server, then HOST PORT of each neighbor (hosts may be names).
    #[arg(value_name = "HOST PORT")]
    course: Vec<String>,

    /// Print a completion script for this shell and exit (for example
    /// `router --completions bash > /etc/bash_completion.d/router`).
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,

    /// Print the manual page (roff) and exit: `router --man | man -l -`.
    #[arg(long)]
    man: bool,

    /// Address to listen on [default: 127.0.0.1:4000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,

    /// A neighbor server's address; repeat for each neighbor. How it writes S2S datagrams is
    /// learned from what it sends, or given after the address: `,channel-first` or
    /// `,user-first` (its S2S_SAY layout), `,big-endian` or `,little-endian` (its type codes),
    /// e.g. `--neighbor 127.0.0.1:5000,channel-first`.
    #[arg(long = "neighbor", value_name = "ADDR[,FORMAT]...")]
    neighbors: Vec<String>,

    /// Shards (threads pinned to cores) [default: all available cores].
    #[arg(long, allow_negative_numbers = true)]
    cores: Option<usize>,

    /// I/O backend: auto uses io_uring when the kernel allows it.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoKind,

    /// Users silent for longer than this are logged out.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration, allow_hyphen_values = true)]
    user_timeout: Duration,

    /// How often S2S_JOIN is re-sent for every subscribed channel.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration, allow_hyphen_values = true)]
    s2s_refresh: Duration,

    /// A neighbor that has not refreshed a channel for this long leaves its tree.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration, allow_hyphen_values = true)]
    s2s_timeout: Duration,

    /// Field order of S2S_SAY for a neighbor that has not shown its own (a neighbor's is
    /// learned from its S2S_SAYs, or set per neighbor with --neighbor).
    #[arg(long, value_enum, default_value = "user-first")]
    s2s_say_layout: Layout,

    /// Print the course's log lines (costs nothing when off).
    #[arg(short, long)]
    verbose: bool,

    /// Cluster file: one server per line, ADDR or FORWARD_ADDR,BIND_ADDR.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,

    /// This server's line in the cluster file, counting from 1.
    #[arg(long, value_name = "I", allow_negative_numbers = true)]
    index: Option<usize>,

    /// Ordering of messages in the cluster.
    #[arg(short = 'o', long, value_enum, default_value = "unordered")]
    order: OrderArg,

    /// A file holding a secret shared by every server of the cluster: each datagram between
    /// them then carries a MAC, and forged or altered ones are dropped [default: none].
    #[arg(long, value_name = "FILE")]
    cluster_key: Option<PathBuf>,

    /// A cluster server silent for this long is excluded; the others go on without it.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration, allow_hyphen_values = true)]
    peer_timeout: Duration,

    /// Text-protocol rooms are numbered 1 to R.
    #[arg(
        long,
        value_name = "R",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    rooms: u32,

    /// Print a one-line summary this often [default: never].
    #[arg(long, value_name = "DURATION", value_parser = duration, allow_hyphen_values = true)]
    stats_every: Option<Duration>,

    /// Serve browsers on this TCP address: the chat page at / and WebSocket at /ws.
    #[arg(long, value_name = "ADDR")]
    ws: Option<String>,

    /// An Origin allowed to open /ws (for example http://chat.example.org); repeat for each;
    /// without any, every origin is allowed.
    #[arg(long = "ws-origin", value_name = "ORIGIN")]
    ws_origins: Vec<String>,

    /// Serve IRC clients on this TCP address (docs/irc.md); with --tls-cert, IRC over TLS on
    /// the same port.
    #[arg(long, value_name = "ADDR")]
    irc: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (docs/metrics.md) [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,

    /// Serve the mailbox (direct messages, stored until delivered) on this TCP address.
    #[arg(long, value_name = "ADDR")]
    mailbox: Option<String>,

    /// Where the mailbox keeps its database.
    #[arg(long, value_name = "DIR", default_value = "chat-router-data")]
    data_dir: PathBuf,

    /// group: many requests share one flush to disk; each: one flush per request (slower,
    /// for comparison). Both answer only after the disk has the change.
    #[arg(long, value_enum, default_value = "group")]
    mailbox_flush: Flush,

    /// checksum: one flush per commit, the last whole commit found by checksums after a crash;
    /// two-phase: a second flush per commit, so that recovery never relies on a checksum
    /// (texts come from strangers), slower.
    #[arg(long, value_enum, default_value = "checksum")]
    mailbox_commit: Commit,

    /// A browser that sends nothing, not even a pong to the pings, for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "75s", value_parser = duration, allow_hyphen_values = true)]
    ws_idle: Duration,

    /// WebSocket connections one IP address may hold at once.
    #[arg(long, value_name = "N", default_value_t = chat_router::gate::WEB_PER_IP)]
    ws_per_ip: usize,

    /// A file whose bytes (at least 32) are a key: a token signed with it (JWT, HS256, `sub` the
    /// user's name, `exp`) signs a user in over WebSocket and the text protocol.
    #[arg(long, value_name = "FILE")]
    auth_key: Option<PathBuf>,

    /// A PEM certificate (chain): the WebSocket port then serves https and wss, and the mailbox
    /// and IRC ports TLS, beside their plain protocols (the first byte of a connection tells which).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// A browser's WebSocket upgrade, an IRC client's registration, or a mailbox request must
    /// arrive within this long after the connection opens; otherwise it is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration, allow_hyphen_values = true)]
    handshake_timeout: Duration,

    /// Sessions one IP address may hold on each shard (both protocols together).
    #[arg(long, value_name = "N", default_value_t = Limits::default().sessions_per_ip, allow_negative_numbers = true)]
    sessions_per_ip: usize,

    /// Sessions of each protocol a shard holds; when full, the longest-silent one makes room.
    #[arg(long, value_name = "N", default_value_t = Limits::default().sessions_per_shard, allow_negative_numbers = true)]
    sessions_per_shard: usize,

    /// Channels the server knows at most (from local JOINs and neighbors' S2S_JOINs).
    #[arg(long, value_name = "N", default_value_t = Limits::default().channels, allow_negative_numbers = true)]
    max_channels: usize,
}

fn duration(text: &str) -> Result<Duration, String> {
    config::parse_duration(text).map_err(|e| e.to_string())
}

/// The cluster file and index, from the options or the original's positional `FILE I`.
fn cluster_args(cli: &mut Cli) -> Result<Option<(PathBuf, usize)>, ConfigError> {
    if let [file, index] = cli.course.as_slice() {
        if cli.cluster.is_none() && Path::new(file).is_file() {
            let index = index
                .parse()
                .map_err(|_| ConfigError::IndexNumber(index.clone()))?;
            let file = PathBuf::from(file);
            cli.course.clear();
            return Ok(Some((file, index)));
        }
    }
    match (cli.cluster.take(), cli.index) {
        (Some(file), Some(index)) => Ok(Some((file, index))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::Conflict("--cluster needs --index")),
        (None, Some(_)) => Err(ConfigError::Conflict("--index needs --cluster")),
    }
}

/// The shared secret of `--cluster-key FILE` (surrounding whitespace ignored).
fn load_key(file: &Path) -> Result<Key, ConfigError> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| ConfigError::KeyFile {
        file: name.clone(),
        why: e.to_string(),
    })?;
    let secret = bytes.trim_ascii();
    if secret.len() < 16 {
        return Err(ConfigError::KeyTooShort(name));
    }
    Ok(Key::derive(secret))
}

/// This run's incarnation: microseconds since the epoch (a restart gets a larger one), with
/// random low bits (so that a forger cannot guess it from the start time).
fn incarnation() -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (micros << 12 | sys::random_u64() & 0xfff).max(1)
}

fn load_cluster(file: &Path, index: usize, order: OrderArg) -> Result<Cluster, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::ClusterFile {
        file: file.display().to_string(),
        why: e.to_string(),
    })?;
    let members = config::parse_cluster(&text)?;
    if index == 0 || index > members.len() {
        return Err(ConfigError::Index {
            index,
            servers: members.len(),
        });
    }
    let order = match order {
        OrderArg::Unordered => Order::Unordered,
        OrderArg::Fifo => Order::Fifo,
        OrderArg::Total => Order::Total,
    };
    let mut cluster = Cluster::new(members, (index - 1) as u16, order);
    cluster.incarnation = incarnation();
    Ok(cluster)
}

fn validate(mut cli: Cli) -> Result<RuntimeConfig, ConfigError> {
    let cluster = match cluster_args(&mut cli)? {
        Some((file, index)) => {
            if !cli.course.is_empty() || cli.listen.is_some() || !cli.neighbors.is_empty() {
                return Err(ConfigError::Conflict(
                    "a cluster server takes its address from the cluster file: drop HOST PORT, --listen and --neighbor",
                ));
            }
            let mut cluster = load_cluster(&file, index, cli.order)?;
            cluster.key = cli.cluster_key.as_deref().map(load_key).transpose()?;
            cluster.peer_timeout = cli.peer_timeout;
            Some(cluster)
        }
        None => None,
    };
    if cli.rooms == 0 || cli.rooms > text::MAX_ROOMS {
        return Err(ConfigError::Conflict("--rooms must be from 1 to 1000000"));
    }
    let (listen, neighbors) = match (cli.course.is_empty(), &cli.listen) {
        (false, Some(_)) => return Err(ConfigError::ListenTwice),
        (false, None) => config::parse_course_args(&cli.course)?,
        (true, listen) => (
            config::parse_address(listen.as_deref().unwrap_or("127.0.0.1:4000"))?,
            Vec::new(),
        ),
    };
    let mut peers: Vec<Peer> = neighbors.into_iter().map(Peer::new).collect();
    for n in &cli.neighbors {
        peers.push(config::parse_neighbor(n)?);
    }
    for (name, d) in [
        ("--user-timeout", cli.user_timeout),
        ("--s2s-refresh", cli.s2s_refresh),
        ("--s2s-timeout", cli.s2s_timeout),
        ("--ws-idle", cli.ws_idle),
        ("--handshake-timeout", cli.handshake_timeout),
        ("--peer-timeout", cli.peer_timeout),
    ] {
        if d.is_zero() {
            return Err(ConfigError::Zero(name));
        }
    }
    for (name, n) in [
        ("--cores", cli.cores.unwrap_or(1)),
        ("--sessions-per-ip", cli.sessions_per_ip),
        ("--sessions-per-shard", cli.sessions_per_shard),
        ("--max-channels", cli.max_channels),
        ("--ws-per-ip", cli.ws_per_ip),
    ] {
        if n == 0 {
            return Err(ConfigError::Zero(name));
        }
    }
    let listen = cluster
        .as_ref()
        .map_or(listen, |c| c.members[c.me as usize].bind);
    let mut engine = Config::new(listen);
    engine.federation = match (cluster, peers.is_empty()) {
        (Some(cluster), _) => Federation::Group(cluster),
        (None, true) => Federation::Alone,
        (None, false) => {
            let mut tree = Neighbors::new(Vec::new());
            tree.refresh = cli.s2s_refresh;
            tree.timeout = cli.s2s_timeout;
            tree.say_layout = match cli.s2s_say_layout {
                Layout::UserFirst => SayLayout::UserFirst,
                Layout::ChannelFirst => SayLayout::ChannelFirst,
            };
            for peer in peers {
                if peer.addr == listen {
                    return Err(ConfigError::NeighborIsSelf(peer.addr));
                }
                if !tree.add(peer) {
                    eprintln!(
                        "router: neighbor {} is listed twice; using it once",
                        peer.addr
                    );
                }
            }
            Federation::Tree(tree)
        }
    };
    if let Some(path) = &cli.auth_key {
        engine.token_keys.push(config::read_key(path)?);
    }
    engine.rooms = cli.rooms;
    engine.limits.sessions_per_ip = cli.sessions_per_ip;
    engine.limits.sessions_per_shard = cli.sessions_per_shard;
    engine.limits.channels = cli.max_channels;
    engine.user_timeout = cli.user_timeout;
    engine.verbose = cli.verbose;
    engine.hash_seeds = [
        sys::random_u64(),
        sys::random_u64(),
        sys::random_u64(),
        sys::random_u64(),
    ];
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = cli.cores.unwrap_or(available.min(runtime::MAX_SHARDS));
    if cores > runtime::MAX_SHARDS {
        return Err(ConfigError::TooManyShards(cores));
    }
    if cores > available {
        eprintln!("router: warning: --cores {cores} is more than the {available} cores here; shards will share them");
    }
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(chat_router::tls::load(cert, key)?),
        _ => None,
    };
    let web = match &cli.ws {
        Some(addr) => Some(WebConfig {
            listen: config::parse_address(addr)?,
            origins: cli.ws_origins.clone(),
            server: engine.local.to_string(),
            idle: cli.ws_idle,
            tls: tls.clone(),
            per_ip: cli.ws_per_ip,
        }),
        None => None,
    };
    let irc = match &cli.irc {
        Some(addr) => Some(IrcConfig {
            listen: config::parse_address(addr)?,
            tls: tls.clone(),
            idle: chat_router::streams::irc::IDLE,
            started: chat_router::utc::utc(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
        }),
        None => None,
    };
    let mailbox = match &cli.mailbox {
        Some(addr) => {
            let mut m = MailboxConfig::new(config::parse_address(addr)?, cli.data_dir.clone());
            m.group_commit = matches!(cli.mailbox_flush, Flush::Group);
            m.two_phase = matches!(cli.mailbox_commit, Commit::TwoPhase);
            m.tls = tls.clone();
            Some(m)
        }
        None => None,
    };
    Ok(RuntimeConfig {
        engine,
        cores,
        io: cli.io,
        stats_every: cli.stats_every,
        web,
        irc,
        mailbox,
        handshake: cli.handshake_timeout,
        metrics: cli
            .metrics
            .as_deref()
            .map(config::parse_address)
            .transpose()?,
    })
}

fn main() -> ExitCode {
    let cli = match config::parse_command_line::<Cli>("router") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if let Some(shell) = cli.completions {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "router", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if cli.man {
        return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("router: cannot write the manual page: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
