//! The simulated clients' sockets, and getting every client logged in and joined.
//!
//! Each client has its own UDP socket, so the router sees it as a distinct address, as it would
//! a real client; clients are spread over loopback addresses ([`client_ip`]) as real ones come
//! from many hosts, which keeps them within the router's sessions-per-IP limit. Setup goes channel by channel, in chunks, and checks
//! with WHO that every member really is in: a LOGIN or JOIN lost to a full socket buffer is
//! found and sent again, so the measured phase starts from a known membership.

use crate::plan::{channel_name, client_name, Plan};
use crate::LoadError;
use chat_router::proto::duckchat::{self, Inbound, Outbound, SayLayout};
use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::time::{Duration, Instant};

/// Members logged in and joined between two WHO checks (keeps bursts under socket buffers).
const CHUNK: usize = 128;
/// How long to wait for the rest of a WHO answer.
const WHO_WAIT: Duration = Duration::from_millis(200);
const ATTEMPTS: usize = 20;
/// Pauses every so many setup datagrams, so that bursts stay under the router's socket buffer.
fn pace(i: usize) {
    if i % 64 == 63 {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Clients that share one source IP address, well under the router's default sessions per IP.
const CLIENTS_PER_IP: usize = 100;

/// The loopback address of client `i`: 127.1.0.0 and up (all of 127.0.0.0/8 is this host's).
pub fn client_ip(i: usize) -> std::net::Ipv4Addr {
    let host = (i / CLIENTS_PER_IP) as u32;
    std::net::Ipv4Addr::from(u32::from_be_bytes([127, 1, 0, 0]) + host)
}

/// Descriptors kept free for everything that is not a client socket.
const SPARE_FDS: u64 = 256;

/// Every simulated party's UDP socket, by index: clients, then neighbor servers, then churn
/// clients; browsers (a range of the clients) have none (they hold a TCP connection instead).
pub struct Clients {
    sockets: Vec<UdpSocket>,
    addrs: Vec<SocketAddr>,
    browsers: Range<usize>,
}

/// The sockets by index, skipping the browsers'.
#[derive(Clone, Copy)]
pub struct Sockets<'a> {
    sockets: &'a [UdpSocket],
    browsers: &'a Range<usize>,
}

impl<'a> Sockets<'a> {
    /// Sockets without browsers among them.
    pub fn plain(sockets: &'a [UdpSocket]) -> Self {
        Self {
            sockets,
            browsers: &(0..0),
        }
    }

    /// How many parties, browsers included.
    pub fn len(&self) -> usize {
        self.sockets.len() + self.browsers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The socket of party `i`, which is not a browser.
    pub fn get(&self, i: usize) -> &'a UdpSocket {
        &self.sockets[physical(self.browsers, i)]
    }
}

/// Where party `i` (not a browser) is in a list that skips the browsers.
fn physical(browsers: &Range<usize>, i: usize) -> usize {
    debug_assert!(!browsers.contains(&i), "browser {i} has no UDP socket");
    match i >= browsers.end {
        true => i - browsers.len(),
        false => i,
    }
}

/// Raises the open-file limit for `clients` sockets and a few more, or says why it cannot.
pub fn reserve_descriptors(clients: usize) -> Result<(), LoadError> {
    let wanted = clients as u64 + SPARE_FDS;
    let limit = crate::io::raise_nofile_limit(wanted).map_err(LoadError::Limit)?;
    if limit < wanted {
        return Err(LoadError::TooFewDescriptors {
            clients,
            limit,
            wanted,
        });
    }
    Ok(())
}

impl Clients {
    /// One socket for each of `n` parties but the `browsers`; the caller has reserved the
    /// descriptors ([`reserve_descriptors`]).
    pub fn bind(n: usize, browsers: Range<usize>) -> Result<Clients, LoadError> {
        let mut sockets = Vec::with_capacity(n);
        let mut addrs = Vec::with_capacity(n);
        for i in (0..n).filter(|i| !browsers.contains(i)) {
            let s = UdpSocket::bind((client_ip(i), 0)).map_err(LoadError::Socket)?;
            addrs.push(s.local_addr().map_err(LoadError::Socket)?);
            sockets.push(s);
        }
        Ok(Clients {
            sockets,
            addrs,
            browsers,
        })
    }

    pub fn sockets(&self) -> Sockets<'_> {
        Sockets {
            sockets: &self.sockets,
            browsers: &self.browsers,
        }
    }

    fn socket(&self, i: usize) -> &UdpSocket {
        self.sockets().get(i)
    }

    /// The address of party `i`, which is not a browser.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[physical(&self.browsers, i)]
    }

    /// The first `n` clients' sockets and addresses, when none of them is a browser.
    pub fn first(&self, n: usize) -> Option<(&[UdpSocket], &[SocketAddr])> {
        (self.browsers.is_empty() || self.browsers.start >= n)
            .then(|| (&self.sockets[..n], &self.addrs[..n]))
    }

    fn send(&self, client: u32, target: SocketAddr, request: Inbound) {
        let mut buf = [0u8; 128];
        if let Ok(n) = request.encode(&mut buf, SayLayout::UserFirst) {
            // A lost request is found by the WHO check and sent again.
            let _ = self.socket(client as usize).send_to(&buf[..n], target);
        }
    }

    fn login_and_join(&self, client: u32, plan: &Plan, target: SocketAddr) {
        let name = client_name(client);
        let channel = channel_name(plan.channel_of[client as usize]);
        self.send(
            client,
            target,
            Inbound::Login {
                user: name.as_bytes(),
            },
        );
        self.send(
            client,
            target,
            Inbound::Join {
                channel: channel.as_bytes(),
            },
        );
    }

    /// Logs every client in and joins it to its channel on the router at `target`.
    /// Logs in and joins every UDP client (those before `first_browser`; browsers join over
    /// their own connections).
    pub fn join_all(
        &self,
        plan: &Plan,
        target: SocketAddr,
        first_browser: usize,
    ) -> Result<(), LoadError> {
        for (channel, members) in plan.members.iter().enumerate() {
            let members: Vec<u32> = members
                .iter()
                .copied()
                .filter(|&c| (c as usize) < first_browser)
                .collect();
            let mut joined = 0;
            for chunk in members.chunks(CHUNK) {
                for &c in chunk {
                    self.login_and_join(c, plan, target);
                }
                joined += chunk.len();
                self.confirm(channel as u32, &members[..joined], plan, target)?;
            }
        }
        self.drain();
        Ok(())
    }

    /// Asks WHO from the channel's first member until all of `wanted` are listed, sending
    /// LOGIN and JOIN again for whoever is missing.
    fn confirm(
        &self,
        channel: u32,
        wanted: &[u32],
        plan: &Plan,
        target: SocketAddr,
    ) -> Result<(), LoadError> {
        let name = channel_name(channel);
        let asker = wanted[0];
        let sock = self.socket(asker as usize);
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(LoadError::Socket)?;
        for _ in 0..ATTEMPTS {
            self.send(
                asker,
                target,
                Inbound::Who {
                    channel: name.as_bytes(),
                },
            );
            let listed = self.read_who(sock, name.as_bytes(), wanted.len());
            let missing: Vec<u32> = wanted
                .iter()
                .copied()
                .filter(|c| !listed.contains(client_name(*c).as_bytes()))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            for c in missing {
                self.login_and_join(c, plan, target);
            }
        }
        Err(LoadError::Setup(format!(
            "channel {name}: not every member joined after {ATTEMPTS} attempts (is {target} a DuckChat router?)"
        )))
    }

    /// The names in WHO answers for `channel` that arrive within [`WHO_WAIT`].
    fn read_who(&self, sock: &UdpSocket, channel: &[u8], expect: usize) -> HashSet<Vec<u8>> {
        let mut listed = HashSet::new();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + WHO_WAIT;
        while listed.len() < expect && Instant::now() < deadline {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            if let Ok(Outbound::Who { channel: c, users }) = duckchat::decode_outbound(&buf[..n]) {
                if c == channel {
                    listed.extend(users.iter().map(<[u8]>::to_vec));
                }
            }
        }
        listed
    }

    /// Has each neighbor server (sockets `plan.clients()..`) send S2S_JOIN for every channel,
    /// and confirms it: a SAY in each channel must reach every neighbor as an S2S_SAY. Lost
    /// JOINs are sent again.
    pub fn subscribe_neighbors(
        &self,
        plan: &Plan,
        neighbors: usize,
        target: SocketAddr,
    ) -> Result<(), LoadError> {
        let n = plan.clients();
        let names: Vec<String> = (0..plan.members.len() as u32).map(channel_name).collect();
        let mut missing: Vec<(usize, u32)> = (0..neighbors)
            .flat_map(|nb| (0..names.len() as u32).map(move |c| (nb, c)))
            .collect();
        self.make_nonblocking();
        for _ in 0..ATTEMPTS {
            for (i, &(nb, c)) in missing.iter().enumerate() {
                let join = Inbound::S2sJoin {
                    channel: names[c as usize].as_bytes(),
                };
                self.send((n + nb) as u32, target, join);
                pace(i);
            }
            let probed: std::collections::BTreeSet<u32> = missing.iter().map(|p| p.1).collect();
            for (i, &c) in probed.iter().enumerate() {
                let say = Inbound::Say {
                    channel: names[c as usize].as_bytes(),
                    text: b"probe",
                };
                let Some(&prober) = plan.members[c as usize]
                    .iter()
                    .find(|&&m| !self.browsers.contains(&(m as usize)))
                else {
                    return Err(LoadError::Setup(format!(
                        "channel {c} has only browsers: the neighbors' subscriptions are probed from a UDP client"
                    )));
                };
                self.send(prober, target, say);
                pace(i);
            }
            let mut seen = HashSet::new();
            let deadline = Instant::now() + WHO_WAIT;
            let mut buf = [0u8; 2048];
            while seen.len() < missing.len() && Instant::now() < deadline {
                let mut got = false;
                for nb in 0..neighbors {
                    while let Ok(len) = self.socket(n + nb).recv(&mut buf) {
                        got = true;
                        if let Ok(Inbound::S2sSay(say)) =
                            duckchat::decode_inbound(&buf[..len], SayLayout::UserFirst)
                        {
                            let name = String::from_utf8_lossy(say.channel);
                            if let Some(c) = name.strip_prefix('c').and_then(|c| c.parse().ok()) {
                                seen.insert((nb, c));
                            }
                        }
                    }
                }
                if !got {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            missing.retain(|p| !seen.contains(p));
            if missing.is_empty() {
                self.drain();
                return Ok(());
            }
        }
        Err(LoadError::Setup(format!(
            "{} neighbor subscriptions not confirmed after {ATTEMPTS} attempts",
            missing.len()
        )))
    }

    /// Discards whatever setup left in the sockets (errors for requests sent twice).
    fn drain(&self) {
        self.make_nonblocking();
        let mut buf = [0u8; 2048];
        for s in &self.sockets {
            while s.recv(&mut buf).is_ok() {}
        }
    }

    /// The measured phase waits with epoll and reads until a socket would block.
    pub fn make_nonblocking(&self) {
        for s in &self.sockets {
            // Cannot fail on a bound UDP socket.
            let _ = s.set_nonblocking(true);
        }
    }
}
