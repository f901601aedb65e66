//! Where a session's client is reached.

use std::net::{IpAddr, SocketAddr};

/// A UDP source address, or a stream connection (a WebSocket) held by the runtime's stream
/// thread; the runtime routes each kind of send to the I/O that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Udp(SocketAddr),
    Stream { conn: u64, peer: SocketAddr },
}

impl Endpoint {
    /// The address a client's per-IP limits and reply budget are counted against.
    pub fn ip(&self) -> IpAddr {
        match self {
            Endpoint::Udp(a) | Endpoint::Stream { peer: a, .. } => a.ip(),
        }
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        match self {
            Endpoint::Udp(a) | Endpoint::Stream { peer: a, .. } => *a,
        }
    }

    /// Whether the source address may be forged: a datagram's may, a connection's (after its
    /// handshake) may not. Rules against reflection and amplification apply to the first kind.
    pub fn spoofable(&self) -> bool {
        matches!(self, Endpoint::Udp(_))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.peer().fmt(f)
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Udp(addr)
    }
}
