//! Scenarios: what runs against what, and in which order.
//!
//! - `fanout`: clients chat in their channels through the router; then, unless told not to,
//!   the same traffic through the reflector, so the report carries router / ceiling.
//! - `ceiling`: the reflector alone.
//!
//! With no `--target`, the router runs inside this process; its shards' thread ids let their
//! CPU time be read apart from loadgen's own.

use crate::clients::{Clients, Sockets};
use crate::hostile::{Attacker, Mix};
use crate::phase::{self, PhaseResult, PhaseSpec};
use crate::plan::{Membership, Plan};
use crate::reflector::Reflector;
use crate::report::{Machine, Params, RunRecord, Source, FORMAT};
use crate::traffic::Churn;
use crate::web::Browsers;
use crate::{machine, LoadError};
use chat_router::engine::{Config, Federation, Neighbors};
use chat_router::io::IoKind;
use chat_router::runtime::{self, RuntimeConfig};
use chat_router::streams::web::WebConfig;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Clients chat in channels through the router (and then through the reflector).
    Fanout,
    /// The same traffic through the trivial reflector only: what loopback can carry.
    Ceiling,
    /// loadgen also plays neighbor servers: it subscribes them with S2S_JOIN, injects
    /// S2S_SAYs from remote users (some with a repeated id, owed an S2S_LEAVE) and receives
    /// what the router forwards.
    Federation,
    /// fanout, while a pool of extra clients logs in, joins chat channels, leaves and logs
    /// out at --churn-rate operations per second.
    Churn,
    /// fanout, then the same traffic again while an attacker forges --hostile-rate datagrams
    /// per second from sources across 127.0.0.0/8 (needs root or CAP_NET_RAW).
    Hostile,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Ceiling => "ceiling",
            Scenario::Federation => "federation",
            Scenario::Churn => "churn",
            Scenario::Hostile => "hostile",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunArgs {
    pub scenario: Scenario,
    pub clients: usize,
    pub membership: Membership,
    /// Messages per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    pub receivers: usize,
    pub seed: u64,
    /// Router shards when embedded, and reflector threads.
    pub cores: usize,
    pub io: IoKind,
    /// The last `browsers` of the clients reach the router over WebSocket.
    pub browsers: usize,
    /// An external router's `--ws` address, for browsers.
    pub target_ws: Option<SocketAddr>,
    /// An external router, and optionally its pid (to read its shards' CPU time).
    pub target: Option<SocketAddr>,
    pub target_pid: Option<u32>,
    /// Neighbor servers loadgen plays in `federation`.
    pub neighbors: usize,
    /// Churn operations per second and churn clients, in `churn`.
    pub churn: Churn,
    /// Run the reflector after the router (fanout only).
    pub ceiling: bool,
    /// Forged datagrams per second and their mix, in `hostile`.
    pub hostile_rate: f64,
    pub hostile_mix: Mix,
    pub quiet: bool,
}

pub fn run(args: &RunArgs) -> Result<RunRecord, LoadError> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let plan = Plan::new(args.clients, args.membership, args.seed);
    let neighbors = match args.scenario {
        Scenario::Federation => args.neighbors.max(1),
        _ => 0,
    };
    let churn = (args.scenario == Scenario::Churn).then_some(args.churn);
    let churners = churn.map_or(0, |c| c.pool);
    // Clients' sockets first, then the neighbor servers', then the churn clients'.
    // A browser holds a TCP connection instead of a UDP socket, and the embedded router one
    // more descriptor for it.
    let browsers = args.browsers.min(args.clients);
    let first_browser = args.clients - browsers;
    let router_fds = if args.target.is_some() { 0 } else { browsers };
    crate::clients::reserve_descriptors(args.clients + neighbors + churners + router_fds)?;
    let clients = Clients::bind(
        args.clients + neighbors + churners,
        first_browser..args.clients,
    )?;
    let spec = |label, target, cpu_of, neighbors| PhaseSpec {
        label,
        target,
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        receivers: args.receivers,
        neighbors,
        churn,
        cpu_of,
        quiet: args.quiet,
    };
    let pid = std::process::id();
    let through_reflector = |label| -> Result<(PhaseResult, &'static str), LoadError> {
        let (sockets, addrs) = clients.first(args.clients).ok_or_else(|| {
            LoadError::Setup("the reflector carries UDP clients only: no browsers".into())
        })?;
        let reflector = Reflector::start(&plan, addrs, args.cores, args.io)?;
        clients.make_nonblocking();
        let cpu_of = Some((pid, reflector.thread_ids().to_vec()));
        let mut spec = spec(label, reflector.addr, cpu_of, 0);
        spec.churn = None; // the reflector ignores everything but SAYs
        let browsers = Browsers::none(args.clients);
        let result = phase::run(&spec, Sockets::plain(sockets), &browsers, &plan)?;
        Ok((result, reflector.backend))
    };

    let mut baseline = None;
    let (result, backend) = match args.scenario {
        Scenario::Fanout | Scenario::Federation | Scenario::Churn | Scenario::Hostile => {
            if neighbors > 0 && args.target.is_some() {
                return Err(LoadError::Setup(
                    "federation runs its own router, started with loadgen's neighbor addresses; drop --target".into(),
                ));
            }
            let (router, target) = match args.target {
                Some(addr) => (None, addr),
                None => {
                    let neighbor_addrs = (args.clients..args.clients + neighbors)
                        .map(|i| clients.addr(i))
                        .collect();
                    let router = start_router(args, neighbor_addrs)?;
                    let addr = router.local;
                    (Some(router), addr)
                }
            };
            let browsers = match (args.browsers, &router, args.target_ws) {
                (0, _, _) => Browsers::none(args.clients),
                (_, Some(r), _) => {
                    let ws = r.local("web").ok_or_else(|| {
                        LoadError::Setup("the embedded router serves no WebSocket".into())
                    })?;
                    Browsers::connect(&plan, first_browser, ws)?
                }
                (_, None, Some(ws)) => Browsers::connect(&plan, first_browser, ws)?,
                (_, None, None) => {
                    return Err(LoadError::Setup(
                        "--browsers with --target needs the router's --ws address: --target-ws"
                            .into(),
                    ))
                }
            };
            let cpu_of = match &router {
                Some(r) => Some((pid, r.thread_ids().to_vec())),
                None => args
                    .target_pid
                    .map(|p| (p, machine::named_threads(p, "shard-"))),
            };
            clients.join_all(&plan, target, first_browser)?;
            if neighbors > 0 {
                clients.subscribe_neighbors(&plan, neighbors, target)?;
            }
            let drops = || router.as_ref().map(|r| RouterDrops::of(&r.counters));
            let measured = |label, attack: Option<(f64, Mix)>| {
                let spec = spec(label, target, cpu_of.clone(), neighbors);
                let before = drops();
                let attacker = match (attack, target) {
                    (Some((rate, mix)), SocketAddr::V4(v4)) => {
                        Some(Attacker::start(v4, rate, mix, args.seed).map_err(|e| {
                            LoadError::Setup(format!(
                                "the hostile scenario forges source addresses with a raw socket (run as root or with CAP_NET_RAW): {e}"
                            ))
                        })?)
                    }
                    (Some(_), SocketAddr::V6(_)) => {
                        return Err(LoadError::Setup("the hostile scenario needs an IPv4 target".into()))
                    }
                    (None, _) => None,
                };
                let mut result = phase::run(&spec, clients.sockets(), &browsers, &plan)?;
                result.hostile_sent = attacker.map_or(0, Attacker::stop);
                if let (Some(a), Some(b)) = (before, drops()) {
                    result.router_drops = Some(b.drops - a.drops);
                    result.router_kernel_drops = Some(b.kernel - a.kernel);
                }
                Ok(result)
            };
            if args.scenario == Scenario::Hostile {
                baseline = Some(measured("no attack", None)?);
            }
            let attack = (args.scenario == Scenario::Hostile)
                .then_some((args.hostile_rate, args.hostile_mix));
            let result = measured("router", attack)?;
            (result, router.as_ref().map_or("external", |r| r.backend))
        }
        Scenario::Ceiling => through_reflector("ceiling")?,
    };
    // The reflector speaks no S2S, so federation has no ceiling to compare with.
    let ceiling = match (args.scenario, args.ceiling) {
        (Scenario::Fanout | Scenario::Churn, true) if browsers == 0 => {
            Some(through_reflector("ceiling")?.0)
        }
        _ => None,
    };

    Ok(RunRecord {
        format: FORMAT,
        scenario: args.scenario.name().into(),
        started: crate::report::utc(started),
        params: Params {
            clients: args.clients,
            membership: match args.membership {
                Membership::Fixed { members } => format!("fixed:{members}"),
                Membership::Zipf { channels, exponent } => format!("zipf:{channels}:{exponent}"),
            },
            channels: plan.members.len(),
            largest_channel: plan.largest_channel(),
            rate: args.rate,
            warmup_s: args.warmup.as_secs_f64(),
            duration_s: args.duration.as_secs_f64(),
            receivers: args.receivers,
            seed: args.seed,
            cores: args.cores,
            io: format!("{:?}", args.io).to_lowercase(),
            target: args.target.map(|a| a.to_string()),
            neighbors,
            churn_rate: churn.map(|c| c.rate),
            churn_clients: churners,
            hostile_rate: (args.scenario == Scenario::Hostile).then_some(args.hostile_rate),
            hostile_mix: (args.scenario == Scenario::Hostile).then(|| args.hostile_mix.to_string()),
            browsers: args.browsers.min(args.clients),
        },
        source: Source::here(),
        machine: Machine {
            cores: machine::cores(),
            kernel: machine::kernel(),
            backend: backend.into(),
        },
        result,
        ceiling,
        baseline,
    })
}

/// The embedded router's drop counters, summed over its shards.
#[derive(Clone, Copy)]
struct RouterDrops {
    drops: u64,
    kernel: u64,
}

impl RouterDrops {
    fn of(counters: &[std::sync::Arc<chat_router::engine::Counters>]) -> Self {
        Self {
            drops: counters.iter().map(|c| c.total_drops()).sum(),
            kernel: counters.iter().map(|c| c.kernel_drops.get()).sum(),
        }
    }
}

fn start_router(args: &RunArgs, neighbors: Vec<SocketAddr>) -> Result<runtime::Running, LoadError> {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut engine = Config::new(localhost);
    if !neighbors.is_empty() {
        engine.federation = Federation::Tree(Neighbors::new(neighbors));
    }
    Ok(runtime::start(&RuntimeConfig {
        engine,
        cores: args.cores,
        io: args.io,
        stats_every: None,
        metrics: None,
        web: (args.browsers > 0).then(|| WebConfig {
            listen: localhost,
            origins: Vec::new(),
            server: "loadgen".into(),
            idle: chat_router::streams::web::IDLE,
            tls: None,
            // Every simulated browser comes from 127.0.0.1.
            per_ip: args.browsers.max(chat_router::gate::WEB_PER_IP),
        }),
        irc: None,
        mailbox: None,
        handshake: chat_router::gate::HANDSHAKE,
    })?)
}
