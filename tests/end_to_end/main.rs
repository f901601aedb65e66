//! Real `router` processes on loopback, driven through real sockets by clients written here
//! from the specs (`support`), by the `chat` binary and by headless Chromium. Every wait is
//! bounded and waits for an event (a line printed, a reply received), never for a set time
//! to pass, so the suite holds on a busy machine.

mod support;

/// Datagrams with forged sources: loadgen's own (a tool of the load generator, not the
/// router's library).
#[path = "../../loadgen/src/spoof.rs"]
mod spoof;

mod accounts;
mod browser;
mod chat;
mod connections;
mod hostile;
mod irc;
mod mailbox;
mod router;
mod tls;
mod web;
