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
}

/// The channel of room `n`: its decimal number.
pub(super) fn room_channel(n: u32) -> Name {
    let mut digits = arrayvec::ArrayString::<10>::new();
    let _ = write!(digits, "{n}"); // at most 10 digits: always fits
    Name::from(digits.as_str())
}

impl Engine {
    /// One text line from `src`. Any datagram keeps its session alive, as in DuckChat.
    pub(super) fn text_request(
        &mut self,
        now: Duration,
        src: SocketAddr,
        datagram: &[u8],
        out: &mut Outbox,
    ) {
        let line = text::parse(datagram);
        if line == Line::Reply {
            return self.counters.dropped(DropReason::ReplyShaped);
        }
        self.clients.text.touch(&src, now);
        let len = datagram.len();
        match line {
            Line::Join(arg) => self.text_join(now, src, len, arg, out),
            Line::Part => self.text_part(now, src, len, out),
            Line::Nick(nick) => self.text_nick(now, src, len, nick, out),
            Line::Quit => {
                if self.clients.text.contains(&src) {
                    self.log_event(out, format_args!("Client {src} quits"));
                    self.text_forget(src, out);
                }
            }
            Line::Unknown(word) => {
                let word = &word[..word.len().min(32)];
                self.reply(
                    now,
                    src,
                    len,
                    format_args!("-ERR Unknown command {}", Lossy(word)),
                    out,
                );
            }
            Line::Chat(line) => self.text_chat(now, src, len, line, out),
            Line::Reply => {} // dropped above, before it could keep a session alive
        }
    }

    fn text_join(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        arg: &[u8],
        out: &mut Outbox,
    ) {
        let rooms = self.cfg.rooms;
        if let Some(m) = self.clients.text.get(&src).and_then(|s| s.room) {
            return self.reply(
                now,
                src,
                len,
                format_args!("-ERR You are already in room #{m}"),
                out,
            );
        }
        let room = match text::parse_room(arg, rooms) {
            Ok(room) => room,
            Err(RoomError::Missing) => {
                return self.reply(
                    now,
                    src,
                    len,
                    format_args!("-ERR Usage: /join N (rooms 1 to {rooms})"),
                    out,
                )
            }
            Err(RoomError::NotANumber | RoomError::OutOfRange) => {
                let arg = &arg[..arg.len().min(32)];
                return self.reply(
                    now,
                    src,
                    len,
                    format_args!("-ERR No room '{}': rooms are 1 to {rooms}", Lossy(arg)),
                    out,
                );
            }
        };
        let Some(session) = self.text_session(now, src, len, out) else {
            return;
        };
        session.room = Some(room);
        let user = Name::truncating(session.nick.as_bytes());
        let channel = room_channel(room);
        self.add_local(channel, src, Protocol::Text);
        self.member_joined_at_owner(channel, src, user, out);
        self.log_event(out, format_args!("Client {src} joins chat room #{room}"));
        self.reply(
            now,
            src,
            len,
            format_args!("+OK You are now in chat room #{room}"),
            out,
        );
    }

    fn text_part(&mut self, now: Duration, src: SocketAddr, len: usize, out: &mut Outbox) {
        let Some(room) = self.clients.text.get_mut(&src).and_then(|s| s.room.take()) else {
            return self.reply(
                now,
                src,
                len,
                format_args!("-ERR You are not in a chat room"),
                out,
            );
        };
        self.leave_room(src, room, out);
        self.log_event(out, format_args!("Client {src} leaves chat room #{room}"));
        self.reply(
            now,
            src,
            len,
            format_args!("+OK You have left chat room #{room}"),
            out,
        );
    }

    fn leave_room(&mut self, src: SocketAddr, room: u32, out: &mut Outbox) {
        let channel = room_channel(room);
        self.remove_local(channel, src, Protocol::Text);
        self.member_left_at_owner(channel, src, out);
    }

    /// The owner could not create the room's channel (see [`Engine::join_refused`]).
    pub(super) fn text_join_refused(
        &mut self,
        now: Duration,
        channel: Name,
        client: SocketAddr,
        out: &mut Outbox,
    ) {
        let Some(session) = self.clients.text.get_mut(&client) else {
            return;
        };
        let Some(room) = session.room.filter(|&r| room_channel(r) == channel) else {
            return;
        };
        session.room = None;
        self.remove_local(channel, client, Protocol::Text);
        self.reply(
            now,
            client,
            usize::MAX,
            format_args!("-ERR Too many channels on this server: not in room #{room}"),
            out,
        );
    }

    /// Forgets the text session at `src` (quit, expiry or eviction), leaving its room.
    pub(super) fn text_forget(&mut self, src: SocketAddr, out: &mut Outbox) {
        let Some(session) = self.clients.text.remove(&src) else {
            return;
        };
        self.clients.release(src.ip());
        if let Some(room) = session.room {
            self.leave_room(src, room, out);
        }
    }

    fn text_nick(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        nick: &[u8],
        out: &mut Outbox,
    ) {
        let problem = match text::check_nick(nick) {
            Ok(()) => None,
            Err(NickError::Missing) => Some("-ERR Usage: /nick NAME"),
            Err(NickError::TooLong) => Some("-ERR Nickname too long (at most 63 bytes)"),
            Err(NickError::HasAngle) => Some("-ERR A nickname must not contain '>'"),
            Err(NickError::NotPrintable) => {
                self.counters.dropped(DropReason::BadName);
                Some("-ERR A nickname must be printable UTF-8")
            }
        };
        if let Some(problem) = problem {
            return self.reply(now, src, len, format_args!("{problem}"), out);
        }
        let Some(session) = self.text_session(now, src, len, out) else {
            return;
        };
        session.nick = Nick::truncating(nick);
        if let Some(room) = session.room {
            // Already a member: the owner renames it in its WHO list.
            self.member_joined_at_owner(room_channel(room), src, Name::truncating(nick), out);
        }
        self.reply(
            now,
            src,
            len,
            format_args!("+OK Nickname set to '{}'", Lossy(nick)),
            out,
        );
    }

    fn text_chat(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        line: &[u8],
        out: &mut Outbox,
    ) {
        let Some((room, nick)) = self
            .clients
            .text
            .get(&src)
            .and_then(|s| s.room.map(|room| (room, s.nick)))
        else {
            return self.reply(
                now,
                src,
                len,
                format_args!("-ERR You are not in a chat room"),
                out,
            );
        };
        if line.is_empty() {
            return self.reply(now, src, len, format_args!("-ERR Empty message"), out);
        }
        if line.len() > text::MAX_MESSAGE {
            let max = text::MAX_MESSAGE;
            return self.reply(
                now,
                src,
                len,
                format_args!("-ERR Message too long (at most {max} bytes)"),
                out,
            );
        }
        let chat = Chat::new(nick.as_bytes(), line);
        self.send_to_owner(
            ShardMsg::Said {
                channel: room_channel(room),
                chat,
            },
            out,
        );
    }

    /// The session at `src`, created with the default nick `ip:port` if new; `None` (after an
    /// error reply) when its address may hold no more sessions.
    fn text_session(
        &mut self,
        now: Duration,
        src: SocketAddr,
        len: usize,
        out: &mut Outbox,
    ) -> Option<&mut TextSession> {
        if !self.clients.text.contains(&src) {
            if !self.make_room_for_session(src, Protocol::Text, out) {
                self.reply(
                    now,
                    src,
                    len,
                    format_args!("-ERR Too many sessions from your address"),
                    out,
                );
                return None;
            }
            let mut nick = arrayvec::ArrayString::<63>::new();
            let _ = write!(nick, "{src}"); // an IPv6 address with port fits in 63 bytes
            let session = TextSession {
                nick: Nick::from(nick.as_str()),
                room: None,
            };
            self.clients.text.insert(src, now, session);
        }
        self.clients.text.get_mut(&src)
    }

    /// One `+OK`/`-ERR` line in answer to a request of `len` bytes. A source without a session
    /// gets it only if it is no longer than the request; every reply is charged to the
    /// destination's reply budget and never goes to a server (it would take it for chat).
    fn reply(
        &mut self,
        now: Duration,
        dst: SocketAddr,
        len: usize,
        line: std::fmt::Arguments<'_>,
        out: &mut Outbox,
    ) {
        let mut buf = [0u8; 256];
        let Ok(n) = text::encode_reply(&mut buf, line) else {
            return;
        };
        let stranger = !self.clients.text.contains(&dst);
        if stranger && n > len {
            return self.counters.errors_suppressed.inc();
        }
        if !self.may_reply(now, dst, n) {
            return;
        }
        if buf.starts_with(b"-") {
            self.counters.errors_sent.inc();
        }
        out.send_new(dst, n, |b: &mut [u8]| {
            b[..n].copy_from_slice(&buf[..n]);
            Ok::<usize, ()>(n)
        });
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
