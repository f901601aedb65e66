//! The recvmmsg/sendmmsg backend: batches of datagrams per syscall, poll(2) to sleep. The
//! fallback where io_uring is unavailable, and the baseline io_uring is measured against.

use super::sys::{read_sockaddr, write_sockaddr};
use super::{Received, Sent, Transmit, MAX_DATAGRAM, RECV_BATCH, SEND_BATCH};
use std::io;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub struct Mmsg {
    fd: OwnedFd,
    wake: RawFd,
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    send_names: Box<[libc::sockaddr_storage]>,
    send_iovs: Box<[libc::iovec]>,
    send_hdrs: Box<[libc::mmsghdr]>,
    /// The wake-up eventfd was readable at a wait since [`Mmsg::take_woken`] was last asked.
    woken: bool,
}

fn zeroed_slice<T>(n: usize) -> Box<[T]> {
    // SAFETY: only used for the C structs above, for which all-zero bytes are valid values.
    (0..n).map(|_| unsafe { zeroed() }).collect()
}

impl Mmsg {
    pub fn new(fd: OwnedFd, wake: RawFd) -> Self {
        Self {
            fd,
            wake,
            bufs: vec![[0u8; MAX_DATAGRAM]; RECV_BATCH].into_boxed_slice(),
            names: zeroed_slice(RECV_BATCH),
            iovs: zeroed_slice(RECV_BATCH),
            hdrs: zeroed_slice(RECV_BATCH),
            send_names: zeroed_slice(SEND_BATCH),
            send_iovs: zeroed_slice(SEND_BATCH),
            send_hdrs: zeroed_slice(SEND_BATCH),
            woken: false,
        }
    }

    /// Receives what is ready, without blocking.
    pub fn recv(&mut self, on: &mut dyn FnMut(SocketAddr, &[u8])) -> Received {
        for i in 0..RECV_BATCH {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = &mut self.names[i] as *mut _ as *mut libc::c_void;
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        // SAFETY: every header points at buffers, names and iovecs owned by `self` that live
        // across the call; the count matches the arrays' length.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return Received::default();
        }
        let n = n as usize;
        for i in 0..n {
            let len = (self.hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            if let Some(src) = read_sockaddr(&self.names[i]) {
                on(src, &self.bufs[i][..len]);
            }
        }
        Received {
            datagrams: n,
            no_buffer: 0,
        }
    }

    /// Sends every transmit, SEND_BATCH per syscall.
    pub fn send<'a>(&mut self, mut transmits: impl Iterator<Item = Transmit<'a>>) -> Sent {
        let mut sent = Sent::default();
        loop {
            let mut batch = 0;
            for (i, t) in transmits.by_ref().take(SEND_BATCH).enumerate() {
                let namelen = write_sockaddr(&t.dst, &mut self.send_names[i]);
                self.send_iovs[i] = libc::iovec {
                    iov_base: t.contents.as_ptr() as *mut libc::c_void,
                    iov_len: t.contents.len(),
                };
                let hdr = &mut self.send_hdrs[i].msg_hdr;
                hdr.msg_name = &mut self.send_names[i] as *mut _ as *mut libc::c_void;
                hdr.msg_namelen = namelen;
                hdr.msg_iov = &mut self.send_iovs[i];
                hdr.msg_iovlen = 1;
                batch += 1;
            }
            if batch == 0 {
                return sent;
            }
            let mut done = 0;
            while done < batch {
                // SAFETY: headers [done, batch) point at names/iovecs owned by `self` and at
                // bytes borrowed for 'a, all alive across the call.
                let n = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        self.send_hdrs[done..].as_mut_ptr(),
                        (batch - done) as libc::c_uint,
                        0,
                    )
                };
                if n > 0 {
                    sent.sent += n as u64;
                    done += n as usize;
                    continue;
                }
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if err.kind() == io::ErrorKind::WouldBlock {
                    // The socket buffer is full: drop the rest of the batch rather than stall
                    // the shard (and everyone it serves) for one slow destination.
                    sent.failed += (batch - done) as u64;
                    break;
                }
                // This datagram cannot be sent (bad destination, buffer exhausted): skip it.
                sent.failed += 1;
                done += 1;
            }
        }
    }

    fn poll(&mut self, events: libc::c_short, timeout: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a live array of two pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        self.woken |= fds[1].revents & libc::POLLIN != 0;
    }

    /// Whether the wake-up eventfd was readable at the last wait (then it must be cleared).
    pub fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Sleeps until a datagram or a wake-up arrives, or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) {
        self.poll(libc::POLLIN, timeout);
    }
}
