//! Clusters of real `router` processes on loopback, with loadgen's proxy on the forwarding
//! addresses (delaying, reordering and, where asked, dropping server-to-server datagrams) and the
//! ordering scenario's text clients on the bind addresses, judged by the ordering checker.

use chat_router::engine::Member;
use loadgen::ordering::{self, OrderingArgs, OrderingResult};
use loadgen::proxy::{Proxy, ProxyConfig, ProxyStats, PUBLIC_MAX_IN_FLIGHT};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The router binary: built next to loadgen's by `cargo test --workspace`; built here otherwise.
fn router_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_loadgen")).with_file_name("router");
    if !path.exists() {
        let release = path.parent().is_some_and(|p| p.ends_with("release"));
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "chat-router", "--bin", "router"]);
        if release {
            build.arg("--release");
        }
        assert!(build.status().expect("run cargo").success());
    }
    path
}

/// An address nobody else will take: a port the kernel found free on a loopback IP of this
/// call's own. (A port free on 127.0.0.1 a moment ago may be handed to another test's socket
/// before the router or the proxy binds it; on an IP no other socket uses, it stays free.)
fn free_addr() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    let ip = std::net::Ipv4Addr::new(
        127,
        100 + (pid % 100) as u8,
        (n / 250 % 256) as u8,
        (n % 250) as u8 + 1,
    );
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap()
}

struct Cluster {
    routers: Vec<Child>,
    /// Every line the routers print, with the router's index.
    lines: mpsc::Receiver<(usize, String)>,
    members: Vec<Member>,
    proxy: Option<Proxy>,
    file: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &mut self.routers {
            let _ = r.kill();
            let _ = r.wait();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

impl Cluster {
    /// `n` routers in `order`, every forwarding address held by a proxy that delays each
    /// datagram up to `delay` and drops a `drop` share.
    fn start(n: usize, order: &str, delay: Duration, drop: f64) -> Cluster {
        Self::start_holding(n, order, delay, drop, PUBLIC_MAX_IN_FLIGHT)
    }

    /// As [`Cluster::start`], with a proxy that holds up to `max_in_flight` datagrams.
    fn start_holding(
        n: usize,
        order: &str,
        delay: Duration,
        drop: f64,
        max_in_flight: usize,
    ) -> Cluster {
        let mut cluster = Self::without_proxy(n, order);
        let proxy = Proxy::start(ProxyConfig {
            members: cluster.members.clone(),
            delay,
            drop,
            seed: 5,
            // As the public proxy by default: a cluster that overruns it fails the test.
            max_in_flight,
        })
        .expect("proxy binds the forwarding addresses");
        cluster.proxy = Some(proxy);
        cluster
    }

    /// `n` routers whose forwarding addresses nobody holds yet.
    fn without_proxy(n: usize, order: &str) -> Cluster {
        let members: Vec<Member> = (0..n)
            .map(|_| Member {
                forward: free_addr(),
                bind: free_addr(),
            })
            .collect();
        let text: String = members
            .iter()
            .map(|m| format!("{},{}\n", m.forward, m.bind))
            .collect();
        let file = std::env::temp_dir().join(format!(
            "chat-router-cluster-{}-{}.txt",
            std::process::id(),
            members[0].bind.port()
        ));
        std::fs::write(&file, text).unwrap();
        let binary = router_binary();
        let mut routers = Vec::new();
        let (tx, rx) = mpsc::channel();
        for i in 1..=n {
            let mut child = Command::new(&binary)
                .args(["--cores", "1", "--order", order, "--cluster"])
                .arg(&file)
                .args(["--index", &i.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start router");
            let stdout = child.stdout.take().unwrap();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send((i, line));
                }
            });
            routers.push(child);
        }
        let mut listening = 0;
        while listening < n {
            let (_, line) = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("every router prints its listening line");
            listening += usize::from(line.contains("listening on"));
        }
        Cluster {
            routers,
            lines: rx,
            members,
            proxy: None,
            file,
        }
    }

    /// Stops the routers with SIGINT and returns the counters they print: what they dropped,
    /// and what the kernel dropped at their sockets, to tell a router's loss from the machine's.
    fn stop_and_report(&mut self) -> String {
        for r in &self.routers {
            let _ = Command::new("kill")
                .args(["-INT", &r.id().to_string()])
                .status();
        }
        for r in &mut self.routers {
            let _ = r.wait();
        }
        let mut report = String::new();
        while let Ok((i, line)) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if line.contains("drops:") {
                report += &format!("router {i}: {line}\n");
            }
        }
        report
    }

    /// Fails with the ordering table, the clients' socket drops and the routers' counters
    /// unless the run was clean and delivered everything.
    fn assert_clean(&mut self, label: &str, result: &OrderingResult, total: bool) {
        let r = &result.report;
        if !r.clean(total) || r.delivered != r.expected {
            panic!(
                "{label}:\n{}{}",
                result.table(total),
                self.stop_and_report()
            );
        }
    }

    /// The proxy's counts, once stopped; it must not have failed as the public one would.
    fn proxy_stats(&mut self) -> ProxyStats {
        let stats = self.proxy.take().map(Proxy::stop).unwrap_or_default();
        assert!(
            !stats.failed,
            "the public proxy would have exited: {stats:?}"
        );
        stats
    }

    fn check(&self, clients: usize, rooms: u32, messages: u64, len: usize) -> OrderingResult {
        let result = ordering::run(&OrderingArgs {
            servers: self.members.iter().map(|m| m.bind).collect(),
            clients,
            rooms,
            messages,
            interval: Duration::from_millis(20),
            len,
            drain: Duration::from_secs(30),
            seed: 3,
        })
        .expect("ordering run");
        assert_eq!(result.report.sent, clients as u64 * messages);
        result
    }
}

#[test]
fn three_servers_in_every_mode_behind_a_reordering_proxy() {
    for order in ["unordered", "fifo", "total"] {
        let mut cluster = Cluster::start(3, order, Duration::from_millis(15), 0.0);
        let result = cluster.check(30, 3, 10, 40);
        cluster.assert_clean(order, &result, order == "total");
        cluster.proxy_stats();
    }
}

#[test]
fn ten_servers_and_250_clients_in_total_order() {
    // Ten servers still put up to about 2,500 datagrams at once through the proxy (about 69 per
    // message), where the public proxy exits at 1,000: issue 14 is to cut the datagrams per
    // message. Until then this run gets a proxy that holds 5,000.
    let mut cluster = Cluster::start_holding(10, "total", Duration::from_millis(10), 0.0, 5_000);
    let result = cluster.check(250, 10, 4, 40);
    // Rooms of 20 and 30 members (250 clients over 10 servers and 10 rooms).
    assert_eq!(result.report.expected, 4 * (5 * 30 * 30 + 5 * 20 * 20));
    cluster.assert_clean("total", &result, true);
    cluster.proxy_stats();
}

#[test]
fn fifo_and_total_order_survive_two_percent_loss() {
    for order in ["fifo", "total"] {
        let mut cluster = Cluster::start(3, order, Duration::from_millis(5), 0.02);
        // 1000-byte messages: every one crosses between servers as two fragments.
        let result = cluster.check(30, 3, 10, 1000);
        cluster.assert_clean(order, &result, order == "total");
        let stats = cluster.proxy_stats();
        assert!(stats.dropped > 0, "{stats:?}");
        assert_eq!(stats.truncated, 0, "no server datagram exceeds 999 bytes");
    }
}

/// A child process killed when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_proxy_and_ordering_commands_work_from_the_command_line() {
    let cluster = Cluster::without_proxy(3, "fifo");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["proxy", "--delay", "5ms", "--cluster"])
        .arg(&cluster.file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start loadgen proxy");
    let stdout = proxy.stdout.take().unwrap();
    let _proxy = Reaped(proxy);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("proxy line");
    assert!(
        line.starts_with("proxy: on 3 forwarding address(es)"),
        "{line}"
    );

    let (stdout, record) = ordering_run(
        &cluster,
        &[
            "--order",
            "fifo",
            "--clients",
            "12",
            "--rooms",
            "2",
            "--messages",
            "5",
        ],
    );
    assert!(stdout.contains("verdict            clean"), "{stdout}");
    assert!(record.clean);
    assert_eq!((record.servers, record.sent), (3, 60));
    assert_eq!(record.delivered, record.expected);

    let bad = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["ordering", "--cluster", "/nonexistent/cluster.txt"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot read cluster file /nonexistent/cluster.txt"),
        "{err}"
    );
}

#[test]
fn the_ordering_command_runs_its_own_proxy_and_counts_datagrams_per_message() {
    let cluster = Cluster::without_proxy(3, "total");
    let (stdout, record) = ordering_run(
        &cluster,
        &[
            "--order",
            "total",
            "--clients",
            "12",
            "--rooms",
            "2",
            "--messages",
            "5",
            "--proxy-delay",
            "5ms",
        ],
    );
    assert!(stdout.contains("between servers"), "{stdout}");
    let proxy = record.proxy.expect("the proxy's counts");
    // Total order across three servers: each message goes to two peers, with proposals and
    // agreements; far more than one datagram per message, far fewer than a thousand.
    assert!(
        proxy.per_message > 2.0 && proxy.per_message < 1000.0,
        "{proxy:?}"
    );
    assert!(!proxy.failed && proxy.most_in_flight > 0, "{proxy:?}");
    assert_eq!(record.delivered, record.expected);
}

/// `loadgen ordering ARGS --interval 10ms` against the cluster, which must succeed: what it
/// printed, and the record it wrote.
fn ordering_run(cluster: &Cluster, args: &[&str]) -> (String, loadgen::ordering::OrderingRecord) {
    let dir = std::env::temp_dir().join(format!(
        "chat-router-ordering-{}-{}",
        std::process::id(),
        cluster.members[0].bind.port()
    ));
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("ordering")
        .args(args)
        .args(["--interval", "10ms", "--cluster"])
        .arg(&cluster.file)
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("run loadgen ordering");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a JSON result");
    let record = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (stdout, record)
}
