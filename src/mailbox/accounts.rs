//! Accounts on the mailbox's thread: registration and sign-in for the shards' sessions
//! ([`ToMailbox::Account`]). Passwords are hashed with argon2id (the
//! RustCrypto crate, its default parameters: 19 MiB, two passes) on tokio's blocking threads,
//! a few at a time, so a flood of attempts costs a bounded share of the CPU and never holds up
//! the mailbox. Attempts are bounded per name (failures) and per source network (all), so
//! guessing a password takes years and one network cannot keep the hashers busy.
//!
//! [`ToMailbox::Account`]: crate::engine::direct::ToMailbox::Account

use super::store::{source_network, Registered};
use super::Shared;
use crate::engine::accounts::AccountOutcome;
use crate::engine::direct::{FromMailbox, Secret};
use crate::engine::SessionId;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Passwords hashed at once; more wait.
const HASHERS: usize = 2;
/// Attempts waiting for a hasher; beyond this an attempt is answered "busy".
const MAX_WAITING: usize = 64;

/// A token bucket: `burst` attempts at once, then one per `every`.
#[derive(Clone, Copy)]
struct Rate {
    burst: f64,
    every: Duration,
}

/// Failed sign-ins per account name: 5, then one every 20 s (a password of 8 random
/// lowercase letters takes about 1,300 centuries to guess at that rate).
const PER_NAME: Rate = Rate {
    burst: 5.0,
    every: Duration::from_secs(20),
};
/// Registrations and sign-ins per source network (/24, /64): 30 (a morning's sign-ins behind
/// one NAT), then one a second.
const PER_NETWORK: Rate = Rate {
    burst: 30.0,
    every: Duration::from_secs(1),
};
/// Names and networks whose attempts are remembered; beyond this, those whose bucket has
/// filled up again are forgotten first.
const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Attempts lately, per key.
#[derive(Default)]
struct Buckets(HashMap<String, Bucket>);

impl Buckets {
    /// Whether `key` has an attempt left now; `take`: spend it.
    fn allow(&mut self, key: &str, rate: Rate, now: Instant, take: bool) -> bool {
        if !self.0.contains_key(key) && self.0.len() >= MAX_TRACKED {
            let full = rate.burst;
            self.0
                .retain(|_, b| b.tokens + refill(b.at, now, rate) < full);
            if self.0.len() >= MAX_TRACKED {
                return false; // so many keys failing at once: refuse rather than forget
            }
        }
        let bucket = self.0.entry(key.to_string()).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens + refill(bucket.at, now, rate)).min(rate.burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        if take {
            bucket.tokens -= 1.0;
        }
        true
    }
}

fn refill(at: Instant, now: Instant, rate: Rate) -> f64 {
    now.saturating_duration_since(at).as_secs_f64() / rate.every.as_secs_f64()
}

/// What the accounts keep in memory.
pub(super) struct Accounts {
    /// The names that are accounts (password-protected), for presence.
    names: HashSet<String>,
    failures: Buckets,
    attempts: Buckets,
}

impl Accounts {
    pub(super) fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            names: names.into_iter().collect(),
            failures: Buckets::default(),
            attempts: Buckets::default(),
        }
    }

    pub(super) fn is_account(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Whether an attempt for `name` from `source` may go on now (it is counted).
    fn attempt(&mut self, name: &str, source: IpAddr) -> bool {
        let now = Instant::now();
        self.failures.allow(name, PER_NAME, now, false)
            && self
                .attempts
                .allow(&source_network(source), PER_NETWORK, now, true)
    }

    fn failed(&mut self, name: &str) {
        self.failures.allow(name, PER_NAME, Instant::now(), true);
    }
}

/// Hashers and the attempts waiting for one.
pub(super) struct Hashers {
    permits: tokio::sync::Semaphore,
    waiting: AtomicUsize,
}

impl Default for Hashers {
    fn default() -> Self {
        Self {
            permits: tokio::sync::Semaphore::new(HASHERS),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl Hashers {
    /// Runs `work` on a blocking thread when a hasher is free; `None` when too many wait.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if self.waiting.fetch_add(1, Relaxed) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Relaxed);
            return None;
        }
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Relaxed);
        let _permit = permit.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }
}

fn hash(password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    salt[..8].copy_from_slice(&crate::io::sys::random_u64().to_le_bytes());
    salt[8..].copy_from_slice(&crate::io::sys::random_u64().to_le_bytes());
    let salt = SaltString::encode_b64(&salt).ok()?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .ok()?;
    Some(hash.to_string())
}

fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .and_then(|h| Argon2::default().verify_password(password.as_bytes(), &h))
        .is_ok()
}

/// A hash no password matches, checked for a name that is no account so that the answer
/// takes as long as for one that is (the time must not tell which names are accounts).
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("\u{0}no password has a NUL").unwrap_or_default())
}

/// What a session asks with: the account's name, the password, where the request came from.
pub(super) type Asked = (String, Secret, IpAddr);

/// Registers the account `name` for `session`; on success every shard learns it is an account
/// (before the session hears it is signed in: they share its home shard's queue).
pub(super) async fn register(
    shared: &Shared,
    session: SessionId,
    (name, password, source): Asked,
) -> AccountOutcome {
    if !shared.accounts().attempt(&name, source) {
        return AccountOutcome::TooManyAttempts;
    }
    let Some(hashed) = shared.hashers.run(move || hash(&password.0)).await else {
        return AccountOutcome::Busy;
    };
    let Some(hashed) = hashed else {
        return AccountOutcome::Failed;
    };
    match shared
        .store
        .register(name.clone(), Some(hashed), source)
        .await
    {
        Some(Registered::Done) => {
            shared.accounts().names.insert(name.clone());
            // Sessions that went by the name until now are no longer reached by its mail.
            shared.presence().forget_sessions(&name);
            super::deliver::to_every_shard(
                shared,
                &FromMailbox::AccountCreated { name, by: session },
            )
            .await;
            AccountOutcome::Registered
        }
        Some(Registered::Taken) => AccountOutcome::Taken,
        Some(Registered::Full) => AccountOutcome::Full,
        None => AccountOutcome::Failed,
    }
}

/// Checks `password` for the account `name`.
pub(super) async fn sign_in(shared: &Shared, (name, password, source): Asked) -> AccountOutcome {
    if !shared.accounts().attempt(&name, source) {
        return AccountOutcome::TooManyAttempts;
    }
    let phc = match shared.store.password_hash(&name) {
        Ok(phc) => phc,
        Err(_) => return AccountOutcome::Failed,
    };
    let known = phc.is_some();
    let phc = phc.unwrap_or_else(|| decoy().to_string());
    let Some(matches) = shared.hashers.run(move || verify(&password.0, &phc)).await else {
        return AccountOutcome::Busy;
    };
    if known && matches {
        return AccountOutcome::SignedIn;
    }
    shared.accounts().failed(&name);
    AccountOutcome::WrongPassword
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse", &a));
        assert!(!verify("correct horsf", &a));
        assert!(!verify("anything", decoy()));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn buckets_refuse_past_the_burst_and_refill() {
        let rate = Rate {
            burst: 2.0,
            every: Duration::from_secs(10),
        };
        let mut b = Buckets::default();
        let t0 = Instant::now();
        assert!(b.allow("k", rate, t0, true));
        assert!(b.allow("k", rate, t0, true));
        assert!(!b.allow("k", rate, t0, true), "burst spent");
        assert!(b.allow("other", rate, t0, true), "per key");
        assert!(!b.allow("k", rate, t0 + Duration::from_secs(9), true));
        assert!(
            b.allow("k", rate, t0 + Duration::from_secs(19), true),
            "refilled"
        );
    }
}
