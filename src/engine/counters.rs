//! Per-shard counters. Each shard is the only writer of its own counters (a relaxed load and
//! store, no locked instruction); any thread may read them for stats lines and the shutdown report.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Only the owning shard calls this, so load + store cannot lose an increment.
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn inc(&self) {
        self.add(1)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// For counts kept elsewhere (the kernel's) and copied in by their only reader.
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed)
    }
}

/// A histogram of durations with fixed buckets, written by one thread (like [`Counter`]) and
/// read by any: bucket i counts durations up to 250 ns x 2^i, the last one everything longer.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [Counter; Histogram::BUCKETS],
    sum_ns: Counter,
}

impl Histogram {
    pub const BUCKETS: usize = 16;
    const FIRST_NS: u64 = 250;

    pub fn record(&self, d: std::time::Duration) {
        let ns = d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let i = (0..Self::BUCKETS - 1)
            .find(|&i| ns <= Self::FIRST_NS << i)
            .unwrap_or(Self::BUCKETS - 1);
        self.buckets[i].inc();
        self.sum_ns.add(ns);
    }

    /// The upper bound of each bucket but the last (which has none), in seconds.
    pub fn bounds() -> impl Iterator<Item = f64> {
        (0..Self::BUCKETS - 1).map(|i| (Self::FIRST_NS << i) as f64 / 1e9)
    }

    /// Counts per bucket, and the sum of all durations in nanoseconds.
    pub fn snapshot(&self) -> ([u64; Histogram::BUCKETS], u64) {
        (
            std::array::from_fn(|i| self.buckets[i].get()),
            self.sum_ns.get(),
        )
    }
}

/// Why a datagram or a message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// An S2S datagram from an address that is not a configured neighbor.
    NotNeighbor,
    /// A bounded queue between shards was full.
    QueueFull,
    /// The kernel refused a send (a full socket send buffer included: both backends drop and
    /// count rather than stall the shard).
    SendFailed,
    /// The shard already holds its maximum number of sessions.
    SessionLimit,
    /// A user tried to join more channels than allowed.
    UserChannelLimit,
    /// A neighbor tried to create more channels than allowed.
    ChannelLimit,
    /// No receive buffer was free (io_uring ENOBUFS).
    NoBuffer,
    /// A local message was refused: a cluster server has not acknowledged a whole window.
    ReplicationBacklog,
    /// A cluster server sent beyond the stream window.
    StreamWindow,
    /// Fragments from a cluster server added up to more than a message may hold.
    Oversize,
    /// A server's reply or delivery (`+OK`, `-ERR`, `<nick> text`, a TXT_ERROR from a source
    /// without a session): answering it could start an endless exchange.
    ReplyShaped,
    /// A client request from an address of a server (this one's own, a neighbor's, a cluster
    /// server's): spoofed, or a misconfigured peer.
    FromServer,
    /// A new session from an IP address that already holds its maximum.
    IpLimit,
    /// A user, nick or channel name that is empty, not UTF-8, or has control characters.
    BadName,
    /// A LIST answer waiting for reply budget when too many already wait.
    AnswerCut,
    /// A direct message refused (answered "busy") because the mailbox's queue was full.
    MailboxBusy,
    /// A cluster datagram without the right MAC (with a shared key).
    Forged,
    /// A cluster datagram of an incarnation not admitted, or addressed to an earlier run of
    /// this server (answered at a bounded rate when a handshake may follow).
    Stale,
    /// A cluster server's frame no longer kept for passing on (its retention budget was full):
    /// if that server crashes, a survivor may miss a message others delivered.
    Retention,
    /// A login or nick under an account's name by a session not signed in to it.
    NameRegistered,
}

impl DropReason {
    pub const ALL: [DropReason; 20] = [
        DropReason::NotNeighbor,
        DropReason::QueueFull,
        DropReason::SendFailed,
        DropReason::SessionLimit,
        DropReason::UserChannelLimit,
        DropReason::ChannelLimit,
        DropReason::NoBuffer,
        DropReason::ReplicationBacklog,
        DropReason::StreamWindow,
        DropReason::Oversize,
        DropReason::ReplyShaped,
        DropReason::FromServer,
        DropReason::IpLimit,
        DropReason::BadName,
        DropReason::AnswerCut,
        DropReason::MailboxBusy,
        DropReason::Forged,
        DropReason::Stale,
        DropReason::Retention,
        DropReason::NameRegistered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotNeighbor => "not_neighbor",
            DropReason::QueueFull => "queue_full",
            DropReason::SendFailed => "send_failed",
            DropReason::SessionLimit => "session_limit",
            DropReason::UserChannelLimit => "user_channel_limit",
            DropReason::ChannelLimit => "channel_limit",
            DropReason::NoBuffer => "no_buffer",
            DropReason::ReplicationBacklog => "replication_backlog",
            DropReason::StreamWindow => "stream_window",
            DropReason::Oversize => "oversize",
            DropReason::ReplyShaped => "reply_shaped",
            DropReason::FromServer => "from_server",
            DropReason::IpLimit => "ip_limit",
            DropReason::BadName => "bad_name",
            DropReason::AnswerCut => "answer_cut",
            DropReason::MailboxBusy => "mailbox_busy",
            DropReason::Forged => "forged",
            DropReason::Stale => "stale",
            DropReason::Retention => "retention",
            DropReason::NameRegistered => "name_registered",
        }
    }
}

#[derive(Default, Debug)]
#[repr(align(128))] // one shard's counters never share a cache line with another's
pub struct Counters {
    pub datagrams_in: Counter,
    pub datagrams_out: Counter,
    pub deliveries: Counter,
    pub decode_errors: Counter,
    pub errors_sent: Counter,
    pub errors_suppressed: Counter,
    pub s2s_in: Counter,
    pub s2s_out: Counter,
    pub duplicates: Counter,
    pub retransmissions: Counter,
    pub users_expired: Counter,
    /// Sessions logged out to make room for a newcomer in a full table.
    pub sessions_evicted: Counter,
    /// Sessions logged out because a later login took their name, or an account was made of
    /// it.
    pub logins_replaced: Counter,
    pub neighbors_expired: Counter,
    /// Cluster servers excluded (silent, restarted, or excluded by another), and times this
    /// server was excluded and started afresh.
    pub peers_excluded: Counter,
    /// Datagrams the kernel dropped at this shard's socket (its receive queue was full), read
    /// from the socket by the runtime: with `datagrams_in` it accounts for everything sent here.
    pub kernel_drops: Counter,
    /// Sessions this shard is home to (a gauge, set as the shard sweeps, about once a second).
    pub sessions: Counter,
    /// Channels this shard owns (a gauge, likewise).
    pub channels: Counter,
    /// How long the engine took to handle each datagram (measured by the runtime).
    pub handling: Histogram,
    drops: [Counter; DropReason::ALL.len()],
}

impl Counters {
    pub fn dropped(&self, why: DropReason) {
        self.drops[why as usize].inc();
    }

    pub fn dropped_many(&self, why: DropReason, n: u64) {
        self.drops[why as usize].add(n);
    }

    pub fn drops(&self, why: DropReason) -> u64 {
        self.drops[why as usize].get()
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in={} out={} deliveries={} decode_errors={} errors_sent={} errors_suppressed={} \
             s2s_in={} s2s_out={} duplicates={} retransmissions={} users_expired={} \
             sessions_evicted={} logins_replaced={} neighbors_expired={} peers_excluded={} \
             kernel_drops={}",
            self.datagrams_in.get(),
            self.datagrams_out.get(),
            self.deliveries.get(),
            self.decode_errors.get(),
            self.errors_sent.get(),
            self.errors_suppressed.get(),
            self.s2s_in.get(),
            self.s2s_out.get(),
            self.duplicates.get(),
            self.retransmissions.get(),
            self.users_expired.get(),
            self.sessions_evicted.get(),
            self.logins_replaced.get(),
            self.neighbors_expired.get(),
            self.peers_excluded.get(),
            self.kernel_drops.get(),
        )?;
        write!(f, " drops:")?;
        for why in DropReason::ALL {
            write!(f, " {}={}", why.name(), self.drops(why))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_by_powers_of_two_from_250_ns() {
        let h = Histogram::default();
        h.record(Duration::from_nanos(100));
        h.record(Duration::from_nanos(250));
        h.record(Duration::from_nanos(251));
        h.record(Duration::from_secs(1));
        let (buckets, sum) = h.snapshot();
        assert_eq!(&buckets[..3], &[2, 1, 0]);
        assert_eq!(buckets[Histogram::BUCKETS - 1], 1);
        assert_eq!(sum, 100 + 250 + 251 + 1_000_000_000);
        let bounds: Vec<f64> = Histogram::bounds().collect();
        assert_eq!(bounds.len(), Histogram::BUCKETS - 1);
        assert_eq!(bounds[2], 1e-6);
    }
}
