//! The fast suite: the engine alone, without sockets or processes. Most of it runs in the
//! deterministic simulator (`sim`: many routers on a virtual clock, a network that delays,
//! reorders and drops from a seed), so a failure replays exactly and nothing here depends on
//! how busy the machine is. `cargo test --lib --test simulations` runs it with the unit tests.

mod sim;

mod cluster;
mod duckchat;
mod federation_soak;
mod fuzz;
mod hostile;
mod sessions;
mod textchat;
mod web_engine;
