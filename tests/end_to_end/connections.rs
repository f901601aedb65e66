//! TCP listeners under a descriptor flood, against a real router whose descriptors are
//! limited the way an operator limits them (`ulimit`): each listener has its own share, so a
//! flood of connections to WebSocket leaves the mailbox and the metrics endpoint working; one
//! address holds a few connections at most; a connection that never finishes its handshake is
//! closed at the deadline; every refusal is counted and exported.

use crate::mailbox::data_dir;
use crate::support::{free_port, free_tcp_port, Router, WAIT};
use crate::web::{connect, http_get, next_event};

use chat_router::gate::{Budgets, MAILBOX_PER_IP};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection from `ip` (any address of 127.0.0.0/8) that sends nothing.
fn silent(ip: [u8; 4], port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    socket.into()
}

/// One counter of the scrape: the value of the line that begins with `series`.
fn metric(scrape: &str, series: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {scrape}"))
}

fn refused(listener: &str, reason: &str) -> String {
    format!("chat_router_connections_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}")
}

/// Scrapes until `done` holds for the scrape (the router took every connection in), within
/// the wait.
fn scrape_until(port: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = http_get(port, "/metrics");
        if done(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_flood_of_connections_to_one_listener_starves_no_other() {
    let dir = data_dir("descriptors");
    let (ws, mailbox, metrics) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let (ws_addr, mailbox_addr, metrics_addr) = (
        format!("127.0.0.1:{ws}"),
        format!("127.0.0.1:{mailbox}"),
        format!("127.0.0.1:{metrics}"),
    );
    // A soft limit of 200 under a hard one of 400: the router raises it to 400 and shares that.
    let (hard, soft) = (400, 200);
    let budgets = Budgets::from_limit(hard);
    let mut router = Router::start_with_nofile(
        free_port(),
        &[
            "--ws",
            &ws_addr,
            "--mailbox",
            &mailbox_addr,
            "--data-dir",
            dir.to_str().unwrap(),
            "--metrics",
            &metrics_addr,
            "--handshake-timeout",
            "2s",
            "--cores",
            "1",
        ],
        hard,
        soft,
    );
    router.wait_for_line("mailbox on", WAIT);

    // More silent connections to WebSocket than its budget, from two addresses: each beyond the
    // budget takes the place of the oldest still in its handshake, so the listener never holds
    // more than its share, and a browser still gets in while the flood holds.
    let flood = budgets.web + 20;
    let held: Vec<TcpStream> = (0..flood)
        .map(|i| silent([127, 0, 1, 1 + (i % 2) as u8], ws))
        .collect();
    let accepted = "chat_router_connections_accepted_total{listener=\"web\"}";
    let scrape = scrape_until(metrics, |s| metric(s, accepted) >= flood as u64);
    assert_eq!(metric(&scrape, &refused("web", "evicted")), 20);
    assert_eq!(metric(&scrape, &refused("web", "budget")), 0);
    let mut browser = connect(ws, true);
    assert_eq!(next_event(&mut browser)["type"], "welcome");
    // The mailbox has descriptors of its own: it answers.
    let mut c = TcpStream::connect(("127.0.0.1", mailbox)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"REGISTER\0amy\0").unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, [0]);

    // One address holds at most its share of the mailbox's connections.
    let mine: Vec<TcpStream> = (0..MAILBOX_PER_IP + 5)
        .map(|_| silent([127, 0, 2, 1], mailbox))
        .collect();
    let per_ip = refused("mailbox", "per_ip");
    let scrape = scrape_until(metrics, |s| metric(s, &per_ip) >= 5);
    assert_eq!(metric(&scrape, &per_ip), 5);

    // Holding the mailbox's every connection from many addresses locks no one out: a real
    // request takes the place of the oldest silent one.
    let many: Vec<TcpStream> = (0..budgets.mailbox)
        .map(|i| silent([127, 0, 3 + (i / 200) as u8, 1 + (i % 200) as u8], mailbox))
        .collect();
    let accepted = "chat_router_connections_accepted_total{listener=\"mailbox\"}";
    let held_in_all = (1 + MAILBOX_PER_IP + budgets.mailbox) as u64;
    scrape_until(metrics, |s| metric(s, accepted) >= held_in_all);
    let mut c = TcpStream::connect(("127.0.0.1", mailbox)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"REGISTER\0bea\0").unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, [0], "answered while the mailbox's share was held");
    let scrape = http_get(metrics, "/metrics");
    assert!(metric(&scrape, &refused("mailbox", "evicted")) >= 1);

    // The flood's connections never finished a handshake: those left are closed at the
    // deadline.
    let timeouts =
        "chat_router_connections_refused_total{listener=\"web\",reason=\"handshake_timeout\"}";
    let left = budgets.web as u64 - 1; // the browser took one place
    let scrape = scrape_until(metrics, |s| metric(s, timeouts) >= left);
    assert_eq!(metric(&scrape, timeouts), left);
    // The browser, which finished its handshake, was neither evicted nor timed out.
    browser
        .send(tungstenite::Message::Text(
            r#"{"type":"nick","name":"still-here"}"#.into(),
        ))
        .unwrap();
    assert_eq!(next_event(&mut browser)["name"], "still-here");
    drop((held, mine, many));
    let (_, output) = router.interrupt();
    let report = output.iter().find(|l| l.starts_with("web:")).unwrap();
    assert!(report.contains(" evicted=21 "), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
