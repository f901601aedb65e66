//! The home shard's half of the text line protocol: sessions keyed by source address, the
//! commands and their one-line replies. A text user in room N is a member of channel `N`, the
//! same channel a DuckChat user joins by that name, so the two protocols share every room.

use super::clients::Protocol;
use super::{Chat, DropReason, Engine, Lossy, Outbox, ShardMsg};
use crate::proto::text::{self, Line, NickError, RoomError};
use crate::proto::{Name, Nick};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) struct TextSession {
    nick: Nick,
    room: Option<u32>,
    last_seen: Duration,
}

/// The channel of room `n`: its decimal number.
pub(super) fn room_channel(n: u32) -> Name {
    let mut digits = arrayvec::ArrayString::<10>::new();
    let _ = write!(digits, "{n}"); // at most 10 digits: always fits
    Name::from(digits.as_str())
}

impl Engine {
    pub(super) fn text_request(
        &mut self,
        now: Duration,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut Outbox,
    ) {
        match text::parse(datagram) {
            Line::Join(arg) => self.text_join(now, src, arg, out),
            Line::Part => self.text_part(now, src, out),
            Line::Nick(nick) => self.text_nick(now, src, nick, out),
            Line::Quit => {
                if let Some(session) = self.clients.text.remove(&src) {
                    self.log_event(out, format_args!("Client {src} quits"));
                    if let Some(room) = session.room {
                        self.leave_room(src, room, out);
                    }
                }
            }
            Line::Unknown(word) => {
                self.touch(now, src);
                let word = &word[..word.len().min(32)];
                self.reply(
                    src,
                    format_args!("-ERR Unknown command {}", Lossy(word)),
                    out,
                );
            }
            Line::Chat(line) => self.text_chat(now, src, line, out),
        }
    }

    fn text_join(&mut self, now: Duration, src: SocketAddr, arg: &[u8], out: &mut Outbox) {
        let rooms = self.cfg.rooms;
        if let Some(m) = self.clients.text.get(&src).and_then(|s| s.room) {
            self.touch(now, src);
            return self.reply(src, format_args!("-ERR You are already in room #{m}"), out);
        }
        let room = match text::parse_room(arg, rooms) {
            Ok(room) => room,
            Err(RoomError::Missing) => {
                return self.reply(
                    src,
                    format_args!("-ERR Usage: /join N (rooms 1 to {rooms})"),
                    out,
                )
            }
            Err(RoomError::NotANumber | RoomError::OutOfRange) => {
                let arg = &arg[..arg.len().min(32)];
                return self.reply(
                    src,
                    format_args!("-ERR No room '{}': rooms are 1 to {rooms}", Lossy(arg)),
                    out,
                );
            }
        };
        let Some(session) = self.text_session(now, src, out) else {
            return;
        };
        session.room = Some(room);
        let user = Name::truncating(session.nick.as_bytes());
        let channel = room_channel(room);
        self.add_local(channel, src, Protocol::Text);
        self.send_to_owner(
            ShardMsg::Joined {
                channel,
                client: src,
                user,
                home: self.shard,
            },
            out,
        );
        self.log_event(out, format_args!("Client {src} joins chat room #{room}"));
        self.reply(
            src,
            format_args!("+OK You are now in chat room #{room}"),
            out,
        );
    }

    fn text_part(&mut self, now: Duration, src: SocketAddr, out: &mut Outbox) {
        self.touch(now, src);
        let Some(room) = self.clients.text.get_mut(&src).and_then(|s| s.room.take()) else {
            return self.reply(src, format_args!("-ERR You are not in a chat room"), out);
        };
        self.leave_room(src, room, out);
        self.log_event(out, format_args!("Client {src} leaves chat room #{room}"));
        self.reply(
            src,
            format_args!("+OK You have left chat room #{room}"),
            out,
        );
    }

    fn leave_room(&mut self, src: SocketAddr, room: u32, out: &mut Outbox) {
        let channel = room_channel(room);
        self.remove_local(channel, src, Protocol::Text);
        self.send_to_owner(
            ShardMsg::Left {
                channel,
                client: src,
                home: self.shard,
            },
            out,
        );
    }

    fn text_nick(&mut self, now: Duration, src: SocketAddr, nick: &[u8], out: &mut Outbox) {
        let problem = match text::check_nick(nick) {
            Ok(()) => None,
            Err(NickError::Missing) => Some("-ERR Usage: /nick NAME"),
            Err(NickError::TooLong) => Some("-ERR Nickname too long (at most 63 bytes)"),
            Err(NickError::HasAngle) => Some("-ERR A nickname must not contain '>'"),
        };
        if let Some(problem) = problem {
            self.touch(now, src);
            return self.reply(src, format_args!("{problem}"), out);
        }
        let Some(session) = self.text_session(now, src, out) else {
            return;
        };
        session.nick = Nick::truncating(nick);
        if let Some(room) = session.room {
            // Already a member: the owner renames it in its WHO list.
            let msg = ShardMsg::Joined {
                channel: room_channel(room),
                client: src,
                user: Name::truncating(nick),
                home: self.shard,
            };
            self.send_to_owner(msg, out);
        }
        self.reply(
            src,
            format_args!("+OK Nickname set to '{}'", Lossy(nick)),
            out,
        );
    }

    fn text_chat(&mut self, now: Duration, src: SocketAddr, line: &[u8], out: &mut Outbox) {
        let Some(session) = self.clients.text.get_mut(&src) else {
            return self.reply(src, format_args!("-ERR You are not in a chat room"), out);
        };
        session.last_seen = now;
        let Some(room) = session.room else {
            return self.reply(src, format_args!("-ERR You are not in a chat room"), out);
        };
        if line.is_empty() {
            return self.reply(src, format_args!("-ERR Empty message"), out);
        }
        if line.len() > text::MAX_MESSAGE {
            let max = text::MAX_MESSAGE;
            return self.reply(
                src,
                format_args!("-ERR Message too long (at most {max} bytes)"),
                out,
            );
        }
        let chat = Chat::new(session.nick.as_bytes(), line);
        self.send_to_owner(
            ShardMsg::Said {
                channel: room_channel(room),
                chat,
            },
            out,
        );
    }

    /// The session at `src`, created with the default nick `ip:port` if new; `None` (after an
    /// error reply) when the shard is full.
    fn text_session(
        &mut self,
        now: Duration,
        src: SocketAddr,
        out: &mut Outbox,
    ) -> Option<&mut TextSession> {
        if !self.clients.text.contains_key(&src) {
            if self.clients.text.len() >= self.cfg.limits.sessions_per_shard {
                self.counters.dropped(DropReason::SessionLimit);
                self.reply(src, format_args!("-ERR Server full"), out);
                return None;
            }
            let mut nick = arrayvec::ArrayString::<63>::new();
            let _ = write!(nick, "{src}"); // an IPv6 address with port fits in 63 bytes
            self.clients.text.insert(
                src,
                TextSession {
                    nick: Nick::from(nick.as_str()),
                    room: None,
                    last_seen: now,
                },
            );
        }
        let session = self.clients.text.get_mut(&src)?;
        session.last_seen = now;
        Some(session)
    }

    fn touch(&mut self, now: Duration, src: SocketAddr) {
        if let Some(session) = self.clients.text.get_mut(&src) {
            session.last_seen = now;
        }
    }

    /// One `+OK`/`-ERR` line (never to a server: it would take it for chat).
    fn reply(&mut self, dst: SocketAddr, line: std::fmt::Arguments<'_>, out: &mut Outbox) {
        if self.is_server(&dst) {
            return self.counters.errors_suppressed.inc();
        }
        if let Some(payload) = out.payload(256, |buf| text::encode_reply(buf, line)) {
            if out.bytes(payload).starts_with(b"-") {
                self.counters.errors_sent.inc();
            }
            out.send(dst, payload);
        }
    }

    /// Forgets text users that are in no room and have been silent for longer than the user
    /// timeout. Users in a room stay: the protocol has no keep-alive, and a listener must keep
    /// receiving; the session limit bounds them.
    pub(super) fn expire_text_users(&mut self, now: Duration) {
        let timeout = self.cfg.user_timeout;
        let before = self.clients.text.len();
        self.clients
            .text
            .retain(|_, s| s.room.is_some() || now.saturating_sub(s.last_seen) <= timeout);
        let expired = before - self.clients.text.len();
        self.counters.users_expired.add(expired as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_channels_are_decimal() {
        assert_eq!(room_channel(7), Name::from("7"));
        assert_eq!(room_channel(u32::MAX), Name::from("4294967295"));
    }
}
