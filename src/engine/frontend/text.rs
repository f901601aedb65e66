//! The text line protocol ([`crate::proto::text`]): one line per datagram, a session begins with
//! the first `/join N` or `/nick NAME` and is named `ip:port` until it picks a nick, every
//! command gets one `+OK` or `-ERR` line (`/quit` none), and a session is in at most one room:
//! room N is the channel named `N`, shared with DuckChat users.

use super::command::AccountOutcome;
use super::command::DirectOutcome;
use super::command::{Command, Decoded, DirectEvent, Done, Refusal, Settings, View};
use super::SCRATCH;
use crate::engine::lossy::Lossy;
use crate::engine::{Chat, DropReason, Endpoint, Outbox};
use crate::proto::text::{self, Line, NickError, RoomError};
use crate::proto::{Name, Nick};
use std::fmt::Write as _;

pub(super) const MAX_CHAT: usize = text::MAX_LINE;

pub(super) fn decode<'a>(
    settings: &Settings,
    request: &'a [u8],
    session: Option<View<'_>>,
    scratch: &'a mut [u8; SCRATCH],
) -> Decoded<'a> {
    let room = session.and_then(|s| s.channels.first().copied());
    let command = match text::parse(request) {
        Line::Reply => return Decoded::Drop(DropReason::ReplyShaped),
        Line::Join(arg) => {
            if let Some(room) = room {
                return reply_error(
                    scratch,
                    format_args!("-ERR You are already in room #{room}"),
                );
            }
            let rooms = settings.rooms;
            match text::parse_room(arg, rooms) {
                Ok(n) => Command::Join {
                    channel: room_channel(n),
                },
                Err(RoomError::Missing) => {
                    return reply_error(
                        scratch,
                        format_args!("-ERR Usage: /join N (rooms 1 to {rooms})"),
                    )
                }
                Err(RoomError::NotANumber | RoomError::OutOfRange) => {
                    let arg = Lossy(&arg[..arg.len().min(32)]);
                    return reply_error(
                        scratch,
                        format_args!("-ERR No room '{arg}': rooms are 1 to {rooms}"),
                    );
                }
            }
        }
        Line::Part => match room {
            Some(channel) => Command::Leave { channel },
            None => return reply_error(scratch, format_args!("-ERR You are not in a chat room")),
        },
        Line::Nick(nick) => match text::check_nick(nick) {
            // The core refuses names a person cannot read, in every protocol.
            Ok(()) | Err(NickError::NotPrintable) => Command::Login {
                name: Nick::truncating(nick),
            },
            Err(NickError::Missing) => {
                return reply_error(scratch, format_args!("-ERR Usage: /nick NAME"))
            }
            Err(NickError::TooLong) => {
                let max = text::MAX_NICK;
                return reply_error(
                    scratch,
                    format_args!("-ERR Nickname too long (at most {max} bytes)"),
                );
            }
            Err(NickError::HasAngle) => {
                return reply_error(
                    scratch,
                    format_args!("-ERR A nickname must not contain '>'"),
                )
            }
        },
        Line::Msg(arg) => match text::split_direct(arg) {
            Some((to, text)) => Command::Direct { to, text },
            None => return reply_error(scratch, format_args!("-ERR Usage: /msg NICK text")),
        },
        Line::Register(arg) => match text::split_direct(arg) {
            Some((name, password)) => Command::Register { name, password },
            None => {
                return reply_error(scratch, format_args!("-ERR Usage: /register NAME PASSWORD"))
            }
        },
        Line::Login(arg) => match text::split_direct(arg) {
            Some((name, password)) => Command::SignIn { name, password },
            None if !arg.is_empty() => Command::SignInToken { token: arg },
            None => return reply_error(scratch, format_args!("-ERR Usage: /login NAME PASSWORD")),
        },
        Line::Confirm(code) => Command::Confirm { code },
        Line::Quit if session.is_some() => Command::Quit,
        Line::Quit => return Decoded::Nothing,
        Line::Unknown(word) => {
            let word = Lossy(&word[..word.len().min(32)]);
            return reply_error(scratch, format_args!("-ERR Unknown command {word}"));
        }
        Line::Chat(line) => {
            let Some(channel) = room else {
                return reply_error(scratch, format_args!("-ERR You are not in a chat room"));
            };
            if line.is_empty() {
                return reply_error(scratch, format_args!("-ERR Empty message"));
            }
            if line.len() > text::MAX_MESSAGE {
                let max = text::MAX_MESSAGE;
                return reply_error(
                    scratch,
                    format_args!("-ERR Message too long (at most {max} bytes)"),
                );
            }
            Command::Say {
                channel,
                text: line,
            }
        }
    };
    Decoded::Command(command)
}

/// An error line, written to `scratch`.
fn reply_error<'a>(scratch: &'a mut [u8; SCRATCH], line: std::fmt::Arguments<'_>) -> Decoded<'a> {
    match text::encode_reply(scratch, line) {
        Ok(len) => {
            let written: &'a [u8; SCRATCH] = scratch;
            Decoded::Error(&written[..len])
        }
        Err(_) => Decoded::Nothing,
    }
}

/// The channel of room `n`: its decimal number.
pub(super) fn room_channel(n: u32) -> Name {
    let mut digits = arrayvec::ArrayString::<10>::new();
    let _ = write!(digits, "{n}"); // at most 10 digits: always fits
    Name::from(digits.as_str())
}

/// A new session's nick: its address and port.
pub(super) fn default_name(endpoint: Endpoint) -> Nick {
    let mut nick = arrayvec::ArrayString::<63>::new();
    let _ = write!(nick, "{endpoint}"); // an IPv6 address with port fits in 63 bytes
    Nick::from(nick.as_str())
}

pub(super) fn encode_refusal(refusal: &Refusal, buf: &mut [u8]) -> Option<usize> {
    let line = |buf: &mut [u8], line: std::fmt::Arguments<'_>| text::encode_reply(buf, line).ok();
    match refusal {
        Refusal::ServerChannelLimit(room) => line(
            buf,
            format_args!("-ERR Too many channels on this server: not in room #{room}"),
        ),
        Refusal::TooManySessions => line(
            buf,
            format_args!("-ERR Too many sessions from your address"),
        ),
        Refusal::BadUserName => line(buf, format_args!("-ERR A nickname must be printable UTF-8")),
        Refusal::BadChannelName => line(buf, format_args!("-ERR No such room")),
        Refusal::TooManyChannels => line(buf, format_args!("-ERR Too many rooms")),
        Refusal::UnknownCommand => line(buf, format_args!("-ERR Unknown command")),
        Refusal::Backlog(room) => line(
            buf,
            format_args!(
                "{}{room}: a server of the cluster is behind; try again",
                text::NOT_SENT
            ),
        ),
        Refusal::NoMailbox => line(
            buf,
            format_args!("-ERR Direct messages are off on this server"),
        ),
        Refusal::BadDirectText => line(
            buf,
            format_args!("-ERR A direct message is at most 255 bytes of UTF-8"),
        ),
        Refusal::NoSuchUser => line(buf, format_args!("-ERR No such user")),
        // Short: it may answer a stranger's first request (at most 3x its bytes).
        Refusal::NameRegistered(n) => line(buf, format_args!("-ERR '{n}' is registered")),
        Refusal::NameTaken(n) => line(buf, format_args!("-ERR Nickname '{n}' is in use")),
        Refusal::Superseded(n) => line(
            buf,
            format_args!("-ERR Nickname '{n}' not set: you asked for another"),
        ),
        Refusal::SignedInAs(n) => line(buf, format_args!("-ERR You are signed in as '{n}'")),
        Refusal::Unconfirmed(code) => line(
            buf,
            format_args!("-ERR Confirm your address first: /confirm {code:08x}"),
        ),
        Refusal::WrongCode => line(buf, format_args!("-ERR Wrong code")),
        Refusal::NoAccounts => line(buf, format_args!("-ERR Accounts are off on this server")),
        Refusal::BadToken => line(buf, format_args!("-ERR That token signs no one in")),
        Refusal::BadAccountName => line(
            buf,
            format_args!("-ERR An account name is 1 to 31 bytes, without spaces or '>'"),
        ),
        Refusal::BadPassword => line(buf, format_args!("-ERR A password is 8 to 128 bytes")),
        Refusal::Account(outcome) => line(buf, format_args!("-ERR {}", account_refusal(*outcome))),
        // The front-end checks the room before it asks; these are for completeness.
        Refusal::NotLoggedIn | Refusal::NoChannel(_) | Refusal::NotInChannel(_) => {
            line(buf, format_args!("-ERR You are not in a chat room"))
        }
    }
}

pub(super) fn encode_done(done: &Done, buf: &mut [u8]) -> Option<usize> {
    let line = |buf: &mut [u8], line: std::fmt::Arguments<'_>| text::encode_reply(buf, line).ok();
    match done {
        Done::Joined(room) => line(buf, format_args!("+OK You are now in chat room #{room}")),
        Done::Left(room) => line(buf, format_args!("+OK You have left chat room #{room}")),
        Done::Named(nick) => line(buf, format_args!("+OK Nickname set to '{nick}'")),
        Done::Registered { name, .. } => {
            line(buf, format_args!("+OK Registered '{name}', signed in"))
        }
        Done::SignedIn { name, .. } => line(buf, format_args!("+OK Signed in as '{name}'")),
        Done::Confirmed => line(buf, format_args!("+OK Address confirmed")),
        // Short: it answers a stranger's 8-byte request (at most 3x its bytes).
        Done::Code(code) => line(buf, format_args!("+OK Code {code:08x}")),
        Done::Nothing | Done::Quit => None,
    }
}

/// The answer to `/msg` (one line, as every command gets), or a direct message for the session
/// (`+MSG <nick> text`); deliveries of what the session sent are not shown (its `+OK` said the
/// message was taken).
pub(super) fn encode_direct(event: &DirectEvent<'_>, buf: &mut [u8]) -> Option<usize> {
    let line = |buf: &mut [u8], line: std::fmt::Arguments<'_>| text::encode_reply(buf, line).ok();
    match *event {
        DirectEvent::Sent { to, outcome } => match outcome {
            DirectOutcome::Stored(id) => {
                line(buf, format_args!("+OK Message {id} for {to} stored"))
            }
            DirectOutcome::Delivered => line(buf, format_args!("+OK Message for {to} delivered")),
            DirectOutcome::NoSuchUser => line(buf, format_args!("-ERR No such user {to}")),
            DirectOutcome::Full => line(buf, format_args!("-ERR The mailbox of {to} is full")),
            DirectOutcome::Busy => line(buf, format_args!("-ERR The mailbox is busy: try again")),
            DirectOutcome::Failed => line(
                buf,
                format_args!("-ERR The mailbox could not store the message"),
            ),
            // The core writes it as a refusal (it carries the session's code).
            DirectOutcome::Unconfirmed => None,
        },
        DirectEvent::Message { from, text: t, .. } => {
            text::encode_direct(buf, from.as_bytes(), t.as_bytes()).ok()
        }
        DirectEvent::Delivered { .. } => None,
    }
}

/// Why the accounts refused, in words (text and web say the same).
pub(super) fn account_refusal(outcome: AccountOutcome) -> &'static str {
    match outcome {
        AccountOutcome::Taken => "That name is registered already",
        AccountOutcome::WrongPassword => "Wrong name or password",
        AccountOutcome::TooManyAttempts => "Too many attempts: try again later",
        AccountOutcome::Full => "No more accounts can be registered (from your network)",
        AccountOutcome::Busy => "The accounts are busy: try again",
        AccountOutcome::Failed | AccountOutcome::Registered | AccountOutcome::SignedIn => {
            "The accounts could not be read or written"
        }
    }
}

/// `<nick> text`, the nick and text as they were sent.
pub(super) fn encode_chat(chat: &Chat, buf: &mut [u8]) -> Option<usize> {
    text::encode_chat(buf, chat.user(), chat.text()).ok()
}

/// Log lines for what changed: joins, leaves and quits.
pub(super) fn log_command(
    settings: &Settings,
    src: Endpoint,
    outcome: &Result<Done, Refusal>,
    out: &mut Outbox,
) {
    let prefix = settings.prefix();
    match outcome {
        Ok(Done::Joined(room)) => out.log(format_args!(
            "{prefix} Client {src} joins chat room #{room}"
        )),
        Ok(Done::Left(room)) => out.log(format_args!(
            "{prefix} Client {src} leaves chat room #{room}"
        )),
        Ok(Done::Quit) => out.log(format_args!("{prefix} Client {src} quits")),
        _ => {}
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
