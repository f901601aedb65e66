//! Datagrams with a forged source address, for the attacks `loadgen --scenario hostile` and
//! the test suite (`tests/end_to_end/hostile.rs`, which includes this file) replay: a raw IPv4
//! socket (`IPPROTO_RAW`, which implies `IP_HDRINCL`; root or CAP_NET_RAW) writes the IP and
//! UDP headers itself. The kernel fills in the IP checksum and id; the UDP checksum is left at
//! 0, which IPv4 allows. socket2 opens and writes the socket, so none of it is unsafe.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};

/// IP protocol numbers (IANA): a raw socket of the first, datagrams of the second.
const IPPROTO_RAW: i32 = 255;
const IPPROTO_UDP: u8 = 17;

const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// The largest datagram payload this writer sends.
pub const MAX_PAYLOAD: usize = 1472;

pub struct Spoofer {
    socket: Socket,
    packet: Vec<u8>,
}

impl Spoofer {
    /// Fails with PermissionDenied without root or CAP_NET_RAW.
    pub fn new() -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))?;
        Ok(Self {
            socket,
            packet: Vec::with_capacity(IP_HEADER + UDP_HEADER + MAX_PAYLOAD),
        })
    }

    pub fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "payload too long",
            ));
        }
        let total = (IP_HEADER + UDP_HEADER + payload.len()) as u16;
        let p = &mut self.packet;
        p.clear();
        p.extend_from_slice(&[0x45, 0]); // IPv4, 20-byte header; no TOS
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 64, IPPROTO_UDP, 0, 0]); // id, frag, ttl, proto, checksum
        p.extend_from_slice(&src.ip().octets());
        p.extend_from_slice(&dst.ip().octets());
        p.extend_from_slice(&src.port().to_be_bytes());
        p.extend_from_slice(&dst.port().to_be_bytes());
        p.extend_from_slice(&((UDP_HEADER + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum
        p.extend_from_slice(payload);
        // SAFETY: all-zero is a valid sockaddr_storage.
        self.socket
            .send_to(p, &SockAddr::from(SocketAddr::V4(dst)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn a_spoofed_datagram_arrives_from_the_forged_address() {
        let mut spoofer = match Spoofer::new() {
            Ok(s) => s,
            Err(e) => panic!("raw sockets need root or CAP_NET_RAW: {e}"),
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let SocketAddr::V4(dst) = sock.local_addr().unwrap() else {
            unreachable!("bound to IPv4")
        };
        let forged: SocketAddrV4 = "127.7.7.7:4242".parse().unwrap();
        spoofer.send(forged, dst, b"hello from nowhere").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello from nowhere");
        assert_eq!(from, SocketAddr::V4(forged));
    }
}
