//! The attacker of the `hostile` scenario: datagrams with forged sources across 127.0.0.0/8
//! (outside 127.0.0.0/16 and 127.1.0.0/16, where the router and the real clients live), sent
//! at a fixed rate on their own thread while the real clients chat. Three kinds, mixed by
//! weight (`--hostile-mix RANDOM,MUTATED,ABUSIVE`):
//!
//! - random: 0 to 199 random bytes;
//! - mutated: a valid DuckChat request or text line with a few bytes changed, cut or extended;
//! - abusive: valid but hostile requests: logins and keep-alives that fill the session table,
//!   JOINs of new channels, LIST and WHO aimed at the forged source, `/join` and `/nick`,
//!   lines and datagrams shaped like a server's replies, and chat lines forged from the
//!   router's own address.

use crate::spoof::Spoofer;
use chat_router::proto::duckchat::{self, Inbound, SayLayout};
use chat_router::rng::Rng;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Relative weights of the three kinds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub random: u32,
    pub mutated: u32,
    pub abusive: u32,
}

impl Mix {
    /// `R,M,A`, e.g. `1,1,2`.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let bad = || {
            format!("{text:?} is not a mix: give three weights RANDOM,MUTATED,ABUSIVE, e.g. 1,1,2")
        };
        let w: Vec<u32> = text
            .split(',')
            .map(|p| p.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        match w[..] {
            [random, mutated, abusive] if random + mutated + abusive > 0 => Ok(Mix {
                random,
                mutated,
                abusive,
            }),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{}", self.random, self.mutated, self.abusive)
    }
}

pub struct Attacker {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Attacker {
    /// Starts sending `rate` datagrams per second at `target` (whose own address it also forges).
    pub fn start(target: SocketAddrV4, rate: f64, mix: Mix, seed: u64) -> std::io::Result<Self> {
        let mut spoofer = Spoofer::new()?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::Builder::new()
            .name("attacker".into())
            .spawn(move || {
                let mut forge = Forge::new(seed, mix, target);
                let start = Instant::now();
                let mut done = 0u64;
                while !stop2.load(Ordering::Relaxed) {
                    // Open loop: catch up with the schedule, then sleep a millisecond.
                    let due = (start.elapsed().as_secs_f64() * rate) as u64;
                    while done < due && !stop2.load(Ordering::Relaxed) {
                        let (src, bytes) = forge.next();
                        let _ = spoofer.send(src, target, &bytes);
                        done += 1;
                        if done.is_multiple_of(1024) {
                            sent2.store(done, Ordering::Relaxed);
                        }
                    }
                    sent2.store(done, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })?;
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// Stops the attack; returns how many datagrams it sent.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.sent.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Makes the datagrams and their forged sources.
struct Forge {
    rng: Rng,
    mix: Mix,
    router: SocketAddrV4,
}

impl Forge {
    fn new(seed: u64, mix: Mix, router: SocketAddrV4) -> Self {
        Self {
            rng: Rng::new(seed),
            mix,
            router,
        }
    }

    /// A source in 127.2.0.0 to 127.255.255.255.
    fn source(&mut self) -> SocketAddrV4 {
        let host = self.rng.below(254 << 16) as u32 + (2 << 16);
        let ip = Ipv4Addr::from(u32::from_be_bytes([127, 0, 0, 0]) + host);
        SocketAddrV4::new(ip, 1024 + self.rng.below(60_000) as u16)
    }

    fn next(&mut self) -> (SocketAddrV4, Vec<u8>) {
        let Mix {
            random,
            mutated,
            abusive,
        } = self.mix;
        let pick = self.rng.below(u64::from(random + mutated + abusive)) as u32;
        let src = self.source();
        if pick < random {
            let len = self.rng.below(200) as usize;
            (src, (0..len).map(|_| self.rng.next_u64() as u8).collect())
        } else if pick < random + mutated {
            let mut bytes = self.valid();
            match self.rng.below(3) {
                0 if !bytes.is_empty() => {
                    let cut = self.rng.below(bytes.len() as u64) as usize;
                    bytes.truncate(cut);
                }
                1 => bytes.extend((0..self.rng.below(64)).map(|_| self.rng.next_u64() as u8)),
                _ => {
                    for _ in 0..=self.rng.below(4) {
                        if !bytes.is_empty() {
                            let i = self.rng.below(bytes.len() as u64) as usize;
                            bytes[i] = self.rng.next_u64() as u8;
                        }
                    }
                }
            }
            (src, bytes)
        } else {
            self.abusive(src)
        }
    }

    /// A well-formed request of either protocol.
    fn valid(&mut self) -> Vec<u8> {
        let channel = format!("c{}", self.rng.below(1000));
        let request = match self.rng.below(9) {
            0 => Inbound::Login { user: b"mallory" },
            1 => Inbound::Logout,
            2 => Inbound::Join {
                channel: channel.as_bytes(),
            },
            3 => Inbound::Leave {
                channel: channel.as_bytes(),
            },
            4 => Inbound::Say {
                channel: b"Common",
                text: b"spam",
            },
            5 => Inbound::List,
            6 => Inbound::Who { channel: b"Common" },
            7 => Inbound::KeepAlive,
            _ => return format!("/join {}", 1 + self.rng.below(10)).into_bytes(),
        };
        encode(request)
    }

    fn abusive(&mut self, src: SocketAddrV4) -> (SocketAddrV4, Vec<u8>) {
        let channel = format!("flood-{}", self.rng.next_u64() % 1_000_000);
        let bytes = match self.rng.below(10) {
            0 | 1 => encode(Inbound::Login { user: b"bot" }),
            2 => encode(Inbound::KeepAlive),
            3 => encode(Inbound::Join {
                channel: channel.as_bytes(),
            }),
            4 => encode(Inbound::List),
            5 => encode(Inbound::Who { channel: b"Common" }),
            6 => format!("/join {}", 1 + self.rng.below(10)).into_bytes(),
            7 => b"-ERR You are not in a chat room".to_vec(),
            8 => {
                let mut leave = vec![0u8; duckchat::TXT_ERROR_LEN];
                leave[..4].copy_from_slice(&duckchat::LEAVE.to_le_bytes());
                leave[4..17].copy_from_slice(b"Not logged in");
                leave
            }
            _ => return (self.router, b"a line from the router to itself".to_vec()),
        };
        (src, bytes)
    }
}

fn encode(request: Inbound) -> Vec<u8> {
    let mut buf = [0u8; duckchat::S2S_SAY_LEN];
    let n = request.encode(&mut buf, SayLayout::UserFirst).unwrap_or(0);
    buf[..n].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_or_say_why() {
        assert_eq!(
            Mix::parse("1, 2,3"),
            Ok(Mix {
                random: 1,
                mutated: 2,
                abusive: 3
            })
        );
        for bad in ["", "1,2", "a,b,c", "0,0,0", "1,2,3,4", "-1,2,3"] {
            assert!(Mix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_stay_out_of_the_routers_and_clients_blocks() {
        let router: SocketAddrV4 = "127.0.0.1:4000".parse().unwrap();
        let mut forge = Forge::new(
            3,
            Mix {
                random: 1,
                mutated: 1,
                abusive: 2,
            },
            router,
        );
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (src, bytes) = forge.next();
            let [a, b, ..] = src.ip().octets();
            assert_eq!(a, 127);
            assert!(b >= 2 || src == router, "{src}");
            kinds.insert(bytes.first().copied());
        }
        assert!(kinds.len() > 20, "varied datagrams");
    }
}
