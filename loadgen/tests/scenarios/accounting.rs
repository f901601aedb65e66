//! loadgen's loss, duplicate and reorder accounting against a reflector that misbehaves on
//! purpose and keeps score of what it did: the run must count exactly that.

use loadgen::clients::Clients;
use loadgen::phase::{self, PhaseSpec};
use loadgen::plan::{client_name, Membership, Plan};
use loadgen::stamp::Stamp;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
struct Score {
    delivered: u64,
    dropped: u64,
    duplicated: u64,
    /// Sent after a later message of the same sender to the same receiver.
    reordered: u64,
    /// Still held back when the reflector stopped: never delivered.
    held_at_end: u64,
}

fn txt_say(channel: &str, user: &str, text: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 132];
    b[..4].copy_from_slice(&0i32.to_le_bytes());
    b[4..4 + channel.len()].copy_from_slice(channel.as_bytes());
    b[36..36 + user.len()].copy_from_slice(user.as_bytes());
    b[68..68 + text.len()].copy_from_slice(text);
    b
}

/// For the delivery of message `seq` from `sender` to `receiver`: drop some, duplicate some,
/// hold some back until the pair's next message has gone out.
fn faulty_reflector(
    sock: UdpSocket,
    plan: Plan,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> Score {
    let index: HashMap<SocketAddr, u32> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, i as u32))
        .collect();
    let mut held: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    let mut score = Score::default();
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, src)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let (Some(&sender), true) = (index.get(&src), n >= 100) else {
            continue;
        };
        if i32::from_le_bytes(buf[..4].try_into().unwrap()) != 4 {
            continue; // only SAYs are reflected
        }
        let text_end = buf[36..100].iter().position(|&b| b == 0).unwrap_or(64);
        let stamp = Stamp::parse(&buf[36..36 + text_end]).expect("our own stamp");
        let channel = plan.channel_of[sender as usize];
        let out = txt_say(
            &format!("c{channel}"),
            &client_name(sender),
            &buf[36..36 + text_end],
        );
        for &receiver in &plan.members[channel as usize] {
            let dst = addrs[receiver as usize];
            let pair = (receiver, sender);
            let fate = (stamp.seq + u64::from(receiver)) % 10;
            match fate {
                3 => score.dropped += 1,
                5 => {
                    sock.send_to(&out, dst).unwrap();
                    sock.send_to(&out, dst).unwrap();
                    score.delivered += 1;
                    score.duplicated += 1;
                }
                7 if !held.contains_key(&pair) => {
                    held.insert(pair, out.clone());
                }
                _ => {
                    sock.send_to(&out, dst).unwrap();
                    score.delivered += 1;
                }
            }
            if fate != 7 {
                if let Some(late) = held.remove(&pair) {
                    sock.send_to(&late, dst).unwrap();
                    score.delivered += 1;
                    score.reordered += 1;
                }
            }
        }
    }
    score.held_at_end = held.len() as u64;
    score
}

#[test]
fn loss_duplicates_and_reordering_are_counted_exactly() {
    let plan = Plan::new(60, Membership::Fixed { members: 6 }, 1);
    let clients = Clients::bind(plan.clients(), 0..0).unwrap();
    clients.make_nonblocking();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sock.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reflector = {
        let addrs = clients.first(plan.clients()).unwrap().1.to_vec();
        let (plan, stop) = (plan.clone(), stop.clone());
        std::thread::spawn(move || faulty_reflector(sock, plan, addrs, stop))
    };
    let spec = PhaseSpec {
        label: "faults",
        target,
        rate: Some(3000.0),
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
        receivers: 2,
        neighbors: 0,
        churn: None,
        cpu_of: None,
        quiet: true,
    };
    let browsers = loadgen::web::Browsers::none(plan.clients());
    let result = phase::run(&spec, clients.sockets(), &browsers, &plan).unwrap();
    stop.store(true, Ordering::Relaxed);
    let score = reflector.join().unwrap();

    let t = result.tally;
    assert!(
        score.dropped > 50 && score.duplicated > 50 && score.reordered > 50,
        "{score:?}"
    );
    assert_eq!(
        t.expected,
        score.delivered + score.dropped + score.held_at_end
    );
    assert_eq!(
        t.lost(),
        score.dropped + score.held_at_end,
        "{t:?} {score:?}"
    );
    assert_eq!(t.duplicates, score.duplicated, "{t:?} {score:?}");
    assert_eq!(t.reordered, score.reordered, "{t:?} {score:?}");
    assert_eq!(t.unique, score.delivered, "{t:?} {score:?}");
    assert_eq!(t.foreign, 0);
}
