//! DuckChat's user names, one session each: the last login takes a name, as the course's
//! reference server has it, and the session that held it is logged out. Each name has an owner
//! shard (by the same hash as channels); the home shard of a login claims the name there, and
//! the owner tells the home shard of the session it replaces to close it. The table holds one
//! entry per logged-in DuckChat session, so it is bounded by the session limits.

use super::frontend::Protocol;
use super::{Engine, Outbox, SessionId, ShardMsg};
use crate::proto::Name;
use ahash::AHashMap;

/// On a name's owner shard: which session holds it.
#[derive(Default)]
pub(super) struct Logins {
    holders: AHashMap<Name, SessionId>,
}

impl Logins {
    pub(super) fn len(&self) -> usize {
        self.holders.len()
    }
}

/// Whether sessions of `protocol` hold their name alone.
fn unique_names(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::DuckChat | Protocol::DuckChatBig)
}

impl Engine {
    /// Session `session` (home here) took `name`; `old`: the name it had, when it had one.
    pub(super) fn claim_name(
        &mut self,
        session: SessionId,
        protocol: Protocol,
        old: Option<Name>,
        name: Name,
        out: &mut Outbox,
    ) {
        if !unique_names(protocol) {
            return;
        }
        if let Some(old) = old.filter(|old| *old != name) {
            self.release_name(session, protocol, old, out);
        }
        let owner = self.owner(&name);
        self.send_to_shard(owner, ShardMsg::ClaimName { name, session }, out);
    }

    /// Session `session` (home here) no longer goes by `name`.
    pub(super) fn release_name(
        &mut self,
        session: SessionId,
        protocol: Protocol,
        name: Name,
        out: &mut Outbox,
    ) {
        if !unique_names(protocol) {
            return;
        }
        let owner = self.owner(&name);
        self.send_to_shard(owner, ShardMsg::ReleaseName { name, session }, out);
    }

    /// On the name's owner: `session` holds `name` now; the session that held it is closed.
    pub(super) fn name_claimed(&mut self, name: Name, session: SessionId, out: &mut Outbox) {
        if let Some(before) = self.logins.holders.insert(name, session) {
            if before != session {
                self.send_to_shard(before.home, ShardMsg::LoggedInElsewhere(before), out);
            }
        }
    }

    /// On the name's owner: `session` let `name` go (a later login may hold it already).
    pub(super) fn name_released(&mut self, name: Name, session: SessionId) {
        if self.logins.holders.get(&name) == Some(&session) {
            self.logins.holders.remove(&name);
        }
    }
}
