//! The home shard's half: sessions keyed by source address, the requests of the DuckChat
//! client protocol, the error texts, and delivery to local members of both protocols.

use super::text_clients::TextSession;
use super::{Chat, DropReason, Engine, Lossy, Outbox, ShardMsg};
use crate::proto::duckchat::{self, Inbound};
use crate::proto::{text, Name, Text};
use ahash::AHashMap;
use arrayvec::ArrayVec;
use smallvec::SmallVec;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) const NO_CHANNEL: &[u8] = b"No channel by the name ";

pub(super) struct Session {
    name: Name,
    channels: SmallVec<[Name; 4]>,
    last_seen: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    DuckChat,
    Text,
}

/// The members of one channel that this shard is home to, by protocol: each list gets one
/// payload, encoded once.
#[derive(Default)]
pub(super) struct Local {
    duckchat: Vec<SocketAddr>,
    text: Vec<SocketAddr>,
}

impl Local {
    fn list(&mut self, protocol: Protocol) -> &mut Vec<SocketAddr> {
        match protocol {
            Protocol::DuckChat => &mut self.duckchat,
            Protocol::Text => &mut self.text,
        }
    }
}

#[derive(Default)]
pub(super) struct Clients {
    sessions: AHashMap<SocketAddr, Session>,
    pub(super) text: AHashMap<SocketAddr, TextSession>,
    /// Members of each channel that this shard is home to.
    local: AHashMap<Name, Local>,
    /// Replica of every channel this server knows, sorted for LIST.
    pub(super) directory: BTreeSet<Name>,
    expired: Vec<SocketAddr>,
}

impl Engine {
    pub(super) fn client_request(
        &mut self,
        now: Duration,
        src: SocketAddr,
        req: Inbound<'_>,
        out: &mut Outbox,
    ) {
        if let Inbound::Login { user } = req {
            return self.login(now, src, Name::truncating(user), out);
        }
        let Some(session) = self.clients.sessions.get_mut(&src) else {
            return self.error(src, b"Not logged in", out);
        };
        session.last_seen = now;
        let user = session.name;
        if self.cfg.verbose {
            self.log_request(src, &user, &req, out);
        }
        match req {
            Inbound::Logout => self.logout(src, out),
            Inbound::Join { channel } => self.join(src, Name::truncating(channel), out),
            Inbound::Leave { channel } => self.leave(src, Name::truncating(channel), out),
            Inbound::Say { channel, text } => {
                let channel = Name::truncating(channel);
                if self.require_member(src, &channel, out) {
                    let chat = Chat::Short {
                        user,
                        text: Text::truncating(text),
                    };
                    self.send_to_owner(ShardMsg::Said { channel, chat }, out);
                }
            }
            Inbound::List => self.answer_list(src, out),
            Inbound::Who { channel } => {
                let channel = Name::truncating(channel);
                self.send_to_owner(
                    ShardMsg::Who {
                        channel,
                        client: src,
                    },
                    out,
                );
            }
            Inbound::KeepAlive => {}
            Inbound::Login { .. }
            | Inbound::S2sJoin { .. }
            | Inbound::S2sLeave { .. }
            | Inbound::S2sSay(_) => self.unknown_command(now, src, out),
        }
    }

    /// A datagram with an unknown type code.
    pub(super) fn unknown_command(&mut self, now: Duration, src: SocketAddr, out: &mut Outbox) {
        match self.clients.sessions.get_mut(&src) {
            Some(session) => {
                session.last_seen = now;
                self.error(src, b"*Unknown command", out)
            }
            None => self.error(src, b"Not logged in", out),
        }
    }

    fn login(&mut self, now: Duration, src: SocketAddr, name: Name, out: &mut Outbox) {
        if self.cfg.verbose {
            out.log(format_args!(
                "{} {} recv Request login {}",
                self.cfg.local, src, name
            ));
        }
        if let Some(session) = self.clients.sessions.get_mut(&src) {
            // A second login from the same address renames; owners update their WHO lists.
            session.name = name;
            session.last_seen = now;
            let channels = session.channels.clone();
            for channel in channels {
                let msg = ShardMsg::Joined {
                    channel,
                    client: src,
                    user: name,
                    home: self.shard,
                };
                self.send_to_owner(msg, out);
            }
            return;
        }
        if self.clients.sessions.len() >= self.cfg.limits.sessions_per_shard {
            self.counters.dropped(DropReason::SessionLimit);
            return self.error(src, b"Server full", out);
        }
        let session = Session {
            name,
            channels: SmallVec::new(),
            last_seen: now,
        };
        self.clients.sessions.insert(src, session);
    }

    /// Removes the session at `src` from every channel and forgets it.
    fn logout(&mut self, src: SocketAddr, out: &mut Outbox) {
        let Some(session) = self.clients.sessions.remove(&src) else {
            return;
        };
        for channel in session.channels {
            self.part(src, channel, out);
        }
    }

    fn join(&mut self, src: SocketAddr, channel: Name, out: &mut Outbox) {
        let limit = self.cfg.limits.channels_per_user;
        let Some(session) = self.clients.sessions.get_mut(&src) else {
            return;
        };
        if session.channels.contains(&channel) {
            return;
        }
        if session.channels.len() >= limit {
            self.counters.dropped(DropReason::UserChannelLimit);
            return self.error(src, b"Too many channels", out);
        }
        session.channels.push(channel);
        let user = session.name;
        self.add_local(channel, src, Protocol::DuckChat);
        let msg = ShardMsg::Joined {
            channel,
            client: src,
            user,
            home: self.shard,
        };
        self.send_to_owner(msg, out);
    }

    fn leave(&mut self, src: SocketAddr, channel: Name, out: &mut Outbox) {
        if !self.require_member(src, &channel, out) {
            return;
        }
        if let Some(session) = self.clients.sessions.get_mut(&src) {
            session.channels.retain(|c| *c != channel);
        }
        self.part(src, channel, out);
    }

    /// True when the user at `src` is in `channel`; otherwise answers with the right error.
    fn require_member(&mut self, src: SocketAddr, channel: &Name, out: &mut Outbox) -> bool {
        let member = self
            .clients
            .sessions
            .get(&src)
            .is_some_and(|s| s.channels.contains(channel));
        if !member {
            let prefix: &[u8] = if self.clients.directory.contains(channel) {
                b"You are not in channel "
            } else {
                NO_CHANNEL
            };
            self.error_about(src, prefix, channel, out);
        }
        member
    }

    pub(super) fn add_local(&mut self, channel: Name, src: SocketAddr, protocol: Protocol) {
        let local = self.clients.local.entry(channel).or_default();
        local.list(protocol).push(src);
    }

    pub(super) fn remove_local(&mut self, channel: Name, src: SocketAddr, protocol: Protocol) {
        let Some(local) = self.clients.local.get_mut(&channel) else {
            return;
        };
        let members = local.list(protocol);
        if let Some(i) = members.iter().position(|&m| m == src) {
            members.swap_remove(i);
        }
        if local.duckchat.is_empty() && local.text.is_empty() {
            self.clients.local.remove(&channel);
        }
    }

    /// Takes `src` off this shard's member list of `channel` and tells the channel's owner.
    fn part(&mut self, src: SocketAddr, channel: Name, out: &mut Outbox) {
        self.remove_local(channel, src, Protocol::DuckChat);
        let msg = ShardMsg::Left {
            channel,
            client: src,
            home: self.shard,
        };
        self.send_to_owner(msg, out);
    }

    fn answer_list(&mut self, src: SocketAddr, out: &mut Outbox) {
        let per = duckchat::names_per_datagram(duckchat::TXT_LIST_HEAD, duckchat::SPLIT_LIMIT);
        let mut names = self.clients.directory.iter().peekable();
        loop {
            let chunk: ArrayVec<&Name, 64> = names.by_ref().take(per.min(64)).collect();
            out.send_new(
                src,
                duckchat::TXT_LIST_HEAD + chunk.len() * duckchat::NAME_FIELD,
                |buf| duckchat::encode_txt_list(buf, chunk.into_iter()),
            );
            if names.peek().is_none() {
                break;
            }
        }
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
                for &member in &local.duckchat {
                    out.send(member, payload);
                }
            }
        }
        if !local.text.is_empty() {
            if let Some(payload) = out.payload(text::MAX_LINE, |buf| {
                text::encode_chat(buf, chat.user(), chat.text())
            }) {
                for &member in &local.text {
                    out.send(member, payload);
                }
            }
        }
        let members = local.duckchat.len() + local.text.len();
        self.counters.deliveries.add(members as u64);
    }

    pub(super) fn error(&mut self, dst: SocketAddr, message: &[u8], out: &mut Outbox) {
        if self.mute_errors || self.is_server(&dst) {
            // Servers never get error texts: they would answer them (see handle_datagram).
            return self.counters.errors_suppressed.inc();
        }
        self.counters.errors_sent.inc();
        out.send_new(dst, duckchat::TXT_ERROR_LEN, |buf| {
            duckchat::encode_txt_error(buf, message)
        });
    }

    /// An error text made of `prefix` and `channel` (the encoder truncates it to 63 bytes).
    pub(super) fn error_about(
        &mut self,
        dst: SocketAddr,
        prefix: &[u8],
        channel: &Name,
        out: &mut Outbox,
    ) {
        let mut message = [0u8; 64 + 31];
        message[..prefix.len()].copy_from_slice(prefix);
        let end = prefix.len() + channel.len();
        message[prefix.len()..end].copy_from_slice(channel.as_bytes());
        self.error(dst, &message[..end], out);
    }

    /// Logs out every user silent for longer than the user timeout.
    pub(super) fn expire_users(&mut self, now: Duration, out: &mut Outbox) {
        let timeout = self.cfg.user_timeout;
        let mut expired = std::mem::take(&mut self.clients.expired);
        expired.extend(
            self.clients
                .sessions
                .iter()
                .filter(|(_, s)| now.saturating_sub(s.last_seen) > timeout)
                .map(|(&addr, _)| addr),
        );
        for addr in expired.drain(..) {
            self.counters.users_expired.inc();
            if self.cfg.verbose {
                out.log(format_args!("{} {} user timed out", self.cfg.local, addr));
            }
            self.logout(addr, out);
        }
        self.clients.expired = expired;
        self.expire_text_users(now);
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
