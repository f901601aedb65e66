//! The only `unsafe` in loadgen: two process settings and two socket calls the standard library
//! does not offer.

/// Raises the soft limit on open files to `wanted` (or to the hard limit, if lower) and
/// returns the limit now in force.
pub fn raise_nofile_limit(wanted: u64) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if wanted > lim.rlim_max {
        // Root (CAP_SYS_RESOURCE) may raise the hard limit too; others keep theirs.
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        // SAFETY: `raised` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(wanted);
        }
    }
    let target = wanted.min(lim.rlim_max);
    if target > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the soft limit does not exceed the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = target;
    }
    Ok(lim.rlim_cur)
}

/// Asks the kernel to wake this thread's timed sleeps within `ns` of the deadline (the default
/// slack of 50 us would show up in the pacer's accuracy).
pub fn set_timer_slack(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long by value and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

/// A TCP connection to `target` from the loopback address `local` (the standard library
/// cannot bind before it connects): simulated browsers come from many addresses, as real ones
/// do, and stay within the router's sessions per address.
pub fn tcp_connect_from(
    local: std::net::Ipv4Addr,
    target: std::net::SocketAddrV4,
) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: plain socket(2); the result is checked before use.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns; the stream closes it.
    let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let addr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let from = addr(local, 0);
    // SAFETY: `from` is a valid sockaddr_in of `len` bytes, alive across the call.
    check(unsafe { libc::bind(fd, &from as *const _ as *const libc::sockaddr, len) })?;
    let to = addr(*target.ip(), target.port());
    // A signal may interrupt a blocking connect, which then goes on by itself: ask again until
    // it says it is connected (bounded: 1,000 tries a millisecond apart).
    for _ in 0..1000 {
        // SAFETY: `to` is a valid sockaddr_in of `len` bytes, alive across the call.
        match check(unsafe { libc::connect(fd, &to as *const _ as *const libc::sockaddr, len) }) {
            Ok(_) => return Ok(stream),
            Err(e) => match e.raw_os_error() {
                Some(libc::EISCONN) => return Ok(stream),
                Some(libc::EINTR | libc::EALREADY | libc::EINPROGRESS) => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                _ => return Err(e),
            },
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

/// How long ago the kernel received the datagram last read from the UDP socket `fd`
/// (SIOCGSTAMPNS). The first call, which may come before any datagram, switches the kernel's
/// receive timestamps on for the socket and fails with `NotFound`.
pub fn age_of_last_datagram(fd: std::os::fd::RawFd) -> std::io::Result<std::time::Duration> {
    // asm-generic/sockios.h (SIOCGSTAMPNS_OLD: a timespec of the native time_t); the libc
    // crate does not name it.
    const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: SIOCGSTAMPNS writes one timespec, which `ts` is, and keeps no pointer to it.
    if unsafe { libc::ioctl(fd, SIOCGSTAMPNS as _, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let stamp = std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(now.saturating_sub(stamp))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_datagram_that_waited_in_the_socket_is_as_old_as_its_wait() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            super::age_of_last_datagram(rx.as_raw_fd()).is_err(),
            "nothing read yet"
        );
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wait = Duration::from_millis(30);
        // The kernel switches its receive timestamps on a moment after the first socket asks
        // (a deferred work item); until then a datagram is stamped as it is read, age zero.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let age = loop {
            tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
            // The wait is what is measured here.
            std::thread::sleep(wait);
            let mut buf = [0u8; 8];
            rx.recv_from(&mut buf).unwrap();
            let age = super::age_of_last_datagram(rx.as_raw_fd()).unwrap();
            if age >= wait || std::time::Instant::now() > deadline {
                break age;
            }
        };
        assert!(age >= wait, "{age:?}");
        assert!(age < Duration::from_secs(60), "{age:?}");
    }
}
