pub mod check;
pub mod config;
pub mod engine;
pub mod fuzz;
pub mod io;
pub mod proto;
pub mod rng;
pub mod runtime;
