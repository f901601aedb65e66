//! Who goes by which name on this server. Each name has an owner shard (by the same hash as
//! channels); the home shard of a session that takes a name claims it there, and the owner
//! decides:
//!
//! - an account's name is held by the sessions signed in to it, as many as there are (a laptop
//!   and a phone), and by no one else ([`Claim::Account`]);
//! - any other name is held by one session: a text or web session asking for a name another
//!   session holds is refused ([`Claim::FirstWins`]), while a DuckChat login takes it and the
//!   session that held it is logged out ([`Claim::LastWins`]: the course's reference server
//!   behaves so, and a DuckChat client cannot be told its login was refused).
//!
//! The table holds one entry per session that took a name, so it is bounded by the session
//! limits.

use super::{Engine, Outbox, SessionId, ShardMsg};
use crate::proto::Name;
use ahash::AHashMap;
use smallvec::SmallVec;

/// How a session takes a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// DuckChat: takes it from whoever held it, unless it is an account's.
    LastWins,
    /// Text and web: refused while another session holds it; answered either way.
    FirstWins,
    /// Signed in to the account of this name: held alongside the other signed-in sessions.
    Account,
}

/// On a name's owner shard: the sessions that go by it.
#[derive(Default)]
struct Holders {
    sessions: SmallVec<[SessionId; 1]>,
    /// They are signed in to the account of this name.
    account: bool,
}

#[derive(Default)]
pub(super) struct Logins {
    holders: AHashMap<Name, Holders>,
}

impl Logins {
    pub(super) fn len(&self) -> usize {
        self.holders.values().map(|h| h.sessions.len()).sum()
    }
}

impl Engine {
    /// Session `session` (home here) takes `name`.
    pub(super) fn claim_name(
        &mut self,
        session: SessionId,
        name: Name,
        claim: Claim,
        out: &mut Outbox,
    ) {
        let owner = self.owner(&name);
        debug_assert_eq!(
            session.home, self.shard,
            "a claim comes from the session's home"
        );
        let msg = ShardMsg::ClaimName {
            name,
            session,
            claim,
        };
        self.send_to_shard(owner, msg, out);
    }

    /// Session `session` (home here) no longer goes by `name`.
    pub(super) fn release_name(&mut self, session: SessionId, name: Name, out: &mut Outbox) {
        let owner = self.owner(&name);
        self.send_to_shard(owner, ShardMsg::ReleaseName { name, session }, out);
    }

    /// On the name's owner: `session` claims `name`.
    pub(super) fn name_claimed(
        &mut self,
        name: Name,
        session: SessionId,
        claim: Claim,
        out: &mut Outbox,
    ) {
        let account = self.accounts.is_account(name.as_bytes());
        let holders = self.logins.holders.entry(name).or_default();
        let others = holders.sessions.iter().any(|&s| s != session);
        let granted = match claim {
            Claim::Account => {
                if !holders.account {
                    self.evict_holders(name, Some(session), out);
                }
                true
            }
            // An account's name is refused at home already; this is the login that raced
            // with the account's creation.
            _ if account || holders.account => false,
            Claim::LastWins => {
                self.evict_holders(name, Some(session), out);
                true
            }
            Claim::FirstWins => !others,
        };
        debug_assert_eq!(
            self.owner(&name),
            self.shard,
            "claims go to the name's owner"
        );
        if granted {
            let holders = self.logins.holders.entry(name).or_default();
            holders.account = claim == Claim::Account;
            if !holders.sessions.contains(&session) {
                holders.sessions.push(session);
            }
            // One session holds a name that is no account; an account's, any number of them.
            debug_assert!(
                holders.account || holders.sessions.len() == 1,
                "{name} held by {} sessions",
                holders.sessions.len()
            );
        } else if self
            .logins
            .holders
            .get(&name)
            .is_some_and(|h| h.sessions.is_empty())
        {
            self.logins.holders.remove(&name);
        }
        if claim != Claim::Account {
            let answer = ShardMsg::NameAnswer {
                name,
                session,
                granted,
            };
            self.send_to_shard(session.home, answer, out);
        }
    }

    /// On the name's owner: every session that goes by `name` (but `keep`) is logged out, as
    /// if it had sent LOGOUT or closed its connection.
    pub(super) fn evict_holders(&mut self, name: Name, keep: Option<SessionId>, out: &mut Outbox) {
        let Some(holders) = self.logins.holders.get_mut(&name) else {
            return;
        };
        let evicted: SmallVec<[SessionId; 4]> = holders
            .sessions
            .iter()
            .copied()
            .filter(|&s| Some(s) != keep)
            .collect();
        holders.sessions.retain(|s| Some(*s) == keep);
        debug_assert!(
            holders.sessions.len() <= 1,
            "only the one kept holds the name"
        );
        if holders.sessions.is_empty() {
            self.logins.holders.remove(&name);
        }
        for session in evicted {
            self.send_to_shard(session.home, ShardMsg::LoggedInElsewhere(session), out);
        }
    }

    /// On the name's owner: `session` let `name` go (a later login may hold it already).
    pub(super) fn name_released(&mut self, name: Name, session: SessionId) {
        if let Some(holders) = self.logins.holders.get_mut(&name) {
            holders.sessions.retain(|s| *s != session);
            debug_assert!(
                !holders.sessions.contains(&session),
                "released and still held"
            );
            if holders.sessions.is_empty() {
                self.logins.holders.remove(&name);
            }
        }
    }
}
