//! The mailbox's durable state in an embedded database (redb: pure Rust, ACID, crash-safe
//! copy-on-write B-trees, no C to build): registered users, the password hashes of those who
//! are accounts, and stored messages, each message under its recipient and a sequence number, so
//! a recipient's messages come back in the order they were sent. What one sender or one source
//! network holds is counted ([`quota`]), so no one source can spend a global limit. One writer thread takes every change and applies whatever has queued up in
//! one transaction with one flush (group commit); a request is answered only after its
//! transaction is on disk. Readers use their own read transactions and never wait for it.

use crossbeam_channel::{Receiver, Sender, TrySendError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use tokio::sync::oneshot;

const USERS: TableDefinition<&str, u8> = TableDefinition::new("users");
/// (recipient, sequence) -> id (4 bytes, little endian), sender length (1), sender, text.
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (sender, sequence) -> id: acknowledgements owed to a sender who was not connected when its
/// message was delivered.
const ACKS: TableDefinition<(&str, u64), u32> = TableDefinition::new("acks");
/// recipient -> messages stored for it (for the per-user limit without counting them).
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");
/// account name -> its password's argon2id hash (PHC string). A user without an entry here is
/// an open account of the original protocol.
const ACCOUNTS: TableDefinition<&str, &str> = TableDefinition::new("accounts");
/// quota key (see [`quota`]) -> what it holds now: messages per sender, messages and
/// registrations per source network.
const QUOTAS: TableDefinition<&str, u64> = TableDefinition::new("quotas");
/// user -> the source network that registered it (its registration quota is given back when
/// it goes).
const REGISTRANTS: TableDefinition<&str, &str> = TableDefinition::new("registrants");
/// (recipient, sequence) -> the source network of a stored message's sender.
const ORIGINS: TableDefinition<(&str, u64), &str> = TableDefinition::new("origins");

/// Changes applied in one transaction at most; more wait for the next.
const BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the mailbox database: {0}")]
    Db(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Bounds on what the store keeps.
#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    /// Registered users.
    pub users: u64,
    /// Registered users per source network (see [`source_network`]).
    pub users_per_source: u64,
    /// Messages stored for one recipient.
    pub per_user: u64,
    /// Messages stored from one sender name.
    pub per_sender: u64,
    /// Messages stored from one source network.
    pub per_source: u64,
    /// Messages stored in all.
    pub total: u64,
}

impl StoreLimits {
    /// The defaults (docs/limits.md): a global limit takes at least 100 source networks to
    /// reach.
    pub const DEFAULT: StoreLimits = StoreLimits {
        users: 100_000,
        users_per_source: 1_000,
        per_user: 10_000,
        per_sender: 10_000,
        per_source: 10_000,
        total: 1_000_000,
    };
}

/// The network a source address stands for in quotas: its /24 for IPv4, its /64 for IPv6
/// (what one subscriber or one host usually holds), so that one source cannot multiply its
/// quota by changing the last bits of its address.
pub fn source_network(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Keys of the [`QUOTAS`] table. Names never hold a NUL, so the kinds cannot collide.
mod quota {
    pub(super) fn sender(name: &str) -> String {
        format!("s\0{name}")
    }
    pub(super) fn source_messages(network: &str) -> String {
        format!("m\0{network}")
    }
    pub(super) fn source_users(network: &str) -> String {
        format!("u\0{network}")
    }
}

/// What became of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Done,
    /// The name is taken already.
    Taken,
    /// A limit refused it: all users, or those of its source network.
    Full,
}

/// A stored message, as it is pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub id: u32,
    pub sender: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Stored { id: u32, seq: u64 },
    UnknownUser,
    Full,
}

/// A change for the writer thread, with where its outcome goes.
enum Job {
    Register {
        user: String,
        /// The password hash of an account; `None`: an open account.
        password: Option<String>,
        /// The source network that asks.
        source: String,
        done: oneshot::Sender<Registered>,
    },
    Unregister(String, oneshot::Sender<bool>),
    Send {
        from: String,
        to: String,
        text: String,
        /// The source network of the sender.
        source: String,
        /// The sender must be registered too (the TCP protocol's rule; a session of another
        /// front-end may send under any name).
        registered_sender: bool,
        done: oneshot::Sender<SendOutcome>,
    },
    /// A message was pushed: remove it, and keep its acknowledgement for its sender when
    /// `owe_ack` (the sender could not be told now).
    Delivered {
        recipient: String,
        seq: u64,
        sender: String,
        id: u32,
        owe_ack: bool,
        done: oneshot::Sender<()>,
    },
    /// An owed acknowledgement was pushed.
    Acked(String, u64, oneshot::Sender<()>),
}

/// The handle every connection uses; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: std::sync::Arc<Database>,
    jobs: Sender<Job>,
}

impl Store {
    /// Opens (or creates) the database at `path` and starts the writer thread. With
    /// `group_commit` false, every change is its own transaction and flush (for comparison).
    /// With `two_phase`, a commit is flushed before it is made current and again after, so
    /// that recovery after a crash never trusts a checksum over data strangers wrote (redb's
    /// two-phase commit); otherwise one flush, and recovery picks the last commit whose
    /// checksum holds.
    pub fn open(
        path: &Path,
        limits: StoreLimits,
        group_commit: bool,
        two_phase: bool,
    ) -> Result<Self, StoreError> {
        let db = std::sync::Arc::new(Database::create(path).map_err(db_err)?);
        {
            // The tables exist from the start, so readers never find one missing.
            let txn = db.begin_write().map_err(db_err)?;
            txn.open_table(USERS).map_err(db_err)?;
            txn.open_table(MESSAGES).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.open_table(ACKS).map_err(db_err)?;
            txn.open_table(COUNTS).map_err(db_err)?;
            txn.open_table(ACCOUNTS).map_err(db_err)?;
            txn.open_table(QUOTAS).map_err(db_err)?;
            txn.open_table(REGISTRANTS).map_err(db_err)?;
            txn.open_table(ORIGINS).map_err(db_err)?;
            txn.commit().map_err(db_err)?;
        }
        let (jobs, queue) = crossbeam_channel::bounded(16 * BATCH);
        let writer = db.clone();
        let batch = if group_commit { BATCH } else { 1 };
        std::thread::Builder::new()
            .name("mailbox-store".into())
            .spawn(move || write_loop(&writer, &queue, limits, batch, two_phase))
            .map_err(db_err)?;
        Ok(Self { db, jobs })
    }

    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Option<T> {
        let (done, outcome) = oneshot::channel();
        match self.jobs.try_send(job(done)) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                // The queue is bounded: a full one makes this connection wait, off the runtime
                // thread.
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .ok()?
                    .ok()?;
            }
            Err(TrySendError::Disconnected(_)) => return None,
        }
        outcome.await.ok()
    }

    /// A message from a session of another front-end, queued now so that one session's
    /// messages are stored in the order it sent them; `None` when the queue is full.
    pub fn send_from_session(
        &self,
        from: String,
        to: String,
        text: String,
        source: std::net::IpAddr,
    ) -> Option<oneshot::Receiver<SendOutcome>> {
        let (done, outcome) = oneshot::channel();
        let job = Job::Send {
            from,
            to,
            text,
            source: source_network(source),
            registered_sender: false,
            done,
        };
        self.jobs.try_send(job).ok()?;
        Some(outcome)
    }

    /// Registers `user` for a request from `source`: an account with the password hash
    /// `password`, or (`None`) an open account of the original protocol.
    pub async fn register(
        &self,
        user: String,
        password: Option<String>,
        source: std::net::IpAddr,
    ) -> Option<Registered> {
        let source = source_network(source);
        self.ask(|done| Job::Register {
            user,
            password,
            source,
            done,
        })
        .await
    }

    /// True when `user` was registered and no longer is (its stored messages go with it).
    pub async fn unregister(&self, user: String) -> Option<bool> {
        self.ask(|done| Job::Unregister(user, done)).await
    }

    pub async fn send(
        &self,
        from: String,
        to: String,
        text: String,
        source: std::net::IpAddr,
    ) -> Option<SendOutcome> {
        let source = source_network(source);
        self.ask(|done| Job::Send {
            from,
            to,
            text,
            source,
            registered_sender: true,
            done,
        })
        .await
    }

    /// Removes a message that has been pushed, keeping its acknowledgement for its sender when
    /// it could not be pushed now.
    pub async fn delivered(
        &self,
        recipient: String,
        message: &Stored,
        owe_ack: bool,
    ) -> Option<()> {
        let (seq, sender, id) = (message.seq, message.sender.clone(), message.id);
        self.ask(|done| Job::Delivered {
            recipient,
            seq,
            sender,
            id,
            owe_ack,
            done,
        })
        .await
    }

    /// Forgets an owed acknowledgement that has been pushed.
    pub async fn acked(&self, sender: String, seq: u64) -> Option<()> {
        self.ask(|done| Job::Acked(sender, seq, done)).await
    }

    /// The acknowledgements owed to `sender`, as (sequence, message id), oldest first.
    pub fn owed_acks(&self, sender: &str, max: usize) -> Result<Vec<(u64, u32)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let acks = txn.open_table(ACKS).map_err(db_err)?;
        let range = acks
            .range((sender, 0)..=(sender, u64::MAX))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for entry in range.take(max) {
            let (key, id) = entry.map_err(db_err)?;
            out.push((key.value().1, id.value()));
        }
        Ok(out)
    }

    pub fn is_registered(&self, user: &str) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let users = txn.open_table(USERS).map_err(db_err)?;
        Ok(users.get(user).map_err(db_err)?.is_some())
    }

    /// The password hash of the account `user`; `None` when it is not an account (an open
    /// account, or not registered).
    pub fn password_hash(&self, user: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
        Ok(accounts
            .get(user)
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }

    /// Every account's name (at start, for the shards' copy).
    pub fn account_names(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
        let mut names = Vec::new();
        for entry in accounts.iter().map_err(db_err)? {
            names.push(entry.map_err(db_err)?.0.value().to_string());
        }
        Ok(names)
    }

    /// The first `max` messages stored for `recipient`, in the order they were sent.
    pub fn pending(&self, recipient: &str, max: usize) -> Result<Vec<Stored>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let messages = txn.open_table(MESSAGES).map_err(db_err)?;
        let range = messages
            .range((recipient, 0)..=(recipient, u64::MAX))
            .map_err(db_err)?;
        let mut out = Vec::new();
        for entry in range.take(max) {
            let (key, value) = entry.map_err(db_err)?;
            if let Some(stored) = decode(key.value().1, value.value()) {
                out.push(stored);
            }
        }
        Ok(out)
    }
}

fn encode(id: u32, sender: &str, text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + sender.len() + text.len());
    v.extend_from_slice(&id.to_le_bytes());
    v.push(sender.len() as u8);
    v.extend_from_slice(sender.as_bytes());
    v.extend_from_slice(text.as_bytes());
    v
}

fn decode(seq: u64, v: &[u8]) -> Option<Stored> {
    let id = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
    let n = usize::from(*v.get(4)?);
    let sender = std::str::from_utf8(v.get(5..5 + n)?).ok()?.to_string();
    let text = std::str::from_utf8(v.get(5 + n..)?).ok()?.to_string();
    Some(Stored {
        seq,
        id,
        sender,
        text,
    })
}

/// Takes jobs as they come, up to `batch` at a time into one transaction, commits it durably,
/// then gives each job its outcome.
fn write_loop(
    db: &Database,
    queue: &Receiver<Job>,
    limits: StoreLimits,
    batch: usize,
    two_phase: bool,
) {
    let mut jobs = Vec::with_capacity(batch);
    let mut meta = None;
    while let Ok(first) = queue.recv() {
        jobs.push(first);
        while jobs.len() < batch {
            let Ok(next) = queue.try_recv() else { break };
            jobs.push(next);
        }
        match apply(db, &mut jobs, limits, two_phase, &mut meta) {
            Ok(outcomes) => {
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    outcome.give(job);
                }
            }
            Err(e) => {
                // Nothing of the batch is stored: every job's sender gets no outcome (its
                // connection answers "failure"), and the store goes on with the next batch.
                eprintln!("router: mailbox: {e}");
                jobs.clear();
            }
        }
    }
}

/// A job's outcome, held until its transaction is committed.
enum Outcome {
    Flag(bool),
    Registered(Registered),
    Send(SendOutcome),
    Done,
}

impl Outcome {
    fn give(self, job: Job) {
        match (job, self) {
            (Job::Unregister(_, done), Outcome::Flag(f)) => {
                let _ = done.send(f);
            }
            (Job::Register { done, .. }, Outcome::Registered(r)) => {
                let _ = done.send(r);
            }
            (Job::Send { done, .. }, Outcome::Send(s)) => {
                let _ = done.send(s);
            }
            (Job::Delivered { done, .. } | Job::Acked(_, _, done), Outcome::Done) => {
                let _ = done.send(());
            }
            _ => {}
        }
    }
}

/// The counters kept in `meta`, read once and carried from one transaction to the next (each
/// transaction writes them back once, not on every change).
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    users: u64,
    stored: u64,
    next_id: u64,
    next_seq: u64,
}

impl Meta {
    const KEYS: [&'static str; 4] = ["users", "stored", "next_id", "next_seq"];

    fn read(meta: &impl ReadableTable<&'static str, u64>) -> Result<Self, StoreError> {
        let get = |key: &str| -> Result<u64, StoreError> {
            Ok(meta.get(key).map_err(db_err)?.map_or(0, |v| v.value()))
        };
        Ok(Self {
            users: get("users")?,
            stored: get("stored")?,
            next_id: get("next_id")?,
            next_seq: get("next_seq")?,
        })
    }

    fn write(&self, meta: &mut redb::Table<&str, u64>) -> Result<(), StoreError> {
        let values = [self.users, self.stored, self.next_id, self.next_seq];
        for (key, value) in Self::KEYS.into_iter().zip(values) {
            meta.insert(key, value).map_err(db_err)?;
        }
        Ok(())
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }
}

/// The counters as committed: read from the database when unknown (at start, and after a
/// transaction failed, since its changes to them are gone too).
fn committed_meta(db: &Database, cached: &mut Option<Meta>) -> Result<Meta, StoreError> {
    if let Some(meta) = cached {
        return Ok(*meta);
    }
    let txn = db.begin_read().map_err(db_err)?;
    let meta = Meta::read(&txn.open_table(META).map_err(db_err)?)?;
    *cached = Some(meta);
    Ok(meta)
}

fn apply(
    db: &Database,
    jobs: &mut [Job],
    limits: StoreLimits,
    two_phase: bool,
    cached: &mut Option<Meta>,
) -> Result<Vec<Outcome>, StoreError> {
    let before = committed_meta(db, cached);
    *cached = None; // until this transaction is committed
    let mut m = before?;
    let mut txn = db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate).map_err(db_err)?;
    txn.set_two_phase_commit(two_phase);
    let mut outcomes = Vec::with_capacity(jobs.len());
    {
        let mut users = txn.open_table(USERS).map_err(db_err)?;
        let mut messages = txn.open_table(MESSAGES).map_err(db_err)?;
        let mut counts = txn.open_table(COUNTS).map_err(db_err)?;
        let mut acks = txn.open_table(ACKS).map_err(db_err)?;
        let mut accounts = txn.open_table(ACCOUNTS).map_err(db_err)?;
        let mut quotas = txn.open_table(QUOTAS).map_err(db_err)?;
        let mut registrants = txn.open_table(REGISTRANTS).map_err(db_err)?;
        let mut origins = txn.open_table(ORIGINS).map_err(db_err)?;
        for job in jobs.iter() {
            let outcome = match job {
                Job::Register {
                    user,
                    password,
                    source,
                    ..
                } => {
                    let per_source = quota::source_users(source);
                    if users.get(user.as_str()).map_err(db_err)?.is_some() {
                        Outcome::Registered(Registered::Taken)
                    } else if m.users >= limits.users
                        || held(&quotas, &per_source)? >= limits.users_per_source
                    {
                        Outcome::Registered(Registered::Full)
                    } else {
                        users.insert(user.as_str(), 1).map_err(db_err)?;
                        if let Some(hash) = password {
                            accounts
                                .insert(user.as_str(), hash.as_str())
                                .map_err(db_err)?;
                        }
                        registrants
                            .insert(user.as_str(), source.as_str())
                            .map_err(db_err)?;
                        add(&mut quotas, &per_source, 1)?;
                        m.users += 1;
                        Outcome::Registered(Registered::Done)
                    }
                }
                Job::Unregister(user, _) => {
                    let known = users.remove(user.as_str()).map_err(db_err)?.is_some();
                    if known {
                        m.users = m.users.saturating_sub(1);
                        accounts.remove(user.as_str()).map_err(db_err)?;
                        if let Some(source) = registrants.remove(user.as_str()).map_err(db_err)? {
                            add(&mut quotas, &quota::source_users(source.value()), -1)?;
                        }
                        let all = (user.as_str(), 0)..=(user.as_str(), u64::MAX);
                        acks.extract_from_if(all.clone(), |_, _| true)
                            .map_err(db_err)?
                            .for_each(drop);
                        let mut removed = Vec::new();
                        for entry in messages
                            .extract_from_if(all.clone(), |_, _| true)
                            .map_err(db_err)?
                        {
                            let (key, value) = entry.map_err(db_err)?;
                            if let Some(stored) = decode(key.value().1, value.value()) {
                                removed.push(stored);
                            }
                        }
                        for stored in &removed {
                            let origin = origins
                                .remove((user.as_str(), stored.seq))
                                .map_err(db_err)?
                                .map(|v| v.value().to_string());
                            release_message(&mut quotas, &stored.sender, origin.as_deref())?;
                        }
                        counts.remove(user.as_str()).map_err(db_err)?;
                        m.stored = m.stored.saturating_sub(removed.len() as u64);
                    }
                    Outcome::Flag(known)
                }
                Job::Send {
                    from,
                    to,
                    text,
                    source,
                    registered_sender,
                    ..
                } => {
                    let registered = |u: &str| users.get(u).map(|v| v.is_some());
                    let sender_ok = !registered_sender || registered(from).map_err(db_err)?;
                    if !sender_ok || !registered(to).map_err(db_err)? {
                        outcomes.push(Outcome::Send(SendOutcome::UnknownUser));
                        continue;
                    }
                    let mine = counts
                        .get(to.as_str())
                        .map_err(db_err)?
                        .map_or(0, |v| v.value());
                    let by_sender = quota::sender(from);
                    let by_source = quota::source_messages(source);
                    if m.stored >= limits.total
                        || mine >= limits.per_user
                        || held(&quotas, &by_sender)? >= limits.per_sender
                        || held(&quotas, &by_source)? >= limits.per_source
                    {
                        outcomes.push(Outcome::Send(SendOutcome::Full));
                        continue;
                    }
                    let id = m.next_id as u32; // ids are 32-bit in the protocol: they wrap
                    m.next_id += 1;
                    let seq = m.seq();
                    messages
                        .insert((to.as_str(), seq), encode(id, from, text).as_slice())
                        .map_err(db_err)?;
                    origins
                        .insert((to.as_str(), seq), source.as_str())
                        .map_err(db_err)?;
                    counts.insert(to.as_str(), mine + 1).map_err(db_err)?;
                    add(&mut quotas, &by_sender, 1)?;
                    add(&mut quotas, &by_source, 1)?;
                    m.stored += 1;
                    Outcome::Send(SendOutcome::Stored { id, seq })
                }
                Job::Delivered {
                    recipient,
                    seq,
                    sender,
                    id,
                    owe_ack,
                    ..
                } => {
                    let removed = messages
                        .remove((recipient.as_str(), *seq))
                        .map_err(db_err)?
                        .is_some();
                    if removed {
                        m.stored = m.stored.saturating_sub(1);
                        let mine = counts
                            .get(recipient.as_str())
                            .map_err(db_err)?
                            .map_or(0, |v| v.value());
                        match mine {
                            0 | 1 => counts.remove(recipient.as_str()).map(drop),
                            n => counts.insert(recipient.as_str(), n - 1).map(drop),
                        }
                        .map_err(db_err)?;
                        let origin = origins
                            .remove((recipient.as_str(), *seq))
                            .map_err(db_err)?
                            .map(|v| v.value().to_string());
                        release_message(&mut quotas, sender, origin.as_deref())?;
                        if *owe_ack && users.get(sender.as_str()).map_err(db_err)?.is_some() {
                            acks.insert((sender.as_str(), m.seq()), *id)
                                .map_err(db_err)?;
                        }
                    }
                    Outcome::Done
                }
                Job::Acked(sender, seq, _) => {
                    acks.remove((sender.as_str(), *seq)).map_err(db_err)?;
                    Outcome::Done
                }
            };
            outcomes.push(outcome);
        }
        m.write(&mut txn.open_table(META).map_err(db_err)?)?;
    }
    txn.commit().map_err(db_err)?;
    *cached = Some(m);
    Ok(outcomes)
}

/// What `key` holds now in the quota table.
fn held(quotas: &redb::Table<&str, u64>, key: &str) -> Result<u64, StoreError> {
    Ok(quotas.get(key).map_err(db_err)?.map_or(0, |v| v.value()))
}

/// Adds `delta` to what `key` holds; an entry that reaches 0 goes.
fn add(quotas: &mut redb::Table<&str, u64>, key: &str, delta: i64) -> Result<(), StoreError> {
    let now = held(quotas, key)?.saturating_add_signed(delta);
    match now {
        0 => quotas.remove(key).map(drop),
        n => quotas.insert(key, n).map(drop),
    }
    .map_err(db_err)
}

/// A stored message went: its sender's and its source network's quotas get it back.
fn release_message(
    quotas: &mut redb::Table<&str, u64>,
    sender: &str,
    source: Option<&str>,
) -> Result<(), StoreError> {
    add(quotas, &quota::sender(sender), -1)?;
    if let Some(source) = source {
        add(quotas, &quota::source_messages(source), -1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn temp_store(tag: &str, limits: StoreLimits) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("chat-router-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("m.redb"), limits, true, false).unwrap();
        (store, dir)
    }

    const HOME: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn limits_refuse_and_removal_makes_room() {
        let limits = StoreLimits {
            users: 3,
            per_user: 2,
            total: 3,
            ..StoreLimits::DEFAULT
        };
        let (store, dir) = temp_store("limits", limits);
        runtime().block_on(async {
            let register = |u: &str| store.register(u.into(), None, HOME);
            for u in ["a", "b", "c"] {
                assert_eq!(register(u).await, Some(Registered::Done));
            }
            assert_eq!(register("a").await, Some(Registered::Taken), "already");
            assert_eq!(register("d").await, Some(Registered::Full), "a fourth user");
            let send = |to: &str| store.send("a".into(), to.into(), "x".into(), HOME);
            assert!(matches!(send("b").await, Some(SendOutcome::Stored { .. })));
            assert!(matches!(send("b").await, Some(SendOutcome::Stored { .. })));
            assert_eq!(send("b").await, Some(SendOutcome::Full), "per recipient");
            assert!(matches!(send("c").await, Some(SendOutcome::Stored { .. })));
            assert_eq!(send("c").await, Some(SendOutcome::Full), "in all");
            assert_eq!(send("zed").await, Some(SendOutcome::UnknownUser));
            // Delivering one makes room; unregistering takes a user's messages with it.
            let first = store.pending("b", 10).unwrap().remove(0);
            store.delivered("b".into(), &first, false).await.unwrap();
            assert!(matches!(send("c").await, Some(SendOutcome::Stored { .. })));
            assert_eq!(store.unregister("c".into()).await, Some(true));
            assert_eq!(store.pending("c", 10).unwrap(), []);
            assert_eq!(
                register("d").await,
                Some(Registered::Done),
                "room for a user"
            );
            assert!(matches!(send("b").await, Some(SendOutcome::Stored { .. })));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One source network (or one sender name) cannot spend a global limit: its quota refuses
    /// it while another network still gets in, and what it held comes back when it goes.
    #[test]
    fn quotas_per_sender_and_source_network() {
        let limits = StoreLimits {
            users_per_source: 3,
            per_sender: 2,
            per_source: 3,
            ..StoreLimits::DEFAULT
        };
        let (store, dir) = temp_store("quotas", limits);
        let same_24: std::net::IpAddr = "10.1.2.200".parse().unwrap();
        let other: std::net::IpAddr = "10.1.3.1".parse().unwrap();
        runtime().block_on(async {
            for u in ["a", "b", "c"] {
                assert_eq!(
                    store.register(u.into(), None, HOME).await,
                    Some(Registered::Done)
                );
            }
            let refused = store.register("d".into(), None, same_24).await;
            assert_eq!(refused, Some(Registered::Full), "the /24's registrations");
            let hash = Some("$argon2id$stand-in".to_string());
            assert_eq!(
                store.register("d".into(), hash, other).await,
                Some(Registered::Done),
                "another /24 registers"
            );
            assert_eq!(store.account_names().unwrap(), ["d"]);
            assert_eq!(store.password_hash("a").unwrap(), None, "an open account");
            let send = |from: &str, src| store.send(from.into(), "d".into(), "x".into(), src);
            assert!(matches!(
                send("a", HOME).await,
                Some(SendOutcome::Stored { .. })
            ));
            assert!(matches!(
                send("a", HOME).await,
                Some(SendOutcome::Stored { .. })
            ));
            assert_eq!(
                send("a", other).await,
                Some(SendOutcome::Full),
                "per sender"
            );
            assert!(matches!(
                send("b", same_24).await,
                Some(SendOutcome::Stored { .. })
            ));
            assert_eq!(send("c", HOME).await, Some(SendOutcome::Full), "per /24");
            assert!(matches!(
                send("c", other).await,
                Some(SendOutcome::Stored { .. })
            ));
            // Delivery gives the sender's and the network's quota back.
            let first = store.pending("d", 10).unwrap().remove(0);
            store.delivered("d".into(), &first, false).await.unwrap();
            assert!(matches!(
                send("a", HOME).await,
                Some(SendOutcome::Stored { .. })
            ));
            // Unregistering gives the registration back to its network.
            assert_eq!(store.unregister("c".into()).await, Some(true));
            assert_eq!(
                store.register("e".into(), None, same_24).await,
                Some(Registered::Done)
            );
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
