//! The home shard's half: client sessions (one table per protocol, in order of activity), the
//! requests of the DuckChat client protocol and their refusals, delivery to local members of
//! both protocols, and what keeps hostile sources harmless:
//!
//! - a full table evicts its longest-silent session instead of refusing a newcomer, and one IP
//!   address may hold at most `sessions_per_ip` sessions, so spoofed logins cannot lock users out;
//! - a source without a session never gets a reply larger than its request ([`Engine::refuse`]);
//! - every reply is charged to its destination's [`ReplyBudget`], and long LIST and WHO
//!   answers are paced by it ([`answers`]);
//! - a session gets at most `errors_in_a_row` errors before it does something that succeeds, so
//!   two servers tricked into taking each other for clients stop answering each other.

use super::answers;
use super::budget::ReplyBudget;
use super::members::Members;
use super::sessions::Sessions;
use super::text_clients::TextSession;
use super::{Chat, DropReason, Engine, Limits, Lossy, Outbox, ShardMsg};
use crate::proto::duckchat::{self, Inbound};
use crate::proto::{text, Name, Text};
use ahash::AHashMap;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub(super) struct Session {
    name: Name,
    channels: SmallVec<[Name; 4]>,
    /// Requests refused since the last one that succeeded.
    errors_in_a_row: u32,
    /// A LIST or WHO answer to this session is waiting for reply budget: another LIST or WHO
    /// meanwhile adds nothing (one session cannot fill the queue of waiting answers).
    pub(super) list_waiting: bool,
    pub(super) who_waiting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    DuckChat,
    Text,
}

/// Why a DuckChat request is refused; each is one TXT_ERROR text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    NotLoggedIn,
    UnknownCommand,
    NoChannel(Name),
    NotInChannel(Name),
    TooManyChannels,
    ServerChannelLimit,
    BadChannelName,
    BadUserName,
}

impl Refusal {
    /// The error text, at most 63 bytes.
    fn text<'b>(&self, buf: &'b mut [u8; 96]) -> &'b [u8] {
        let (prefix, name): (&[u8], &[u8]) = match self {
            Refusal::NotLoggedIn => (b"Not logged in", b""),
            Refusal::UnknownCommand => (b"*Unknown command", b""),
            Refusal::NoChannel(c) => (NO_CHANNEL, c.as_bytes()),
            Refusal::NotInChannel(c) => (b"You are not in channel ", c.as_bytes()),
            Refusal::TooManyChannels => (b"Too many channels", b""),
            Refusal::ServerChannelLimit => (b"Too many channels on this server", b""),
            Refusal::BadChannelName => (b"Channel names must be printable UTF-8", b""),
            Refusal::BadUserName => (b"User names must be printable UTF-8", b""),
        };
        let end = prefix.len() + name.len();
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()..end].copy_from_slice(name);
        &buf[..end]
    }
}

const NO_CHANNEL: &[u8] = b"No channel by the name ";

/// The members of one channel that this shard is home to, by protocol: each list gets one
/// payload, encoded once.
#[derive(Default)]
pub(super) struct Local {
    duckchat: Members<()>,
    text: Members<()>,
}

impl Local {
    fn list(&mut self, protocol: Protocol) -> &mut Members<()> {
        match protocol {
            Protocol::DuckChat => &mut self.duckchat,
            Protocol::Text => &mut self.text,
        }
    }
}

pub(super) struct Clients {
    pub(super) duckchat: Sessions<Session>,
    pub(super) text: Sessions<TextSession>,
    /// Sessions of both protocols per source IP.
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
    pub(super) fn new(limits: &Limits, hash: ahash::RandomState) -> Self {
        Self {
            duckchat: Sessions::default(),
            text: Sessions::default(),
            per_ip: AHashMap::new(),
            local: AHashMap::new(),
            directory: BTreeSet::new(),
            replies: ReplyBudget::new(limits.reply_burst, limits.reply_bytes_per_sec, hash),
            waiting: answers::Waiting::default(),
        }
    }

    /// Counts a new session of `ip`; false (nothing counted) when the address has its maximum.
    pub(super) fn admit(&mut self, ip: IpAddr, limit: usize) -> bool {
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n as usize >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub(super) fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    pub(super) fn census(&self) -> super::Census {
        super::Census {
            duckchat_sessions: self.duckchat.len(),
            text_sessions: self.text.len(),
            sessions_by_address: self.per_ip.values().map(|&n| n as usize).sum(),
            busiest_address: self.per_ip.values().max().map_or(0, |&n| n as usize),
            local_channels: self.local.len(),
            local_members: self
                .local
                .values()
                .map(|l| l.duckchat.len() + l.text.len())
                .sum(),
            directory: self.directory.len(),
            paced_answers: self.waiting.len(),
            ..Default::default()
        }
    }

    /// Every member of every channel this shard is home to (both protocols).
    pub(super) fn local_members(&self) -> impl Iterator<Item = (Name, SocketAddr)> + '_ {
        self.local.iter().flat_map(|(name, l)| {
            l.duckchat
                .addrs()
                .chain(l.text.addrs())
                .map(move |addr| (*name, addr))
        })
    }

    /// LIST or WHO answers still waiting for budget.
    pub(super) fn pacing(&self) -> bool {
        !self.waiting.is_empty()
    }
}

/// How many expired or evicted sessions one timer event handles, so that a mass expiry is spread
/// over many short steps instead of stalling the shard.
pub(super) const EXPIRE_BATCH: usize = 1024;
/// How often paced answers and unfinished expiry go on.
pub(super) const PACE_TICK: Duration = Duration::from_millis(5);

impl Engine {
    pub(super) fn client_request(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        req: Inbound<'_>,
        out: &mut Outbox,
    ) {
        if let Inbound::Login { user } = req {
            return self.login(now, src, len, user, out);
        }
        let Some(session) = self.clients.duckchat.touch(&src, now) else {
            if matches!(req, Inbound::Leave { .. }) && len == duckchat::TXT_ERROR_LEN {
                // The shape of a TXT_ERROR: another server's error, not a request.
                return self.counters.dropped(DropReason::ReplyShaped);
            }
            return self.refuse(now, src, len, Refusal::NotLoggedIn, out);
        };
        let (user, list_waiting, who_waiting) =
            (session.name, session.list_waiting, session.who_waiting);
        if self.cfg.verbose {
            self.log_request(src, &user, &req, out);
        }
        let result = match req {
            Inbound::Logout => {
                self.logout(src, out);
                Ok(())
            }
            Inbound::Join { channel } => self.join(src, Name::truncating(channel), out),
            Inbound::Leave { channel } => self.leave(src, Name::truncating(channel), out),
            Inbound::Say { channel, text } => {
                let channel = Name::truncating(channel);
                self.require_member(src, &channel).map(|()| {
                    let chat = Chat::Short {
                        user,
                        text: Text::truncating(text),
                    };
                    self.send_to_owner(ShardMsg::Said { channel, chat }, out);
                })
            }
            Inbound::List => {
                if !list_waiting {
                    self.answer_list(now, src, None, out);
                }
                Ok(())
            }
            Inbound::Who { channel } => {
                let channel = Name::truncating(channel);
                // A channel the user is in exists even before the owner's directory update
                // for it arrives; the owner handles the JOIN before this WHO (one queue).
                let member = self.require_member(src, &channel).is_ok();
                if !member && !self.clients.directory.contains(&channel) {
                    Err(Refusal::NoChannel(channel))
                } else {
                    if !who_waiting {
                        let msg = ShardMsg::Who {
                            channel,
                            client: src,
                            home: self.shard,
                        };
                        self.send_to_owner(msg, out);
                    }
                    Ok(())
                }
            }
            Inbound::KeepAlive => Ok(()),
            Inbound::Login { .. }
            | Inbound::S2sJoin { .. }
            | Inbound::S2sLeave { .. }
            | Inbound::S2sSay(_) => Err(Refusal::UnknownCommand),
        };
        self.settle(now, src, result, out);
    }

    /// A datagram with an unknown type code.
    pub(super) fn unknown_command(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        out: &mut Outbox,
    ) {
        if self.clients.duckchat.touch(&src, now).is_some() {
            self.settle(now, src, Err(Refusal::UnknownCommand), out);
        } else {
            self.refuse(now, src, len, Refusal::NotLoggedIn, out);
        }
    }

    /// The outcome of a logged-in user's request: an error text for a refusal, unless the user
    /// has been refused `errors_in_a_row` times running (only a peer answering our errors with
    /// errors does that) or its address has no reply budget left.
    fn settle(
        &mut self,
        now: Duration,
        src: SocketAddr,
        result: Result<(), Refusal>,
        out: &mut Outbox,
    ) {
        let limit = self.cfg.limits.errors_in_a_row;
        let Some(session) = self.clients.duckchat.get_mut(&src) else {
            return; // a LOGOUT
        };
        match result {
            Ok(()) => session.errors_in_a_row = 0,
            Err(refusal) => {
                session.errors_in_a_row = session.errors_in_a_row.saturating_add(1);
                if session.errors_in_a_row > limit {
                    return self.counters.errors_suppressed.inc();
                }
                self.send_error(now, src, refusal, out);
            }
        }
    }

    /// A refusal to a source without a session: it gets the error only when its request was at
    /// least as long (a spoofed source must never receive more than was sent in its name).
    fn refuse(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        refusal: Refusal,
        out: &mut Outbox,
    ) {
        if len < duckchat::TXT_ERROR_LEN {
            return self.counters.errors_suppressed.inc();
        }
        self.send_error(now, src, refusal, out);
    }

    fn send_error(&mut self, now: Duration, dst: SocketAddr, refusal: Refusal, out: &mut Outbox) {
        if !self.may_reply(now, dst, duckchat::TXT_ERROR_LEN) {
            return;
        }
        self.counters.errors_sent.inc();
        let mut buf = [0u8; 96];
        let message = refusal.text(&mut buf);
        out.send_new(dst, duckchat::TXT_ERROR_LEN, |b| {
            duckchat::encode_txt_error(b, message)
        });
    }

    /// Whether a reply of `bytes` may go to `dst`: never to a server (it would take it for a
    /// request), and only within the address's reply budget. Refusals are counted.
    pub(super) fn may_reply(&mut self, now: Duration, dst: SocketAddr, bytes: usize) -> bool {
        let allowed = !self.is_server(&dst) && self.clients.replies.allow(now, dst.ip(), bytes);
        if !allowed {
            self.counters.errors_suppressed.inc();
        }
        allowed
    }

    fn login(&mut self, now: Duration, src: SocketAddr, len: usize, user: &[u8], out: &mut Outbox) {
        let name = Name::truncating(user);
        if self.cfg.verbose {
            out.log(format_args!(
                "{} {} recv Request login {}",
                self.cfg.local, src, name
            ));
        }
        let valid = text::is_printable_name(name.as_bytes());
        if let Some(session) = self.clients.duckchat.touch(&src, now) {
            if !valid {
                self.counters.dropped(DropReason::BadName);
                return self.settle(now, src, Err(Refusal::BadUserName), out);
            }
            // A second login from the same address renames; owners update their WHO lists.
            session.name = name;
            session.errors_in_a_row = 0;
            let channels = session.channels.clone();
            for channel in channels {
                self.member_joined_at_owner(channel, src, name, out);
            }
            return;
        }
        if !valid {
            self.counters.dropped(DropReason::BadName);
            return self.refuse(now, src, len, Refusal::BadUserName, out);
        }
        if !self.make_room_for_session(src, Protocol::DuckChat, out) {
            return self.refuse(now, src, len, Refusal::NotLoggedIn, out);
        }
        let session = Session {
            name,
            channels: SmallVec::new(),
            errors_in_a_row: 0,
            list_waiting: false,
            who_waiting: false,
        };
        self.clients.duckchat.insert(src, now, session);
    }

    /// Admits one more session of `protocol` from `src`: false (counted) when its IP address has
    /// its maximum; when the table is full, the longest-silent session makes room (counted).
    pub(super) fn make_room_for_session(
        &mut self,
        src: SocketAddr,
        protocol: Protocol,
        out: &mut Outbox,
    ) -> bool {
        if !self
            .clients
            .admit(src.ip(), self.cfg.limits.sessions_per_ip)
        {
            self.counters.dropped(DropReason::IpLimit);
            return false;
        }
        let (sessions, oldest) = match protocol {
            Protocol::DuckChat => (self.clients.duckchat.len(), self.clients.duckchat.oldest()),
            Protocol::Text => (self.clients.text.len(), self.clients.text.oldest()),
        };
        let full = sessions >= self.cfg.limits.sessions_per_shard;
        if let (true, Some((victim, _))) = (full, oldest) {
            self.counters.sessions_evicted.inc();
            match protocol {
                Protocol::DuckChat => self.logout(victim, out),
                Protocol::Text => self.text_forget(victim, out),
            }
        }
        true
    }

    /// Removes the session at `src` from every channel and forgets it.
    fn logout(&mut self, src: SocketAddr, out: &mut Outbox) {
        let Some(session) = self.clients.duckchat.remove(&src) else {
            return;
        };
        self.clients.release(src.ip());
        for channel in session.channels {
            self.part(src, channel, out);
        }
    }

    fn join(&mut self, src: SocketAddr, channel: Name, out: &mut Outbox) -> Result<(), Refusal> {
        if !text::is_printable_name(channel.as_bytes()) {
            self.counters.dropped(DropReason::BadName);
            return Err(Refusal::BadChannelName);
        }
        let limits = &self.cfg.limits;
        let (per_user, per_server) = (limits.channels_per_user, limits.channels);
        let new_channel = !self.clients.directory.contains(&channel);
        let Some(session) = self.clients.duckchat.get_mut(&src) else {
            return Ok(());
        };
        if session.channels.contains(&channel) {
            return Ok(());
        }
        if session.channels.len() >= per_user {
            self.counters.dropped(DropReason::UserChannelLimit);
            return Err(Refusal::TooManyChannels);
        }
        if new_channel && self.clients.directory.len() >= per_server {
            self.counters.dropped(DropReason::ChannelLimit);
            return Err(Refusal::ServerChannelLimit);
        }
        session.channels.push(channel);
        let user = session.name;
        self.add_local(channel, src, Protocol::DuckChat);
        self.member_joined_at_owner(channel, src, user, out);
        Ok(())
    }

    /// Tells the owner of `channel` that `client` is a member named `user` (or renamed).
    pub(super) fn member_joined_at_owner(
        &mut self,
        channel: Name,
        client: SocketAddr,
        user: Name,
        out: &mut Outbox,
    ) {
        let msg = ShardMsg::Joined {
            channel,
            client,
            user,
            home: self.shard,
        };
        self.send_to_owner(msg, out);
    }

    fn leave(&mut self, src: SocketAddr, channel: Name, out: &mut Outbox) -> Result<(), Refusal> {
        self.require_member(src, &channel)?;
        if let Some(session) = self.clients.duckchat.get_mut(&src) {
            session.channels.retain(|c| *c != channel);
        }
        self.part(src, channel, out);
        Ok(())
    }

    /// Whether the user at `src` is in `channel`, and if not, the right refusal.
    fn require_member(&self, src: SocketAddr, channel: &Name) -> Result<(), Refusal> {
        let member = self
            .clients
            .duckchat
            .get(&src)
            .is_some_and(|s| s.channels.contains(channel));
        match member {
            true => Ok(()),
            false if self.clients.directory.contains(channel) => {
                Err(Refusal::NotInChannel(*channel))
            }
            false => Err(Refusal::NoChannel(*channel)),
        }
    }

    pub(super) fn add_local(&mut self, channel: Name, src: SocketAddr, protocol: Protocol) {
        let local = self.clients.local.entry(channel).or_default();
        local.list(protocol).insert(src, ());
    }

    pub(super) fn remove_local(&mut self, channel: Name, src: SocketAddr, protocol: Protocol) {
        let Some(local) = self.clients.local.get_mut(&channel) else {
            return;
        };
        local.list(protocol).remove(&src);
        if local.duckchat.is_empty() && local.text.is_empty() {
            self.clients.local.remove(&channel);
        }
    }

    /// Takes `src` off this shard's member list of `channel` and tells the channel's owner.
    fn part(&mut self, src: SocketAddr, channel: Name, out: &mut Outbox) {
        self.remove_local(channel, src, Protocol::DuckChat);
        self.member_left_at_owner(channel, src, out);
    }

    /// Tells the owner of `channel` that `client` is no longer a member.
    pub(super) fn member_left_at_owner(
        &mut self,
        channel: Name,
        client: SocketAddr,
        out: &mut Outbox,
    ) {
        self.send_to_owner(ShardMsg::Left { channel, client }, out);
    }

    /// The owner could not create `channel` for a join: undo it and tell the user.
    pub(super) fn join_refused(
        &mut self,
        now: Duration,
        channel: Name,
        client: SocketAddr,
        out: &mut Outbox,
    ) {
        if let Some(session) = self.clients.duckchat.get_mut(&client) {
            if session.channels.contains(&channel) {
                session.channels.retain(|c| *c != channel);
                self.remove_local(channel, client, Protocol::DuckChat);
                self.send_error(now, client, Refusal::ServerChannelLimit, out);
            }
        }
        self.text_join_refused(now, channel, client, out);
    }

    /// Sends the message to every member this shard is home to: a TXT_SAY (name and text cut
    /// to DuckChat's fields) to DuckChat users, `<nick> text` to text users.
    pub(super) fn deliver(&mut self, channel: Name, chat: &Chat, out: &mut Outbox) {
        let Some(local) = self.clients.local.get(&channel) else {
            return;
        };
        if !local.duckchat.is_empty() {
            let user = Name::truncating(chat.user());
            let text = Text::truncating(chat.text());
            if let Some(payload) = out.payload(duckchat::TXT_SAY_LEN, |buf| {
                duckchat::encode_txt_say(buf, &channel, &user, &text)
            }) {
                for member in local.duckchat.addrs() {
                    out.send(member, payload);
                }
            }
        }
        if !local.text.is_empty() {
            if let Some(payload) = out.payload(text::MAX_LINE, |buf| {
                text::encode_chat(buf, chat.user(), chat.text())
            }) {
                for member in local.text.addrs() {
                    out.send(member, payload);
                }
            }
        }
        let members = local.duckchat.len() + local.text.len();
        self.counters.deliveries.add(members as u64);
    }

    /// Logs out users of both protocols silent for longer than the user timeout, longest-silent
    /// first and at most [`EXPIRE_BATCH`] per call; true when more are due.
    pub(super) fn expire_users(&mut self, now: Duration, out: &mut Outbox) -> bool {
        let timeout = self.cfg.user_timeout;
        let due = |oldest: Option<(SocketAddr, Duration)>| {
            oldest
                .filter(|&(_, seen)| now.saturating_sub(seen) > timeout)
                .map(|(addr, _)| addr)
        };
        for _ in 0..EXPIRE_BATCH {
            if let Some(addr) = due(self.clients.duckchat.oldest()) {
                self.counters.users_expired.inc();
                if self.cfg.verbose {
                    out.log(format_args!("{} {} user timed out", self.cfg.local, addr));
                }
                self.logout(addr, out);
            } else if let Some(addr) = due(self.clients.text.oldest()) {
                self.counters.users_expired.inc();
                self.log_event(out, format_args!("Client {addr} timed out"));
                self.text_forget(addr, out);
            } else {
                return false;
            }
        }
        due(self.clients.duckchat.oldest()).is_some() || due(self.clients.text.oldest()).is_some()
    }

    fn log_request(&self, src: SocketAddr, user: &Name, req: &Inbound<'_>, out: &mut Outbox) {
        let local = self.cfg.local;
        match *req {
            Inbound::Logout => out.log(format_args!("{local} {src} recv Request logout {user}")),
            Inbound::Join { channel } => out.log(format_args!(
                "{local} {src} recv Request join {user} {}",
                Lossy(channel)
            )),
            Inbound::Leave { channel } => out.log(format_args!(
                "{local} {src} recv Request leave {user} {}",
                Lossy(channel)
            )),
            Inbound::Say { channel, text } => out.log(format_args!(
                "{local} {src} recv Request say {user} {} \"{}\"",
                Lossy(channel),
                Lossy(text)
            )),
            Inbound::List => out.log(format_args!("{local} {src} recv Request list {user}")),
            Inbound::Who { channel } => out.log(format_args!(
                "{local} {src} recv Request who {user} {}",
                Lossy(channel)
            )),
            Inbound::KeepAlive => {
                out.log(format_args!("{local} {src} recv Request keep alive {user}"))
            }
            _ => {}
        }
    }
}
