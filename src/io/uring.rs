//! The io_uring backend: one multishot RecvMsg fed by a provided-buffer ring (the kernel picks
//! a free buffer per datagram; we hand it back once the engine has read it), SendMsg batched
//! many per submit, and a multishot poll on the shard's eventfd so that another shard can wake
//! it. When the buffer ring runs dry the kernel ends the multishot with ENOBUFS: counted and
//! re-armed.

use super::sys::{read_sockaddr_bytes, write_sockaddr};
use super::{Received, Sent, Transmit, MAX_DATAGRAM, SEND_BATCH};
use io_uring::types::{BufRingEntry, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, types, IoUring};
use std::collections::VecDeque;
use std::io;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

const RING_BUFS: u16 = 1024;
const GROUP: u16 = 0;
const RECV: u64 = 1;
const WAKE: u64 = 2;
const SEND: u64 = 3;
/// Refused tries (1 ms apart) to collect a batch's send completions before the process stops
/// rather than return with sends the kernel still reads (see `Uring::send`).
const SEND_PATIENCE: u32 = 1000;

/// Receive buffers and the ring the kernel takes them from.
struct BufRing {
    entries: *mut BufRingEntry,
    bytes: usize,
    bufs: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<Self> {
        let bytes = RING_BUFS as usize * size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping; the result is checked. mmap returns page-aligned
        // memory, as the buffer ring requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = Self {
            entries: ptr as *mut BufRingEntry,
            bytes,
            bufs: vec![0u8; RING_BUFS as usize * MAX_DATAGRAM].into_boxed_slice(),
            tail: 0,
        };
        for bid in 0..RING_BUFS {
            ring.provide(bid);
        }
        Ok(ring)
    }

    /// Hands buffer `bid` (back) to the kernel.
    fn provide(&mut self, bid: u16) {
        let index = (self.tail & (RING_BUFS - 1)) as usize;
        let addr = self.bufs[bid as usize * MAX_DATAGRAM..].as_ptr() as u64;
        // SAFETY: `index` < RING_BUFS, inside the mapping; only addr/len/bid are written, not
        // the tail that shares entry 0.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(MAX_DATAGRAM as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lies in entry 0 of the live mapping; the kernel reads it
        // concurrently, so it is published with a release store after the entry is written.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * MAX_DATAGRAM;
        &self.bufs[start..start + len.min(MAX_DATAGRAM)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the ring (and with it the kernel's
        // registration) is dropped before this, as `Uring` declares it first.
        unsafe { libc::munmap(self.entries as *mut libc::c_void, self.bytes) };
    }
}

struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
}

pub struct Uring {
    ring: IoUring,
    bufs: BufRing,
    fd: OwnedFd,
    wake: RawFd,
    recv_hdr: Box<libc::msghdr>,
    recv_armed: bool,
    wake_armed: bool,
    /// Completions that arrived while a send batch was being waited for.
    pending: VecDeque<(u64, i32, u32)>,
    /// The wake-up eventfd fired since [`Uring::take_woken`] was last asked.
    woken: bool,
    slots: Box<[SendSlot]>,
}

impl Uring {
    pub fn new(fd: OwnedFd, wake: RawFd) -> io::Result<Self> {
        let ring = IoUring::builder().setup_cqsize(8192).build(1024)?;
        let bufs = BufRing::new()?;
        // SAFETY: the ring memory stays mapped until `bufs` drops, after `ring` (field order).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.entries as u64,
                RING_BUFS,
                GROUP,
                0,
            )?;
        }
        // SAFETY: all-zero is a valid msghdr; only the name length is set, no iovec (the
        // kernel takes buffers from the ring) and no control data.
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        recv_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let slots = (0..SEND_BATCH)
            // SAFETY: all-zero is a valid value for these C structs.
            .map(|_| unsafe { zeroed::<SendSlot>() })
            .collect();
        let mut uring = Self {
            ring,
            bufs,
            fd,
            wake,
            recv_hdr,
            recv_armed: false,
            wake_armed: false,
            pending: VecDeque::with_capacity(RING_BUFS as usize),
            woken: false,
            slots,
        };
        uring.arm()?;
        Ok(uring)
    }

    /// (Re-)arms the multishot receive and the wake-up poll when the kernel ended them.
    fn arm(&mut self) -> io::Result<()> {
        if !self.recv_armed {
            let entry =
                opcode::RecvMsgMulti::new(types::Fd(self.fd.as_raw_fd()), &*self.recv_hdr, GROUP)
                    .build()
                    .user_data(RECV);
            // SAFETY: `recv_hdr` is boxed and lives as long as the ring.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.recv_armed = true;
            }
        }
        if !self.wake_armed {
            let entry = opcode::PollAdd::new(types::Fd(self.wake), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(WAKE);
            // SAFETY: the poll references only a descriptor.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.wake_armed = true;
            }
        }
        self.ring.submit()?;
        Ok(())
    }

    /// Handles every completion that is ready.
    pub fn recv(&mut self, on: &mut dyn FnMut(SocketAddr, &[u8])) -> Received {
        let mut received = Received::default();
        while let Some((data, result, flags)) = self.pending.pop_front() {
            self.complete(&mut received, data, result, flags, on);
        }
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            self.complete(
                &mut received,
                cqe.user_data(),
                cqe.result(),
                cqe.flags(),
                on,
            );
        }
        if !(self.recv_armed && self.wake_armed) {
            let _ = self.arm();
        }
        received
    }

    fn complete(
        &mut self,
        received: &mut Received,
        data: u64,
        result: i32,
        flags: u32,
        on: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        match data {
            RECV => {
                if !cqueue::more(flags) {
                    self.recv_armed = false;
                }
                if result == -libc::ENOBUFS {
                    received.no_buffer += 1;
                }
                let Some(bid) = cqueue::buffer_select(flags) else {
                    return;
                };
                if result >= 0 {
                    let buf = self.bufs.buffer(bid, result as usize);
                    if let Ok(msg) = RecvMsgOut::parse(buf, &self.recv_hdr) {
                        if let Some(src) = read_sockaddr_bytes(msg.name_data()) {
                            on(src, msg.payload_data());
                        }
                    }
                }
                self.bufs.provide(bid);
                received.datagrams += 1;
            }
            WAKE => {
                self.woken = true;
                if !cqueue::more(flags) {
                    self.wake_armed = false;
                }
            }
            _ => {}
        }
    }

    /// Sends every transmit, SEND_BATCH per submit, and waits for their completions (UDP sends
    /// complete at once, or fail at once with a full send buffer) so that the caller may reuse
    /// the bytes.
    pub fn send<'a>(&mut self, mut transmits: impl Iterator<Item = Transmit<'a>>) -> Sent {
        let mut sent = Sent::default();
        loop {
            let mut batch = 0;
            for (slot, t) in self.slots.iter_mut().zip(transmits.by_ref()) {
                let namelen = write_sockaddr(&t.dst, &mut slot.name);
                slot.iov = libc::iovec {
                    iov_base: t.contents.as_ptr() as *mut libc::c_void,
                    iov_len: t.contents.len(),
                };
                slot.hdr.msg_name = &mut slot.name as *mut _ as *mut libc::c_void;
                slot.hdr.msg_namelen = namelen;
                slot.hdr.msg_iov = &mut slot.iov;
                slot.hdr.msg_iovlen = 1;
                let entry = opcode::SendMsg::new(types::Fd(self.fd.as_raw_fd()), &slot.hdr)
                    .build()
                    .user_data(SEND);
                // SAFETY: the slot (boxed, owned by self) and the bytes (borrowed for 'a, past
                // this call) stay alive until the completion is reaped below, before this returns.
                while unsafe { self.ring.submission().push(&entry) }.is_err() {
                    let _ = self.ring.submit();
                }
                batch += 1;
            }
            if batch == 0 {
                return sent;
            }
            let mut done = 0;
            let mut refusals = 0u32;
            while done < batch {
                if let Err(e) = self.ring.submit_and_wait(1) {
                    if e.raw_os_error() != Some(libc::EINTR)
                        && e.raw_os_error() != Some(libc::EBUSY)
                    {
                        // Should not happen. Returning now would leave the kernel with sends
                        // that read the slots and the caller's bytes after this returns (the
                        // SAFETY promise above), so keep collecting, resting between tries;
                        // a ring that refuses for a whole second is broken: abort the process
                        // (a panic would unwind and free them) rather than let the kernel
                        // read freed memory.
                        refusals += 1;
                        if refusals >= SEND_PATIENCE {
                            eprintln!("router: io_uring cannot collect send completions: {e}");
                            std::process::abort();
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                for cqe in self.ring.completion() {
                    if cqe.user_data() == SEND {
                        done += 1;
                        if cqe.result() >= 0 {
                            sent.sent += 1;
                        } else {
                            sent.failed += 1;
                        }
                    } else {
                        self.pending
                            .push_back((cqe.user_data(), cqe.result(), cqe.flags()));
                    }
                }
            }
        }
    }

    /// Whether the wake-up eventfd fired since the last call (then it must be cleared).
    pub fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    /// Sleeps until a completion (datagram or wake-up) arrives, or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) {
        if !self.pending.is_empty() || !self.ring.completion().is_empty() {
            return;
        }
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        // ETIME (timeout) and EINTR are ordinary outcomes here.
        let _ = self.ring.submitter().submit_with_args(1, &args);
    }
}

/// Whether this kernel and process may use the io_uring backend; the reason when not.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup failed: {e}"))?;
    let bufs = BufRing::new().map_err(|e| format!("buffer ring memory: {e}"))?;
    // SAFETY: the ring memory outlives the registration, which is removed before it drops.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.entries as u64, RING_BUFS, GROUP, 0)
    }
    .map_err(|e| format!("provided buffer rings unsupported (kernel 5.19+ needed): {e}"))?;
    let _ = ring.submitter().unregister_buf_ring(GROUP);
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("io_uring probe failed: {e}"))?;
    if !probe.is_supported(opcode::RecvMsg::CODE) || !probe.is_supported(opcode::SendMsg::CODE) {
        return Err("kernel lacks io_uring RecvMsg/SendMsg".into());
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("kernel lacks IORING_FEAT_EXT_ARG (5.11+)".into());
    }
    Ok(())
}
