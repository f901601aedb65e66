//! Datagrams with a forged source address, for the attacks the test suite and `loadgen hostile`
//! replay: a raw IPv4 socket (`IP_HDRINCL`, so root or CAP_NET_RAW) writes the IP and UDP
//! headers itself. The kernel fills in the IP checksum and id; the UDP checksum is left at 0,
//! which IPv4 allows.

use super::sys;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
/// The largest datagram payload this writer sends.
pub const MAX_PAYLOAD: usize = 1472;

pub struct Spoofer {
    fd: OwnedFd,
    packet: Vec<u8>,
}

impl Spoofer {
    /// Fails with PermissionDenied without root or CAP_NET_RAW.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is checked, then owned.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            packet: Vec::with_capacity(IP_HEADER + UDP_HEADER + MAX_PAYLOAD),
        })
    }

    /// Sends `payload` to `dst` as if `src` had sent it.
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
        p.extend_from_slice(&[0, 0, 0, 0, 64, libc::IPPROTO_UDP as u8, 0, 0]); // id, frag, ttl, proto, checksum
        p.extend_from_slice(&src.ip().octets());
        p.extend_from_slice(&dst.ip().octets());
        p.extend_from_slice(&src.port().to_be_bytes());
        p.extend_from_slice(&dst.port().to_be_bytes());
        p.extend_from_slice(&((UDP_HEADER + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum
        p.extend_from_slice(payload);
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = sys::write_sockaddr(&SocketAddr::V4(dst), &mut storage);
        // SAFETY: `p` and `storage` are valid for reads of the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                p.as_ptr() as *const libc::c_void,
                p.len(),
                0,
                &storage as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
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
