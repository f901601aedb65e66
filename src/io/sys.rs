//! Thin, safe wrappers over the syscalls the runtime needs besides datagram I/O: sockets with
//! SO_REUSEPORT (through socket2, which offers them safely), socket addresses in the kernel's
//! layout (what io_uring and sendmmsg take), the drop count of a socket (SO_MEMINFO, which
//! socket2 does not offer), eventfd wake-ups, signal waiting and OS randomness.

use socket2::{Domain, SockRef, Socket, Type};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Asks for a receive buffer of `bytes` (the kernel caps it at net.core.rmem_max): room for a
/// burst that arrives while the owner is not scheduled.
pub fn set_receive_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    // SAFETY: the caller's descriptor is open for the duration of this call (the borrow
    // lives only within it).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    SockRef::from(&fd).set_recv_buffer_size(bytes)
}

/// Datagrams the kernel dropped at this socket since it was opened (its receive queue was
/// full, or no buffer was free): SO_MEMINFO's drop count, which wraps at 2^32.
pub fn socket_drops(fd: RawFd) -> io::Result<u32> {
    // Newer kernels may report more fields; they copy at most the length we pass.
    let mut info = [0u32; 16];
    let mut len = size_of::<[u32; 16]>() as libc::socklen_t;
    // SAFETY: `info` and `len` outlive the call and `len` is the size of `info` in bytes.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    check(ret)?;
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

/// A non-blocking UDP socket bound to `addr`. With `reuseport`, every shard binds its own socket
/// to the same address and the kernel spreads clients across them; without, the bind fails
/// while any other socket holds the address (how a router makes sure the port is its own).
pub fn bind_udp(addr: SocketAddr, reuseport: bool) -> io::Result<OwnedFd> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM.nonblocking().cloexec(),
        None,
    )?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    // Large buffers absorb bursts; the kernel caps them at net.core.*mem_max, which is fine.
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The address a socket is bound to (to learn the port after binding port 0).
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    SockRef::from(fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("unknown address family"))
}

/// Writes `addr` into `storage`; returns the length to pass to the kernel.
pub fn write_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads an IPv4 or IPv6 address written by the kernel.
pub fn read_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Reads a socket address from raw bytes (as io_uring's RecvMsgOut hands them over).
pub fn read_sockaddr_bytes(bytes: &[u8]) -> Option<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let n = bytes.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: copies at most the storage's size from a valid slice into it.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut storage as *mut _ as *mut u8, n);
    }
    read_sockaddr(&storage)
}

/// An eventfd that wakes a shard sleeping in poll(2) or io_uring.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd(2); the result is checked before use.
        let raw = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) still means "awake".
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Resets the counter so the next poll sleeps again.
    pub fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (already clear) is fine.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut value as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Blocks `signals` in this thread (and the threads it spawns afterwards), so that they can be
/// received synchronously with [`wait_signal`].
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is an initialised sigset; the old mask is not needed.
    let ret = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset touches it.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Waits up to `timeout` for one of the (blocked) `signals`.
pub fn wait_signal(signals: &[libc::c_int], timeout: Duration) -> Option<libc::c_int> {
    let set = sigset(signals);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; siginfo is not requested.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// The calling thread's kernel id (as in /proc/PID/task/TID), for per-thread CPU accounting.
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Raises the soft limit on open descriptors to the hard one (a process starts with a soft
/// limit of 1,024 whatever the hard one allows); returns the limit now in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: an all-zero rlimit is a valid value (two integers).
    let mut limit: libc::rlimit = unsafe { zeroed() };
    // SAFETY: `limit` is a live local the call writes into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a live local the call only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// 8 bytes from the kernel's random source (seeds S2S ids and hash keys).
pub fn random_u64() -> u64 {
    let mut value = 0u64;
    // SAFETY: writes at most 8 bytes into a live u64.
    let n = unsafe { libc::getrandom(&mut value as *mut u64 as *mut libc::c_void, 8, 0) };
    if n != 8 {
        // getrandom cannot fail for 8 bytes once the pool is initialised; fall back to the
        // clock and address-space randomness rather than refuse to start.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        value = t ^ (&value as *const u64 as u64).rotate_left(32);
    }
    value
}

/// The local time of day now, as `hh:mm:ss.uuuuuu` (the prefix of the group log lines).
pub fn local_time_of_day() -> arrayvec::ArrayString<15> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer).
    let mut tm: libc::tm = unsafe { zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the thread-safe variant and
    // writes only into `tm`.
    let ok = !unsafe { libc::localtime_r(&secs, &mut tm) }.is_null();
    let (h, m, s) = if ok {
        (tm.tm_hour, tm.tm_min, tm.tm_sec)
    } else {
        let day = now.as_secs() % 86_400;
        (
            (day / 3600) as i32,
            (day / 60 % 60) as i32,
            (day % 60) as i32,
        )
    };
    let mut out = arrayvec::ArrayString::new();
    let _ = std::fmt::Write::write_fmt(
        &mut out,
        format_args!("{h:02}:{m:02}:{s:02}.{:06}", now.subsec_micros()),
    );
    out
}
