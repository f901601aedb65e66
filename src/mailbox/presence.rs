//! Where each user is connected: the listen port of its TCP `CONNECT`, the sessions of the
//! router's other front-ends that go by its name, or both. A user with any of them is online and
//! has one deliverer; the entry goes when the last of them does.

use crate::engine::SessionId;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;

/// A TCP `CONNECT`: where pushes go, and which `CONNECT` it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tcp {
    pub(super) addr: SocketAddr,
    pub(super) generation: u64,
}

/// Where one online user is reached now.
#[derive(Debug, Clone, Default)]
pub(super) struct Targets {
    pub(super) tcp: Option<Tcp>,
    pub(super) sessions: SmallVec<[SessionId; 2]>,
}

pub(super) struct Online {
    pub(super) targets: Targets,
    /// Wakes the user's deliverer: a message was stored, or where it is reached changed.
    pub(super) wake: Arc<Notify>,
    /// Which time online this is: a deliverer of an earlier one stops.
    pub(super) generation: u64,
}

/// A user who just came online and needs a deliverer.
pub(super) struct Arrived {
    pub(super) user: String,
    pub(super) generation: u64,
    pub(super) wake: Arc<Notify>,
}

#[derive(Default)]
pub(super) struct Presence {
    online: HashMap<String, Online>,
    /// The name each session known to the mailbox goes by.
    names: HashMap<SessionId, String>,
    generations: u64,
}

impl Presence {
    pub(super) fn get(&self, user: &str) -> Option<&Online> {
        self.online.get(user)
    }

    /// Where `user` is reached, if it is online in its time `generation`.
    pub(super) fn targets(&self, user: &str, generation: u64) -> Option<Targets> {
        self.online
            .get(user)
            .filter(|o| o.generation == generation)
            .map(|o| o.targets.clone())
    }

    /// Wakes `user`'s deliverer, if it is online.
    pub(super) fn wake(&self, user: &str) {
        if let Some(online) = self.online.get(user) {
            online.wake.notify_one();
        }
    }

    /// The entry of `user`, made when it was offline (then reported: it needs a deliverer).
    fn entry(&mut self, user: &str) -> (&mut Online, Option<Arrived>) {
        let mut arrived = None;
        if !self.online.contains_key(user) {
            self.generations += 1;
            let wake = Arc::new(Notify::new());
            arrived = Some(Arrived {
                user: user.to_string(),
                generation: self.generations,
                wake: wake.clone(),
            });
            let online = Online {
                targets: Targets::default(),
                wake,
                generation: self.generations,
            };
            self.online.insert(user.to_string(), online);
        }
        let online = self.online.get_mut(user).expect("inserted above");
        (online, arrived)
    }

    /// After a target went: the entry goes with its last one. Either way the deliverer wakes
    /// to see what is left.
    fn settle(&mut self, user: &str) {
        let Some(online) = self.online.get(user) else {
            return;
        };
        online.wake.notify_one();
        if online.targets.tcp.is_none() && online.targets.sessions.is_empty() {
            self.online.remove(user);
        }
    }

    /// A TCP `CONNECT` of `user` to `addr`; `Err` when it is connected over TCP already.
    pub(super) fn connect(
        &mut self,
        user: &str,
        addr: SocketAddr,
        generation: u64,
    ) -> Result<Option<Arrived>, ()> {
        if self
            .online
            .get(user)
            .is_some_and(|o| o.targets.tcp.is_some())
        {
            return Err(());
        }
        let (online, arrived) = self.entry(user);
        online.targets.tcp = Some(Tcp { addr, generation });
        online.wake.notify_one();
        Ok(arrived)
    }

    /// `DISCONNECT` (or a failed push to the `CONNECT` of `generation`, when given): false
    /// when `user` was not connected over TCP (or connected again since).
    pub(super) fn disconnect(&mut self, user: &str, generation: Option<u64>) -> bool {
        let Some(online) = self.online.get_mut(user) else {
            return false;
        };
        match online.targets.tcp {
            Some(tcp) if generation.is_none_or(|g| g == tcp.generation) => {
                online.targets.tcp = None;
                self.settle(user);
                true
            }
            _ => false,
        }
    }

    /// Session `session` goes by `name` now (`None`: by no name the mailbox knows).
    pub(super) fn named(&mut self, session: SessionId, name: Option<String>) -> Option<Arrived> {
        if let Some(old) = self.names.remove(&session) {
            if let Some(online) = self.online.get_mut(&old) {
                online.targets.sessions.retain(|s| *s != session);
            }
            self.settle(&old);
        }
        let name = name?;
        let (online, arrived) = self.entry(&name);
        online.targets.sessions.push(session);
        online.wake.notify_one();
        self.names.insert(session, name);
        arrived
    }

    /// `user` became an account: the sessions that went by its name (none of them signed in
    /// to it) no longer reach it.
    pub(super) fn forget_sessions(&mut self, user: &str) {
        let Some(online) = self.online.get_mut(user) else {
            return;
        };
        for session in std::mem::take(&mut online.targets.sessions) {
            self.names.remove(&session);
        }
        self.settle(user);
    }

    /// Users online and sessions known, for checks.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (self.online.len(), self.names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u16) -> SessionId {
        crate::engine::SessionId::for_tests(n)
    }

    #[test]
    fn a_user_is_online_while_any_of_its_targets_is() {
        let mut p = Presence::default();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let first = p.named(session(1), Some("amy".into())).expect("arrives");
        assert!(
            p.connect("amy", addr, 7).unwrap().is_none(),
            "already online"
        );
        assert!(p.connect("amy", addr, 8).is_err(), "connected twice");
        assert!(!p.disconnect("amy", Some(8)), "not that CONNECT");
        assert!(p.disconnect("amy", Some(7)));
        assert!(p.targets("amy", first.generation).is_some(), "the session");
        // A rename takes the session to another user; amy goes offline.
        assert!(p.named(session(1), Some("bob".into())).is_some());
        assert!(p.targets("amy", first.generation).is_none());
        assert_eq!(p.sizes(), (1, 1));
        assert!(p.named(session(1), None).is_none());
        assert_eq!(p.sizes(), (0, 0), "nothing left behind");
        // Back online: a new generation, so an old deliverer stops.
        let again = p.named(session(2), Some("amy".into())).unwrap();
        assert_ne!(again.generation, first.generation);
    }
}
