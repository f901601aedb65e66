//! Hostile traffic against real `router` processes on loopback: datagrams with forged source
//! addresses (a raw socket, so these tests need root or CAP_NET_RAW, as CI has) that would make
//! two servers answer each other forever, and a flood of spoofed logins from one address while
//! a real user chats.

use crate::support;

use crate::spoof::Spoofer;
use chat_router::proto::duckchat;
use std::net::SocketAddrV4;
use support::{free_port, say_text, Client, Router};

const MATRIX: [(&str, &str); 2] = [("1", "mmsg"), ("2", "uring")];

fn v4(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new([127, 0, 0, 1].into(), port)
}

fn datagram(kind: i32, len: usize, text: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; len];
    d[..4].copy_from_slice(&kind.to_le_bytes());
    d[4..4 + text.len()].copy_from_slice(text);
    d
}

/// Each of these, forged from one router to another (or to itself), gets at most one answer,
/// and the answer none.
fn reply_loop_probes(cores: &str, io: &str) {
    let flags = ["--cores", cores, "--io", io, "--stats-every", "100ms"];
    let (pa, pb) = (free_port(), free_port());
    let mut a = Router::start(pa, &[], &flags);
    let mut b = Router::start(pb, &[], &flags);
    let mut spoofer = Spoofer::new().expect("raw sockets need root or CAP_NET_RAW");
    let probes: Vec<Vec<u8>> = vec![
        b"x".to_vec(),
        b"/nick a-nick-long-enough-for-its-answer-to-be-sent".to_vec(),
        b"-ERR You are not in a chat room".to_vec(),
        b"+OK You are now in chat room #3".to_vec(),
        b"<mallory> hello".to_vec(),
        datagram(duckchat::SAY, duckchat::SAY_LEN, b"Common"),
        datagram(duckchat::LEAVE, duckchat::TXT_ERROR_LEN, b"Not logged in"),
        datagram(42, 4, b""),
    ];
    for probe in &probes {
        spoofer.send(v4(pa), v4(pb), probe).unwrap();
        spoofer.send(v4(pb), v4(pa), probe).unwrap();
        spoofer.send(v4(pa), v4(pa), probe).unwrap();
    }
    // Then each logged in as the other's client, and a TXT_ERROR-shaped LEAVE to start them.
    spoofer
        .send(v4(pa), v4(pb), &datagram(duckchat::LOGIN, 36, b"a"))
        .unwrap();
    spoofer
        .send(v4(pb), v4(pa), &datagram(duckchat::LOGIN, 36, b"b"))
        .unwrap();
    let leave = datagram(duckchat::LEAVE, duckchat::TXT_ERROR_LEN, b"Not logged in");
    spoofer.send(v4(pa), v4(pb), &leave).unwrap();
    let received = a.quiet_datagrams_in() + b.quiet_datagrams_in();
    let sent = 3 * probes.len() as u64 + 3;
    // At most one answer per forged probe, and the error exchange stops after 32 each way.
    assert!(
        received <= 2 * sent + 2 * 32,
        "{received} datagrams for {sent} forged ones"
    );
    let (status, _) = a.interrupt();
    assert!(status.success());
    let (status, _) = b.interrupt();
    assert!(status.success());
}

/// Forged logins and keep-alives from one address (about 100k datagrams/s, up to 300,000 logins)
/// while a real user, from another, logs in and chats: every one of its messages comes back.
/// The user comes once the flood has sent 10,000 logins (far past the 1,024 sessions one address
/// may hold on a shard), and the flood lasts as long as the user chats, and no longer.
fn login_flood(cores: &str, io: &str) {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    const BEFORE_THE_USER: u32 = 10_000;
    let router = Router::start(free_port(), &[], &["--cores", cores, "--io", io]);
    let SocketAddr::V4(target) = router.addr() else {
        unreachable!("IPv4")
    };
    let mut spoofer = Spoofer::new().expect("raw sockets need root or CAP_NET_RAW");
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let forged = std::sync::Arc::new(AtomicU32::new(0));
    let (user_done, progress) = (done.clone(), forged.clone());
    let flood = std::thread::spawn(move || {
        for i in 0..300_000u32 {
            if done.load(Ordering::Relaxed) {
                return i;
            }
            forged.store(i, Ordering::Relaxed);
            let from = SocketAddrV4::new([127, 66, 0, 1].into(), 1024 + (i % 60_000) as u16);
            // Names of their own: one name's logins would only replace each other.
            let name = format!("bot{i}");
            let _ = spoofer.send(
                from,
                target,
                &datagram(duckchat::LOGIN, 36, name.as_bytes()),
            );
            let _ = spoofer.send(from, target, &datagram(duckchat::KEEP_ALIVE, 4, b""));
            if i % 512 == 511 {
                // Paced (about 100k datagrams/s) so that it does not simply fill the socket.
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        300_000
    });
    let deadline = std::time::Instant::now() + support::WAIT;
    while progress.load(Ordering::Relaxed) < BEFORE_THE_USER {
        assert!(
            std::time::Instant::now() < deadline,
            "the flood did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let user = Client::connect(router.addr(), "amy");
    let mut echoed = 0;
    for i in 0..50 {
        let text = format!("message {i}");
        // A message lost to a full socket is said again, as a person would.
        let back = (0..5).any(|_| {
            user.say("Common", &text);
            std::iter::from_fn(|| user.recv(std::time::Duration::from_millis(500)))
                .any(|r| say_text(&r) == Some(text.as_str()))
        });
        echoed += usize::from(back);
    }
    user_done.store(true, Ordering::Relaxed);
    let forged = flood.join().unwrap();
    assert_eq!(echoed, 50);
    let (status, output) = router.interrupt();
    assert!(status.success());
    let ip_limited: u64 = output
        .iter()
        .filter_map(|l| l.split("ip_limit=").nth(1))
        .filter_map(|s| s.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        ip_limited > 0,
        "the flood hit the per-address limit: {output:?}"
    );
    assert!(
        forged < 300_000,
        "the user chatted during the flood, not after it"
    );
}

use std::net::SocketAddr;

macro_rules! matrix_tests {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(#[test]
        fn $name() {
            for (cores, io) in MATRIX {
                $body(cores, io);
            }
        })*
    };
}

matrix_tests! {
    forged_datagrams_start_no_reply_loop => reply_loop_probes,
    a_login_flood_from_one_address_locks_no_one_out => login_flood,
}
