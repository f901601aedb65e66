//! Where a session's client is reached.

use std::net::{IpAddr, SocketAddr};

/// A UDP source address today; a stream connection (a WebSocket, the mailbox) becomes another
/// variant, and the runtime routes each kind of send to the I/O that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Udp(SocketAddr),
}

impl Endpoint {
    /// The address a client's per-IP limits and reply budget are counted against.
    pub fn ip(&self) -> IpAddr {
        match self {
            Endpoint::Udp(a) => a.ip(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Udp(a) => a.fmt(f),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Udp(addr)
    }
}
