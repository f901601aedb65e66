//! loadgen: floods a chat router with simulated DuckChat clients on an open-loop schedule,
//! measures what arrives (latency from the intended send time, loss, duplicates, reordering),
//! runs the same traffic through a trivial reflector for the machine's ceiling, and keeps
//! results as JSON files that `compare` lines up across commits.

pub mod clients;
pub mod compare;
pub mod hostile;
pub mod io;
pub mod latency;
pub mod machine;
pub mod mailbox;
pub mod ordering;
pub mod pacer;
pub mod phase;
pub mod plan;
pub mod plot;
pub mod proxy;
pub mod reflector;
pub mod report;
pub mod scenario;
pub mod spoof;
pub mod stamp;
pub mod tracker;
pub mod traffic;
pub mod web;
pub mod worker;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot raise the open-file limit: {0}")]
    Limit(std::io::Error),
    #[error("{clients} clients need {wanted} open files but RLIMIT_NOFILE allows {limit} (raise the hard limit: ulimit -Hn)")]
    TooFewDescriptors {
        clients: usize,
        limit: u64,
        wanted: u64,
    },
    #[error("socket: {0}")]
    Socket(std::io::Error),
    #[error("setup: {0}")]
    Setup(String),
    #[error("cannot start the router: {0}")]
    Router(#[from] chat_router::runtime::RuntimeError),
    #[error("the {0} thread panicked")]
    Thread(&'static str),
    #[error("cannot write results to {0}: {1}")]
    Results(String, std::io::Error),
    #[error("{0}: not a loadgen result: {1}")]
    BadRecord(String, String),
}
