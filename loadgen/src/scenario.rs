//! Scenarios: what runs against what, and in which order.
//!
//! - `fanout`: clients chat in their channels through the router; then, unless told not to,
//!   the same traffic through the reflector, so the report carries router / ceiling.
//! - `ceiling`: the reflector alone.
//!
//! With no `--target`, the router runs inside this process; its shards' thread ids let their
//! CPU time be read apart from loadgen's own.

use crate::clients::Clients;
use crate::phase::{self, PhaseSpec};
use crate::plan::{Membership, Plan};
use crate::reflector::Reflector;
use crate::report::{Machine, Params, RunRecord, Source, FORMAT};
use crate::{machine, LoadError};
use chat_router::engine::Config;
use chat_router::io::IoKind;
use chat_router::runtime::{self, RuntimeConfig};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Clients chat in channels through the router (and then through the reflector).
    Fanout,
    /// The same traffic through the trivial reflector only: what loopback can carry.
    Ceiling,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Ceiling => "ceiling",
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
    /// An external router, and optionally its pid (to read its shards' CPU time).
    pub target: Option<SocketAddr>,
    pub target_pid: Option<u32>,
    /// Run the reflector after the router (fanout only).
    pub ceiling: bool,
    pub quiet: bool,
}

pub fn run(args: &RunArgs) -> Result<RunRecord, LoadError> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let plan = Plan::new(args.clients, args.membership, args.seed);
    let clients = Clients::bind(args.clients)?;
    let spec = |label, target, cpu_of| PhaseSpec {
        label,
        target,
        rate: args.rate,
        warmup: args.warmup,
        duration: args.duration,
        receivers: args.receivers,
        cpu_of,
        quiet: args.quiet,
    };
    let pid = std::process::id();

    let backend: String;
    let result = match args.scenario {
        Scenario::Fanout => {
            let (router, target) = match args.target {
                Some(addr) => (None, addr),
                None => {
                    let router = start_router(args)?;
                    let addr = router.local;
                    (Some(router), addr)
                }
            };
            let cpu_of = match &router {
                Some(r) => Some((pid, r.thread_ids.clone())),
                None => args
                    .target_pid
                    .map(|p| (p, machine::named_threads(p, "shard-"))),
            };
            backend = router.as_ref().map_or("external", |r| r.backend).into();
            clients.join_all(&plan, target)?;
            phase::run(&spec("router", target, cpu_of), &clients.sockets, &plan)?
        }
        Scenario::Ceiling => {
            let reflector = Reflector::start(&plan, &clients.addrs, args.cores, args.io)?;
            backend = reflector.backend.to_string();
            clients.make_nonblocking();
            let cpu_of = Some((pid, reflector.thread_ids.clone()));
            phase::run(
                &spec("ceiling", reflector.addr, cpu_of),
                &clients.sockets,
                &plan,
            )?
        }
    };
    let ceiling = if args.scenario == Scenario::Fanout && args.ceiling {
        let reflector = Reflector::start(&plan, &clients.addrs, args.cores, args.io)?;
        let cpu_of = Some((pid, reflector.thread_ids.clone()));
        Some(phase::run(
            &spec("ceiling", reflector.addr, cpu_of),
            &clients.sockets,
            &plan,
        )?)
    } else {
        None
    };

    let dir = std::env::current_dir().unwrap_or_default();
    let source = machine::commit(&dir);
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
        },
        source: Source {
            commit: source.as_ref().map(|s| s.0.clone()),
            dirty: source.map(|s| s.1),
        },
        machine: Machine {
            cores: machine::cores(),
            kernel: machine::kernel(),
            backend,
        },
        result,
        ceiling,
    })
}

fn start_router(args: &RunArgs) -> Result<runtime::Running, LoadError> {
    let engine = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    Ok(runtime::start(&RuntimeConfig {
        engine,
        cores: args.cores,
        io: args.io,
        stats_every: None,
    })?)
}
