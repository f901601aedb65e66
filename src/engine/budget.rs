//! Reply budgets: how many bytes of replies (errors, `+OK`/`-ERR` lines, LIST and WHO answers)
//! a shard may send to one IP address. Every source may be spoofed, so a reply can land on a
//! victim that never asked: a token bucket per address bounds what any sequence of requests can
//! make the router send there. The buckets live in a fixed table indexed by a keyed hash of the
//! IP (addresses that collide share a bucket), so memory does not grow with the sources seen.

use std::net::IpAddr;
use std::time::Duration;

/// A token bucket counted in bytes.
#[derive(Clone, Copy, Default)]
pub(super) struct Bucket {
    /// Tokens left, as of `stamp`; a fresh bucket is filled on first use.
    tokens: u64,
    stamp: Option<Duration>,
}

impl Bucket {
    /// Takes `n` tokens if there are that many (after refilling `per_sec` per second, up to
    /// `burst`).
    pub(super) fn take(&mut self, now: Duration, n: u64, burst: u64, per_sec: u64) -> bool {
        match self.stamp {
            None => {
                self.tokens = burst;
                self.stamp = Some(now);
            }
            Some(stamp) => {
                let micros = now
                    .saturating_sub(stamp)
                    .as_micros()
                    .min(u128::from(u32::MAX)) as u64;
                let refill = micros * per_sec / 1_000_000;
                self.tokens = self.tokens.saturating_add(refill).min(burst);
                // Move the stamp by what the whole tokens took, so fractions carry over.
                self.stamp = Some(if self.tokens == burst {
                    now
                } else {
                    stamp + Duration::from_micros(refill * 1_000_000 / per_sec)
                });
            }
        }
        debug_assert!(self.tokens <= burst, "more tokens than the burst");
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The budget of every IP address on one shard.
pub(super) struct ReplyBudget {
    buckets: Box<[Bucket]>,
    hash: ahash::RandomState,
    burst: u64,
    per_sec: u64,
}

impl ReplyBudget {
    /// A power of two, so the index is a mask.
    const BUCKETS: usize = 4096;

    pub(super) fn new(burst: u64, per_sec: u64, hash: ahash::RandomState) -> Self {
        assert!(burst > 0 && per_sec > 0);
        Self {
            buckets: vec![Bucket::default(); Self::BUCKETS].into_boxed_slice(),
            hash,
            burst,
            per_sec,
        }
    }

    /// Whether `bytes` more may go to `ip` now (and if so they are spent).
    pub(super) fn allow(&mut self, now: Duration, ip: IpAddr, bytes: usize) -> bool {
        let i = self.hash.hash_one(ip) as usize & (Self::BUCKETS - 1);
        self.buckets[i].take(now, bytes as u64, self.burst, self.per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::default();
        assert!(b.take(ms(0), 600, 1000, 100));
        assert!(b.take(ms(0), 400, 1000, 100));
        assert!(!b.take(ms(0), 1, 1000, 100), "the burst is spent");
        // 100 per second: 10 tokens after 100 ms, counted even when asked for in small steps.
        for t in 1..=9 {
            assert!(!b.take(ms(t * 10), 10, 1000, 100), "at {t}0 ms");
        }
        assert!(b.take(ms(100), 10, 1000, 100));
        assert!(!b.take(ms(100), 1, 1000, 100));
        // Never more than the burst, however long it rested.
        assert!(!b.take(ms(1_000_000), 1001, 1000, 100));
        assert!(b.take(ms(1_000_000), 1000, 1000, 100));
    }

    #[test]
    fn addresses_have_their_own_budget() {
        let mut budget = ReplyBudget::new(100, 10, ahash::RandomState::with_seeds(1, 2, 3, 4));
        let a = IpAddr::from([127, 0, 0, 1]);
        let b = IpAddr::from([127, 0, 0, 2]);
        assert!(budget.allow(ms(0), a, 100));
        assert!(!budget.allow(ms(0), a, 1));
        assert!(
            budget.allow(ms(0), b, 100),
            "another address is not charged"
        );
    }
}
