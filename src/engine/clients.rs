//! The home shard's half: client sessions of every protocol, the commands front-ends decode
//! (see [`frontend`]) carried out on them, delivery to local members, and what keeps hostile
//! sources harmless:
//!
//! - a full table evicts its longest-silent session instead of refusing a newcomer, and one IP
//!   address may hold at most `sessions_per_ip` sessions, so spoofed logins cannot lock users out;
//! - a source without a session never gets a reply larger than its request ([`Engine::reply`]);
//! - every reply is charged to its destination's [`ReplyBudget`], and long LIST and WHO
//!   answers are paced by it ([`answers`]);
//! - a session gets at most `errors_in_a_row` errors before it does something that succeeds, so
//!   two servers tricked into taking each other for clients stop answering each other.

use super::answers;
use super::budget::ReplyBudget;
use super::frontend::{
    self, Change, Command, Decoded, Delivery, Done, Person, Protocol, Refusal, View,
};
use super::logins::Claim;
use super::members::Members;
use super::sessions::{Key, SessionId, Sessions, Standing};
use super::AMPLIFICATION;
use super::{Chat, DropReason, Endpoint, Engine, Limits, Origin, Outbox, ShardMsg, Stamp};
use crate::proto::{self, Name, Nick};
use ahash::AHashMap;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

pub(super) struct Session {
    pub(super) name: Nick,
    pub(super) channels: SmallVec<[Name; 4]>,
    /// Requests refused since the last one that succeeded.
    errors_in_a_row: u32,
    /// A LIST or WHO answer to this session is waiting for reply budget: another LIST or WHO
    /// meanwhile adds nothing (one session cannot fill the queue of waiting answers).
    pub(super) list_waiting: bool,
    pub(super) who_waiting: bool,
    /// The mailbox knows this session by its name (see [`Engine::announce_name`]).
    pub(super) known_to_mailbox: bool,
    /// The session's name is an account it signed in to ([`super::accounts`]).
    pub(super) signed_in: bool,
    /// The session's address has shown it receives: a connection, or a datagram session that
    /// sent back its code ([`super::accounts`]).
    pub(super) confirmed: bool,
    /// The session holds its name at the name's owner ([`super::logins`]); a name given after
    /// the session's address is held by no one.
    pub(super) claimed: bool,
    /// A name the session asked for and its owner has not answered yet.
    pub(super) pending_name: Option<Nick>,
}

/// The members of one channel that this shard is home to, by protocol: each list gets one
/// payload, encoded once, and fan-out walks a contiguous list of endpoints.
#[derive(Default)]
pub(super) struct Local {
    by_protocol: [Members<SessionId, Endpoint>; Protocol::COUNT],
}

impl Local {
    fn is_empty(&self) -> bool {
        self.by_protocol.iter().all(Members::is_empty)
    }

    fn len(&self) -> usize {
        self.by_protocol.iter().map(Members::len).sum()
    }
}

pub(super) struct Clients {
    pub(super) sessions: Sessions<Session>,
    /// Sessions per source IP.
    per_ip: AHashMap<IpAddr, u32>,
    /// Members of each channel that this shard is home to.
    local: AHashMap<Name, Local>,
    /// Replica of every channel this server knows, sorted for LIST.
    pub(super) directory: BTreeSet<Name>,
    pub(super) replies: ReplyBudget,
    /// LIST and WHO answers waiting for reply budget.
    pub(super) waiting: answers::Waiting,
}

impl Clients {
    pub(super) fn new(home: u16, limits: &Limits, hash: ahash::RandomState) -> Self {
        Self {
            sessions: Sessions::new(home),
            per_ip: AHashMap::new(),
            local: AHashMap::new(),
            directory: BTreeSet::new(),
            replies: ReplyBudget::new(limits.reply_burst, limits.reply_bytes_per_sec, hash),
            waiting: answers::Waiting::default(),
        }
    }

    pub(super) fn census(&self) -> super::Census {
        super::Census {
            sessions: self.sessions.len(),
            sessions_by_address: self.per_ip.values().map(|&n| n as usize).sum(),
            busiest_address: self.per_ip.values().max().map_or(0, |&n| n as usize),
            local_channels: self.local.len(),
            local_members: self.local.values().map(Local::len).sum(),
            directory: self.directory.len(),
            paced_answers: self.waiting.len(),
            ..Default::default()
        }
    }

    /// Every member of every channel this shard is home to, with whether its session holds
    /// the channel too.
    pub(super) fn local_members(&self) -> impl Iterator<Item = (Name, SessionId, bool)> + '_ {
        self.local.iter().flat_map(move |(name, l)| {
            l.by_protocol.iter().flat_map(move |m| {
                m.iter().map(move |&(id, _)| {
                    let held = self
                        .sessions
                        .get(id)
                        .is_some_and(|s| s.channels.contains(name));
                    (*name, id, held)
                })
            })
        })
    }

    /// Every channel of every session, which must each be in the local member lists.
    pub(super) fn session_channels(&self) -> impl Iterator<Item = (Name, SessionId)> + '_ {
        self.sessions
            .iter()
            .flat_map(|(id, s)| s.channels.iter().map(move |c| (*c, id)))
    }

    /// LIST or WHO answers still waiting for budget.
    pub(super) fn pacing(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Counts a new session of `ip`; false (nothing counted) when the address has its maximum.
    fn admit(&mut self, ip: IpAddr, limit: usize) -> bool {
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n as usize >= limit {
            return false;
        }
        *n += 1;
        debug_assert!(*n as usize <= limit, "an address over its sessions");
        true
    }

    fn release(&mut self, ip: IpAddr) {
        debug_assert!(
            self.per_ip.contains_key(&ip),
            "released an address never admitted"
        );
        if let Some(n) = self.per_ip.get_mut(&ip) {
            debug_assert!(*n > 0, "an address counted at zero sessions");
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// How many expired or evicted sessions one timer event handles, so that a mass expiry is spread
/// over many short steps instead of stalling the shard.
pub(super) const EXPIRE_BATCH: usize = 1024;
/// How often paced answers and unfinished expiry go on.
pub(super) const PACE_TICK: Duration = Duration::from_millis(5);

impl Engine {
    /// One request from `endpoint` in `protocol`: decoded by its front-end, carried out here,
    /// answered in the front-end's format.
    pub(super) fn client_request(
        &mut self,
        now: Duration,
        endpoint: Endpoint,
        protocol: Protocol,
        request: &[u8],
        out: &mut Outbox,
    ) {
        let (key, id) = self.session_of(endpoint, protocol, request);
        let view = id
            .and_then(|id| self.clients.sessions.get(id))
            .map(|s| View {
                name: &s.name,
                channels: &s.channels,
            });
        // Who the replies are for, as the session was named when it asked.
        let me = view.map(|v| *v.name);
        let user = me.filter(|_| self.cfg.verbose);
        let mut scratch = [0u8; frontend::SCRATCH];
        let decoded = protocol.decode(&self.settings, request, view, &mut scratch);
        let command = match decoded {
            Decoded::Drop(reason) => return self.counters.dropped(reason),
            Decoded::Malformed => return self.counters.decode_errors.inc(),
            Decoded::Nothing | Decoded::Error(_) | Decoded::Reply(_) | Decoded::Command(_) => {
                if let Some(id) = id {
                    self.clients.sessions.touch(id, now);
                    // More than a login: no longer what a forged source makes by the thousand.
                    if !matches!(decoded, Decoded::Command(Command::Login { .. })) {
                        self.clients.sessions.raise(id, Standing::Active);
                    }
                }
                match decoded {
                    Decoded::Command(command) => command,
                    Decoded::Error(reply) => {
                        return self.reply(now, key, request.len(), reply, true, out)
                    }
                    Decoded::Reply(reply) => {
                        return self.reply(now, key, request.len(), reply, false, out)
                    }
                    _ => return,
                }
            }
        };
        let outcome = self.execute(now, id, key, command, out);
        if self.cfg.verbose {
            protocol.log_command(
                &self.settings,
                endpoint,
                user.as_ref(),
                &command,
                &outcome,
                out,
            );
        }
        let mut scratch = [0u8; frontend::MAX_REPLY];
        let me = me.unwrap_or_else(|| Nick::from(frontend::IRC_UNREGISTERED));
        let (len, error) = match &outcome {
            Ok(done) => {
                // The session the request came from (a closed one's id finds nothing), or the
                // one it began.
                let session = id.or_else(|| self.clients.sessions.find(&key));
                if let Some(s) = session.and_then(|id| self.clients.sessions.get_mut(id)) {
                    s.errors_in_a_row = 0;
                }
                (protocol.encode_done(&me, done, &mut scratch), false)
            }
            Err(refusal) => (protocol.encode_refusal(&me, refusal, &mut scratch), true),
        };
        if let Some(len) = len {
            self.reply(now, key, request.len(), &scratch[..len], error, out);
        }
    }

    /// The session a request is for, and its key, where the request's byte order may not show
    /// (see [`Protocol::byte_order_twin`]): a request that does not show it, from an endpoint
    /// whose session is of the twin order, is that session's; and a session begun in the
    /// default order is moved to its twin when the client's next request shows that order
    /// (before it can be in any channel, so no member list names it yet).
    /// One lookup when the endpoint has a session of the request's protocol.
    fn session_of(
        &mut self,
        endpoint: Endpoint,
        protocol: Protocol,
        request: &[u8],
    ) -> (Key, Option<SessionId>) {
        let key = (endpoint, protocol);
        let sessions = &mut self.clients.sessions;
        let found = sessions.find(&key);
        let Some(twin) = protocol.byte_order_twin().filter(|_| found.is_none()) else {
            return (key, found);
        };
        let Some(id) = sessions.find(&(endpoint, twin)) else {
            return (key, None);
        };
        if !protocol.shows_byte_order(request) {
            return ((endpoint, twin), Some(id));
        }
        let fresh = sessions.get(id).is_some_and(|s| s.channels.is_empty());
        if !protocol.is_default_order() && fresh && sessions.rekey(id, key) {
            return (key, Some(id));
        }
        (key, None)
    }

    /// Carries out one command of the session `id` (`None`: the endpoint has none).
    fn execute(
        &mut self,
        now: Duration,
        id: Option<SessionId>,
        key: Key,
        command: Command<'_>,
        out: &mut Outbox,
    ) -> Result<Done, Refusal> {
        match command {
            Command::Login { name } => return self.login(now, id, key, name, out),
            Command::Register { name, password } => {
                return self.ask_account(now, id, key, (name, password), true, out)
            }
            Command::SignIn { name, password } => {
                return self.ask_account(now, id, key, (name, password), false, out)
            }
            Command::Confirm { code } => return self.confirm(now, id, key, code, out),
            Command::SignInToken { token } => {
                return self.sign_in_with_token(now, id, key, token, out)
            }
            _ => {}
        }
        if let Command::Unknown = command {
            self.counters.decode_errors.inc();
        }
        let id = match (id, command) {
            (Some(id), _) => id,
            (None, Command::Join { .. } | Command::Direct { .. }) => {
                match key.1.default_name(key.0) {
                    Some(name) => self.open(now, key, name, out)?,
                    None => return Err(Refusal::NotLoggedIn),
                }
            }
            (None, _) => return Err(Refusal::NotLoggedIn),
        };
        match command {
            Command::Login { .. }
            | Command::Register { .. }
            | Command::SignIn { .. }
            | Command::SignInToken { .. }
            | Command::Confirm { .. } => unreachable!("handled above"),
            Command::Quit => {
                self.close(id, out);
                Ok(Done::Quit)
            }
            Command::Join { channel } => self.join(id, channel, out),
            Command::Leave { channel } => {
                self.require_member(id, &channel)?;
                if let Some(session) = self.clients.sessions.get_mut(id) {
                    session.channels.retain(|c| *c != channel);
                }
                self.part(id, channel, out);
                Ok(Done::Left(channel))
            }
            Command::Say { channel, text } => {
                self.require_member(id, &channel)?;
                if let Some(session) = self.clients.sessions.get(id) {
                    let chat = Chat::new(session.name.as_bytes(), text);
                    let said = ShardMsg::Said {
                        channel,
                        chat,
                        session: id,
                    };
                    self.send_to_owner(said, out);
                }
                Ok(Done::Nothing)
            }
            Command::List => {
                if self
                    .clients
                    .sessions
                    .get(id)
                    .is_some_and(|s| !s.list_waiting)
                {
                    self.answer_list(now, id, None, out);
                }
                Ok(Done::Nothing)
            }
            Command::Who { channel, brief } => {
                // A channel the user is in exists even before the owner's directory update
                // for it arrives; the owner handles the JOIN before this WHO (one queue).
                let member = self.require_member(id, &channel).is_ok();
                if !member && !self.clients.directory.contains(&channel) {
                    return Err(Refusal::NoChannel(channel));
                }
                if self
                    .clients
                    .sessions
                    .get(id)
                    .is_some_and(|s| !s.who_waiting)
                {
                    let msg = ShardMsg::Who {
                        channel,
                        session: id,
                        brief,
                    };
                    self.send_to_owner(msg, out);
                }
                Ok(Done::Nothing)
            }
            Command::KeepAlive => Ok(Done::Nothing),
            Command::Direct { to, text } => self.send_direct(id, to, text, out),
            Command::Unknown => Err(Refusal::UnknownCommand),
        }
    }

    /// One reply of `bytes` to a request of `request_len` bytes: never to a server (it would
    /// take it for a request), within the destination's reply budget, and to an endpoint without
    /// a session only when no longer than the request (a spoofed source must never receive more
    /// than was sent in its name). An error counts against the session's errors in a row.
    fn reply(
        &mut self,
        now: Duration,
        key: Key,
        request_len: usize,
        bytes: &[u8],
        error: bool,
        out: &mut Outbox,
    ) {
        let limit = self.cfg.limits.errors_in_a_row;
        if !key.0.spoofable() {
            return self.send_reply(now, key.0, bytes, error, out);
        }
        match self.clients.sessions.find(&key) {
            Some(id) if error => {
                let Some(session) = self.clients.sessions.get_mut(id) else {
                    return;
                };
                session.errors_in_a_row = session.errors_in_a_row.saturating_add(1);
                if session.errors_in_a_row > limit {
                    return self.counters.errors_suppressed.inc();
                }
            }
            Some(_) => {}
            None if bytes.len() > AMPLIFICATION * request_len => {
                return self.counters.errors_suppressed.inc()
            }
            None => {}
        }
        self.send_reply(now, key.0, bytes, error, out);
    }

    /// A reply the client did not ask for just now (a join its channel's owner refused).
    pub(super) fn send_reply(
        &mut self,
        now: Duration,
        dst: Endpoint,
        bytes: &[u8],
        error: bool,
        out: &mut Outbox,
    ) {
        if !self.may_reply(now, dst, bytes.len()) {
            return;
        }
        if error {
            self.counters.errors_sent.inc();
        }
        out.send_bytes(dst, bytes);
    }

    /// Whether a reply of `bytes` may go to `dst`: never to a server, and only within the
    /// address's reply budget. Refusals are counted.
    pub(super) fn may_reply(&mut self, now: Duration, dst: Endpoint, bytes: usize) -> bool {
        let allowed = match dst {
            Endpoint::Udp(addr) => {
                !self.is_server(&addr) && self.clients.replies.allow(now, dst.ip(), bytes)
            }
            // A connection cannot be forged: it asked for its replies.
            Endpoint::Stream { .. } => true,
        };
        if !allowed {
            self.counters.errors_suppressed.inc();
        }
        allowed
    }

    /// A new session, or a new name for the session there is. An account's name is refused
    /// unless the session is signed in to it. A DuckChat login takes its name at once (the
    /// name's owner logs out whoever held it); a text or web session is renamed when the
    /// name's owner grants it ([`Engine::name_answer`]), which is when it is answered.
    fn login(
        &mut self,
        now: Duration,
        id: Option<SessionId>,
        key: Key,
        name: Nick,
        out: &mut Outbox,
    ) -> Result<Done, Refusal> {
        if !proto::is_printable_name(name.as_bytes()) {
            self.counters.dropped(DropReason::BadName);
            return Err(Refusal::BadUserName);
        }
        let session = id.and_then(|id| self.clients.sessions.get(id));
        if let Some(session) = session.filter(|s| s.signed_in) {
            return match session.name == name {
                true => Ok(Done::Named(name)),
                false => Err(Refusal::SignedInAs(session.name)),
            };
        }
        if self.accounts.is_account(name.as_bytes()) {
            self.counters.dropped(DropReason::NameRegistered);
            return Err(Refusal::NameRegistered(name));
        }
        if let Some(default) = key.1.default_name(key.0) {
            let id = match id {
                Some(id) => id,
                None => self.open(now, key, default, out)?,
            };
            if let Some(session) = self.clients.sessions.get_mut(id) {
                session.pending_name = Some(name);
            }
            self.claim_name(id, Name::truncating(name.as_bytes()), Claim::FirstWins, out);
            return Ok(Done::Nothing);
        }
        // DuckChat: the name is the session's now.
        let Some(session) = id.and_then(|id| self.clients.sessions.get_mut(id)) else {
            let id = self.open(now, key, name, out)?;
            if let Some(session) = self.clients.sessions.get_mut(id) {
                session.claimed = true;
            }
            self.claim_name(id, Name::truncating(name.as_bytes()), Claim::LastWins, out);
            return Ok(Done::Named(name));
        };
        // A second login renames; owners update their WHO lists.
        let old = Name::truncating(session.name.as_bytes());
        session.name = name;
        let channels = session.channels.clone();
        if let Some(id) = id {
            for channel in channels {
                self.member_joined_at_owner(channel, id, name, key.1, out);
            }
            let new = Name::truncating(name.as_bytes());
            if old != new {
                self.release_name(id, old, out);
            }
            self.claim_name(id, new, Claim::LastWins, out);
        }
        Ok(Done::Named(name))
    }

    /// The owner of `name` answered session `id`'s claim. A text or web session waiting for it
    /// is renamed and told, or told why not; a DuckChat session refused its name (an account
    /// was created as it logged in) is logged out. A grant nobody waits for any more is given
    /// back.
    pub(super) fn name_answer(
        &mut self,
        now: Duration,
        id: SessionId,
        name: Name,
        granted: bool,
        out: &mut Outbox,
    ) {
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            if granted {
                self.release_name(id, name, out);
            }
            return;
        };
        let Some(session) = self.clients.sessions.get_mut(id) else {
            return;
        };
        let waited = session
            .pending_name
            .filter(|p| Name::truncating(p.as_bytes()) == name);
        let Some(nick) = waited else {
            let holds = session.claimed && Name::truncating(session.name.as_bytes()) == name;
            let refusal = Refusal::NameRegistered(session.name);
            // A text or web session that asked for another name before this answer came: its
            // earlier `/nick` still gets its one reply.
            let asked = protocol.default_name(endpoint).is_some();
            let superseded = Nick::truncating(name.as_bytes());
            match (granted, holds) {
                (true, false) if asked => {
                    self.release_name(id, name, out);
                    self.reply_to_session(now, id, &Refusal::Superseded(superseded), out);
                }
                (false, false) if asked => {
                    self.reply_to_session(now, id, &Refusal::NameTaken(superseded), out);
                }
                (true, false) => self.release_name(id, name, out),
                (false, true) => {
                    session.claimed = false; // the owner holds it for someone else now
                    let mut buf = [0u8; frontend::MAX_REPLY];
                    if let Some(len) = protocol.encode_refusal(&session.name, &refusal, &mut buf) {
                        self.send_reply(now, endpoint, &buf[..len], true, out);
                    }
                    self.counters.logins_replaced.inc();
                    self.close(id, out);
                }
                _ => {}
            }
            return;
        };
        session.pending_name = None;
        debug_assert!(session.pending_name.is_none());
        let was = session.name;
        let mut buf = [0u8; frontend::MAX_REPLY];
        let answer = if granted {
            let old = session
                .claimed
                .then(|| Name::truncating(session.name.as_bytes()));
            session.name = nick;
            session.claimed = true;
            let channels = session.channels.clone();
            for channel in channels {
                self.member_joined_at_owner(channel, id, nick, protocol, out);
            }
            self.announce_name(id, false, out);
            if let Some(old) = old.filter(|old| *old != name) {
                self.release_name(id, old, out);
            }
            protocol.encode_done(&was, &Done::Named(nick), &mut buf)
        } else {
            let refusal = match self.accounts.is_account(nick.as_bytes()) {
                true => Refusal::NameRegistered(nick),
                false => Refusal::NameTaken(nick),
            };
            protocol.encode_refusal(&was, &refusal, &mut buf)
        };
        if let Some(len) = answer {
            self.send_reply(now, endpoint, &buf[..len], !granted, out);
        }
    }

    /// The name of session `id`, as its replies address it (`*` when it is gone).
    pub(super) fn name_of(&self, id: SessionId) -> Nick {
        self.clients
            .sessions
            .get(id)
            .map_or(Nick::from(frontend::IRC_UNREGISTERED), |s| s.name)
    }

    /// A refusal written in the session's protocol and sent to it.
    fn reply_to_session(
        &mut self,
        now: Duration,
        id: SessionId,
        refusal: &Refusal,
        out: &mut Outbox,
    ) {
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            return;
        };
        let mut buf = [0u8; frontend::MAX_REPLY];
        if let Some(len) = protocol.encode_refusal(&self.name_of(id), refusal, &mut buf) {
            self.send_reply(now, endpoint, &buf[..len], true, out);
        }
    }

    /// Begins a session: refused (counted) when its IP address holds its maximum; when the
    /// table is full, a session makes room (counted): the longest-silent of those that never
    /// did more than begin, else of the others, never one signed in (the newcomer is anonymous;
    /// if every session is signed in, it is refused).
    pub(super) fn open(
        &mut self,
        now: Duration,
        key: Key,
        name: Nick,
        out: &mut Outbox,
    ) -> Result<SessionId, Refusal> {
        let limits = &self.cfg.limits;
        let victim = match self.clients.sessions.len() >= limits.sessions_per_shard {
            false => None,
            true => match self.clients.sessions.evictable() {
                Some(victim) => Some(victim),
                None => {
                    self.counters.dropped(DropReason::SessionLimit);
                    return Err(Refusal::TooManySessions);
                }
            },
        };
        if !self.clients.admit(key.0.ip(), limits.sessions_per_ip) {
            self.counters.dropped(DropReason::IpLimit);
            return Err(Refusal::TooManySessions);
        }
        if let Some(victim) = victim {
            self.counters.sessions_evicted.inc();
            self.close(victim, out);
        }
        let session = Session {
            name,
            channels: SmallVec::new(),
            errors_in_a_row: 0,
            list_waiting: false,
            who_waiting: false,
            known_to_mailbox: false,
            signed_in: false,
            confirmed: !key.0.spoofable(),
            claimed: false,
            pending_name: None,
        };
        // A connection has shown it receives; a datagram's source may be forged.
        let standing = match key.0.spoofable() {
            true => Standing::Fresh,
            false => Standing::Active,
        };
        let id = self.clients.sessions.insert(key, now, standing, session);
        debug_assert_eq!(id.home, self.shard, "a session lives on its home shard");
        debug_assert_eq!(
            self.clients.sessions.find(&key),
            Some(id),
            "a new session is found by its key"
        );
        if let Some(channel) = key.1.auto_join() {
            self.join(id, channel, out)?;
        }
        Ok(id)
    }

    /// A stream connection opened: a protocol whose sessions begin with the connection (one
    /// room, no login) begins one now.
    pub(super) fn open_stream_session(&mut self, now: Duration, key: Key, out: &mut Outbox) {
        if key.1.auto_join().is_none() || self.clients.sessions.find(&key).is_some() {
            return;
        }
        if let Some(name) = key.1.default_name(key.0) {
            let _ = self.open(now, key, name, out);
        }
    }

    /// A stream connection closed: its session ends.
    pub(super) fn close_stream_session(&mut self, key: Key, out: &mut Outbox) {
        if let Some(id) = self.clients.sessions.find(&key) {
            self.close(id, out);
        }
    }

    /// A later login took the session's name: it is logged out, as if it had sent LOGOUT.
    pub(super) fn logged_in_elsewhere(&mut self, id: SessionId, out: &mut Outbox) {
        if self.clients.sessions.get(id).is_some() {
            self.counters.logins_replaced.inc();
            self.close(id, out);
        }
    }

    /// Removes the session from every channel and forgets it.
    fn close(&mut self, id: SessionId, out: &mut Outbox) {
        self.announce_name(id, true, out);
        let Some(((endpoint, protocol), session)) = self.clients.sessions.remove(id) else {
            return;
        };
        debug_assert!(
            self.clients.sessions.find(&(endpoint, protocol)).is_none(),
            "a closed session is still found by its key"
        );
        if session.claimed {
            self.release_name(id, Name::truncating(session.name.as_bytes()), out);
        }
        // A name still pending is given back when its grant finds no session.
        self.clients.release(endpoint.ip());
        for channel in session.channels {
            self.part(id, channel, out);
            debug_assert!(
                self.clients
                    .local
                    .get(&channel)
                    .is_none_or(|l| l.by_protocol.iter().all(|m| m.get(&id).is_none())),
                "a closed session is still a local member"
            );
        }
    }

    fn join(&mut self, id: SessionId, channel: Name, out: &mut Outbox) -> Result<Done, Refusal> {
        if !proto::is_printable_name(channel.as_bytes()) {
            self.counters.dropped(DropReason::BadName);
            return Err(Refusal::BadChannelName);
        }
        let limits = &self.cfg.limits;
        let (per_user, per_server) = (limits.channels_per_user, limits.channels);
        let new_channel = !self.clients.directory.contains(&channel);
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            return Err(Refusal::NotLoggedIn);
        };
        let Some(session) = self.clients.sessions.get_mut(id) else {
            return Err(Refusal::NotLoggedIn);
        };
        if session.channels.contains(&channel) {
            return Ok(Done::Joined(channel));
        }
        if session.channels.len() >= per_user {
            self.counters.dropped(DropReason::UserChannelLimit);
            return Err(Refusal::TooManyChannels);
        }
        if new_channel && self.clients.directory.len() >= per_server {
            self.counters.dropped(DropReason::ChannelLimit);
            return Err(Refusal::ServerChannelLimit(channel));
        }
        session.channels.push(channel);
        debug_assert!(session.channels.len() <= per_user);
        let name = session.name;
        debug_assert_eq!(id.home, self.shard, "a session lives on its home shard");
        let local = self.clients.local.entry(channel).or_default();
        let added = local.by_protocol[protocol.index()].insert(id, endpoint);
        debug_assert!(added, "a new member was on the local list already");
        self.member_joined_at_owner(channel, id, name, protocol, out);
        Ok(Done::Joined(channel))
    }

    /// Tells the owner of `channel` that the session is a member named `name` (or renamed).
    pub(super) fn member_joined_at_owner(
        &mut self,
        channel: Name,
        session: SessionId,
        name: Nick,
        protocol: Protocol,
        out: &mut Outbox,
    ) {
        let signed_in = self
            .clients
            .sessions
            .get(session)
            .is_some_and(|s| s.signed_in);
        let msg = ShardMsg::Joined {
            channel,
            session,
            user: Person {
                name: Name::truncating(name.as_bytes()),
                signed_in,
            },
            watches: protocol.wants_presence(),
        };
        self.send_to_owner(msg, out);
    }

    /// Whether the session is in `channel`, and if not, the right refusal.
    fn require_member(&self, id: SessionId, channel: &Name) -> Result<(), Refusal> {
        let member = self
            .clients
            .sessions
            .get(id)
            .is_some_and(|s| s.channels.contains(channel));
        match member {
            true => Ok(()),
            false if self.clients.directory.contains(channel) => {
                Err(Refusal::NotInChannel(*channel))
            }
            false => Err(Refusal::NoChannel(*channel)),
        }
    }

    fn remove_local(&mut self, channel: Name, id: SessionId) {
        let Some(local) = self.clients.local.get_mut(&channel) else {
            return;
        };
        for members in &mut local.by_protocol {
            members.remove(&id);
        }
        debug_assert!(
            local.by_protocol.iter().all(|m| m.get(&id).is_none()),
            "a removed member is still listed"
        );
        if local.is_empty() {
            self.clients.local.remove(&channel);
        }
    }

    /// Takes the session off this shard's member list of `channel` and tells the channel's owner.
    fn part(&mut self, session: SessionId, channel: Name, out: &mut Outbox) {
        self.remove_local(channel, session);
        self.send_to_owner(ShardMsg::Left { channel, session }, out);
    }

    /// The owner could not create `channel` for a join: undo it and tell the user.
    pub(super) fn join_refused(
        &mut self,
        now: Duration,
        channel: Name,
        id: SessionId,
        out: &mut Outbox,
    ) {
        let Some(key) = self.clients.sessions.key(id) else {
            return;
        };
        let Some(session) = self.clients.sessions.get_mut(id) else {
            return;
        };
        if !session.channels.contains(&channel) {
            return;
        }
        session.channels.retain(|c| *c != channel);
        debug_assert!(!session.channels.contains(&channel));
        self.remove_local(channel, id);
        let mut buf = [0u8; frontend::MAX_REPLY];
        let me = self.name_of(id);
        if let Some(len) =
            key.1
                .encode_refusal(&me, &Refusal::ServerChannelLimit(channel), &mut buf)
        {
            self.send_reply(now, key.0, &buf[..len], true, out);
        }
    }

    /// The owner did not send the session's message in `channel` (the cluster is a whole
    /// window behind): the user is told, so that it may say it again.
    pub(super) fn say_refused(
        &mut self,
        now: Duration,
        channel: Name,
        id: SessionId,
        out: &mut Outbox,
    ) {
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            return;
        };
        let mut buf = [0u8; frontend::MAX_REPLY];
        let me = self.name_of(id);
        if let Some(len) = protocol.encode_refusal(&me, &Refusal::Backlog(channel), &mut buf) {
            self.send_reply(now, endpoint, &buf[..len], true, out);
        }
    }

    /// Sends the message to every member this shard is home to, encoded once per protocol.
    pub(super) fn deliver(
        &mut self,
        now: Duration,
        channel: Name,
        chat: &Chat,
        stamp: Stamp,
        out: &mut Outbox,
    ) {
        let Some(local) = self.clients.local.get(&channel) else {
            return;
        };
        debug_assert!(!local.is_empty(), "an empty local member list is kept");
        let origin = match stamp.origin {
            Origin::Here => Some(self.cfg.local),
            Origin::Member(i) => self
                .cfg
                .cluster()
                .and_then(|c| c.members.get(usize::from(i)))
                .map(|m| m.bind),
            Origin::Unknown => None,
        };
        let delivery = Delivery {
            channel: &channel,
            chat,
            id: stamp.id,
            origin,
            unix_ms: self.cfg.epoch_unix_ms + now.as_millis() as u64,
        };
        for protocol in Protocol::ALL {
            let members = &local.by_protocol[protocol.index()];
            if members.is_empty() {
                continue;
            }
            let payload = out.payload(protocol.max_chat(), |buf| {
                protocol.encode_chat(&delivery, buf).ok_or(())
            });
            let Some(payload) = payload else { continue };
            if protocol.echoes_own_chat() || stamp.origin != Origin::Here {
                for &(_, endpoint) in members.iter() {
                    out.send_to(endpoint, payload);
                }
                continue;
            }
            // Names are one per server: the member who goes by the sender's name said it.
            let sessions = &self.clients.sessions;
            for &(id, endpoint) in members.iter() {
                if sessions
                    .get(id)
                    .is_none_or(|s| s.name.as_bytes() != chat.user())
                {
                    out.send_to(endpoint, payload);
                }
            }
        }
        self.counters.deliveries.add(local.len() as u64);
    }

    /// Tells the members this shard is home to whose protocol shows presence that `user`
    /// joined or left `channel`.
    pub(super) fn deliver_presence(
        &mut self,
        channel: Name,
        user: Person,
        change: Change,
        out: &mut Outbox,
    ) {
        let Some(local) = self.clients.local.get(&channel) else {
            return;
        };
        debug_assert!(!local.is_empty(), "an empty local member list is kept");
        for protocol in Protocol::ALL.into_iter().filter(|p| p.wants_presence()) {
            let members = &local.by_protocol[protocol.index()];
            if members.is_empty() {
                continue;
            }
            // A rename, where the protocol has no word for it: the old name left, the new
            // one joined.
            let events: SmallVec<[(Person, Change); 2]> = match change {
                Change::Renamed { from } if !protocol.shows_renames() => {
                    smallvec::smallvec![(from, Change::Left), (user, Change::Joined)]
                }
                change => smallvec::smallvec![(user, change)],
            };
            for (user, change) in events {
                let payload = out.payload(frontend::MAX_REPLY, |buf| {
                    protocol
                        .encode_presence(&channel, &user, change, buf)
                        .ok_or(())
                });
                if let Some(payload) = payload {
                    for &(_, endpoint) in members.iter() {
                        out.send_to(endpoint, payload);
                    }
                }
            }
        }
    }

    /// Logs out sessions silent for longer than the user timeout, longest-silent first and at
    /// most [`EXPIRE_BATCH`] per call; true when more are due.
    pub(super) fn expire_users(&mut self, now: Duration, out: &mut Outbox) -> bool {
        let timeout = self.cfg.user_timeout;
        let due = |sessions: &Sessions<Session>| {
            sessions
                .oldest()
                .filter(|&(_, seen)| now.saturating_sub(seen) > timeout)
                .map(|(id, _)| id)
        };
        for _ in 0..EXPIRE_BATCH {
            let Some(id) = due(&self.clients.sessions) else {
                return false;
            };
            if self
                .clients
                .sessions
                .key(id)
                .is_some_and(|k| !k.0.spoofable())
            {
                // A connection's session lasts as long as the connection: the stream thread
                // closes a silent one itself (it pings), so here it only goes to the back.
                self.clients.sessions.touch(id, now);
                continue;
            }
            self.counters.users_expired.inc();
            if let (true, Some((endpoint, protocol))) =
                (self.cfg.verbose, self.clients.sessions.key(id))
            {
                protocol.log_expired(&self.settings, endpoint, out);
            }
            self.close(id, out);
        }
        due(&self.clients.sessions).is_some()
    }
}
