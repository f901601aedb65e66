//! Browsers over WebSocket (`docs/websocket.md`): one JSON object per text frame each way.
//! Requests are `{"type": "nick" | "join" | "leave" | "say" | "list" | "who" | "dm", ...}`;
//! events are `message`, `presence`, `ok`, `error`, `channels`, `members`, `dm` and `delivered`. A session begins with the
//! first `nick` or `join` (named after its address until it picks a nick) and ends with the
//! connection; a bad frame gets an `error` event, never a silent disconnect.

use super::command::DirectOutcome;
use super::command::{Command, Decoded, Delivery, DirectEvent, Done, Person, Refusal};
use super::json::Json;
use super::{Answer, SCRATCH};
use crate::engine::Endpoint;
use crate::proto::{text, Name, Nick};
use serde::Deserialize;
use std::fmt::Write as _;

/// The longest event this front-end writes: a message of the longest nick and text, every
/// byte escaped, with its fields.
pub(super) const MAX_CHAT: usize = 8192;
const _: () = assert!(MAX_CHAT >= 256 + 6 * (text::MAX_NICK + text::MAX_MESSAGE));

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Request {
    Nick {
        name: String,
    },
    Join {
        channel: String,
    },
    Leave {
        channel: String,
    },
    Say {
        channel: String,
        text: String,
    },
    List,
    Who {
        channel: String,
    },
    /// A direct message to the user named `to`.
    Dm {
        to: String,
        text: String,
    },
    /// Create an account and sign in to it.
    Register {
        name: String,
        password: String,
    },
    /// Sign in to an account, with its password or a token.
    Login {
        #[serde(default)]
        name: String,
        #[serde(default)]
        password: String,
        token: Option<String>,
    },
}

pub(super) fn decode<'a>(request: &'a [u8], scratch: &'a mut [u8; SCRATCH]) -> Decoded<'a> {
    let request: Request = match serde_json::from_slice(request) {
        Ok(r) => r,
        Err(e) => {
            let mut why = arrayvec::ArrayString::<160>::new();
            let _ = write!(why, "not a request: {e}");
            return error(scratch, why.as_bytes());
        }
    };
    let channel = |c: &str| -> Result<Name, &'static [u8]> {
        match c.len() {
            0 => Err(b"a channel needs a name"),
            n if n > Name::CAPACITY => Err(b"channel names are at most 31 bytes"),
            _ => Ok(Name::truncating(c.as_bytes())),
        }
    };
    let command = match request {
        Request::Nick { name } => {
            if name.is_empty() || name.len() > text::MAX_NICK {
                return error(scratch, b"a nick is 1 to 63 bytes");
            }
            Command::Login {
                name: Nick::truncating(name.as_bytes()),
            }
        }
        Request::Join { channel: c } => match channel(&c) {
            Ok(channel) => Command::Join { channel },
            Err(why) => return error(scratch, why),
        },
        Request::Leave { channel: c } => match channel(&c) {
            Ok(channel) => Command::Leave { channel },
            Err(why) => return error(scratch, why),
        },
        Request::Who { channel: c } => match channel(&c) {
            Ok(channel) => Command::Who {
                channel,
                brief: false,
            },
            Err(why) => return error(scratch, why),
        },
        Request::List => Command::List,
        Request::Say {
            channel: c,
            text: t,
        } => {
            let channel = match channel(&c) {
                Ok(channel) => channel,
                Err(why) => return error(scratch, why),
            };
            if t.is_empty() {
                return error(scratch, b"empty message");
            }
            if t.len() > text::MAX_MESSAGE {
                return error(scratch, b"messages are at most 1000 bytes");
            }
            scratch[..t.len()].copy_from_slice(t.as_bytes());
            let scratch: &'a [u8; SCRATCH] = scratch;
            Command::Say {
                channel,
                text: &scratch[..t.len()],
            }
        }
        Request::Dm { to, text: t } if fits(&to, &t) => {
            let (to, text) = both(scratch, &to, &t);
            Command::Direct { to, text }
        }
        Request::Dm { .. } => return error(scratch, b"direct messages are at most 255 bytes"),
        Request::Register { name, password } if fits(&name, &password) => {
            let (name, password) = both(scratch, &name, &password);
            Command::Register { name, password }
        }
        Request::Login {
            token: Some(token), ..
        } if token.len() <= SCRATCH => {
            scratch[..token.len()].copy_from_slice(token.as_bytes());
            let scratch: &'a [u8; SCRATCH] = scratch;
            Command::SignInToken {
                token: &scratch[..token.len()],
            }
        }
        Request::Login {
            name,
            password,
            token: None,
        } if fits(&name, &password) => {
            let (name, password) = both(scratch, &name, &password);
            Command::SignIn { name, password }
        }
        Request::Register { .. } | Request::Login { .. } => {
            return error(scratch, b"a password is 8 to 128 bytes")
        }
    };
    Decoded::Command(command)
}

/// Whether two strings fit the scratch buffer together (see [`both`]).
fn fits(a: &str, b: &str) -> bool {
    a.len() + b.len() <= SCRATCH
}

/// Two strings that [`fits`] the scratch buffer, copied into it one after the other.
fn both<'a>(scratch: &'a mut [u8; SCRATCH], a: &str, b: &str) -> (&'a [u8], &'a [u8]) {
    let (a_len, b_len) = (a.len(), b.len());
    scratch[..a_len].copy_from_slice(a.as_bytes());
    scratch[a_len..a_len + b_len].copy_from_slice(b.as_bytes());
    let scratch: &'a [u8; SCRATCH] = scratch;
    (&scratch[..a_len], &scratch[a_len..a_len + b_len])
}

/// An `error` event, written to `scratch`.
fn error<'a>(scratch: &'a mut [u8; SCRATCH], message: &[u8]) -> Decoded<'a> {
    match write_error(&mut scratch[..], message) {
        Some(len) => {
            let written: &'a [u8; SCRATCH] = scratch;
            Decoded::Error(&written[..len])
        }
        None => Decoded::Nothing,
    }
}

fn write_error(buf: &mut [u8], message: &[u8]) -> Option<usize> {
    let mut j = Json::new(buf);
    j.raw(b"{\"type\":\"error\",")?;
    j.field("message", message)?;
    j.raw(b"}")?;
    Some(j.len())
}

/// A new session's nick: its address and port.
pub(super) fn default_name(endpoint: Endpoint) -> Nick {
    let mut nick = arrayvec::ArrayString::<63>::new();
    let _ = write!(nick, "{endpoint}");
    Nick::from(nick.as_str())
}

pub(super) fn encode_refusal(refusal: &Refusal, buf: &mut [u8]) -> Option<usize> {
    let mut message = arrayvec::ArrayString::<128>::new();
    let _ = match refusal {
        Refusal::NotLoggedIn => write!(message, "pick a nick or join a channel first"),
        Refusal::UnknownCommand => write!(message, "unknown request"),
        Refusal::NoChannel(c) => write!(message, "no channel by the name {c}"),
        Refusal::NotInChannel(c) => write!(message, "you are not in channel {c}"),
        Refusal::TooManyChannels => write!(message, "you are in too many channels"),
        Refusal::ServerChannelLimit(c) => {
            write!(message, "too many channels on this server: not in {c}")
        }
        Refusal::BadChannelName => write!(message, "channel names must be printable UTF-8"),
        Refusal::BadUserName => write!(message, "nicks must be printable UTF-8"),
        Refusal::TooManySessions => write!(message, "too many sessions from your address"),
        Refusal::Backlog(c) => write!(
            message,
            "message not sent to {c}: a server of the cluster is behind; try again"
        ),
        Refusal::NoMailbox => write!(message, "direct messages are off on this server"),
        Refusal::BadDirectText => write!(
            message,
            "a direct message is 1 to 255 bytes, without NUL or newline"
        ),
        Refusal::NoSuchUser => write!(message, "no such user"),
        Refusal::NameRegistered(n) => {
            write!(message, "{n} is a registered name: sign in to use it")
        }
        Refusal::NameTaken(n) => write!(message, "the nick {n} is in use"),
        Refusal::Superseded(n) => {
            write!(message, "the nick {n} was not set: another was asked for")
        }
        Refusal::SignedInAs(n) => write!(message, "you are signed in as {n}"),
        // A connection has shown it receives: never asked to confirm.
        Refusal::Unconfirmed(_) | Refusal::WrongCode => write!(message, "unknown request"),
        Refusal::BadAccountName => write!(
            message,
            "an account name is 1 to 31 bytes, without spaces or '>'"
        ),
        Refusal::BadPassword => write!(message, "a password is 8 to 128 bytes"),
        Refusal::NoAccounts => write!(message, "accounts are off on this server"),
        Refusal::BadToken => write!(message, "that token signs no one in"),
        Refusal::Account(outcome) => message.write_str(super::text::account_refusal(*outcome)),
    };
    write_error(buf, message.as_bytes())
}

pub(super) fn encode_done(done: &Done, buf: &mut [u8]) -> Option<usize> {
    let mut j = Json::new(buf);
    j.raw(b"{\"type\":\"ok\",")?;
    match done {
        Done::Named(nick) => {
            j.field("request", b"nick")?;
            j.raw(b",")?;
            j.field("name", nick.as_bytes())?;
        }
        Done::Joined(c) => {
            j.field("request", b"join")?;
            j.raw(b",")?;
            j.field("channel", c.as_bytes())?;
        }
        Done::Left(c) => {
            j.field("request", b"leave")?;
            j.raw(b",")?;
            j.field("channel", c.as_bytes())?;
        }
        Done::Registered { name, token } | Done::SignedIn { name, token } => {
            let request: &[u8] = match done {
                Done::Registered { .. } => b"register",
                _ => b"login",
            };
            j.field("request", request)?;
            j.raw(b",")?;
            j.field("name", name.as_bytes())?;
            if let Some(token) = token {
                j.raw(b",")?;
                j.field("token", token.as_bytes())?;
            }
        }
        Done::Nothing | Done::Quit | Done::Confirmed | Done::Code(_) => return None,
    }
    j.raw(b"}")?;
    Some(j.len())
}

/// `{"type":"message","channel","from","text","origin","id","ts"}`; the id is 16 hex digits
/// (a 64-bit number does not fit a JavaScript number).
pub(super) fn encode_chat(d: &Delivery<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut j = Json::new(buf);
    j.raw(b"{\"type\":\"message\",")?;
    j.field("channel", d.channel.as_bytes())?;
    j.raw(b",")?;
    j.field("from", d.chat.user())?;
    j.raw(b",")?;
    j.field("text", d.chat.text())?;
    j.raw(b",")?;
    j.key("origin")?;
    match d.origin {
        Some(origin) => {
            let mut s = arrayvec::ArrayString::<64>::new();
            let _ = write!(s, "{origin}");
            j.string(s.as_bytes())?;
        }
        None => j.raw(b"null")?,
    }
    j.raw(b",")?;
    let mut id = arrayvec::ArrayString::<16>::new();
    let _ = write!(id, "{:016x}", d.id);
    j.field("id", id.as_bytes())?;
    j.raw(b",")?;
    j.key("ts")?;
    j.number(d.unix_ms)?;
    j.raw(b"}")?;
    Some(j.len())
}

/// `ok` (`request` `dm`, `to`, and `id` when stored) or `error` for a direct message sent;
/// `{"type":"dm","from","text","id","ts"}` for one received (`id` null when it was not stored);
/// `{"type":"delivered","id"}` when one the session sent has been delivered.
pub(super) fn encode_direct(event: &DirectEvent<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut j = Json::new(buf);
    let id = |j: &mut Json<'_>, id: Option<u32>| match id {
        Some(id) => j.number(u64::from(id)),
        None => j.raw(b"null"),
    };
    match *event {
        DirectEvent::Sent { to, outcome } => {
            let stored = match outcome {
                DirectOutcome::Stored(n) => Some(n),
                DirectOutcome::Delivered => None,
                refused => return write_error(buf, direct_refused(refused, to).as_bytes()),
            };
            j.raw(b"{\"type\":\"ok\",\"request\":\"dm\",")?;
            j.field("to", to.as_bytes())?;
            j.raw(b",")?;
            j.key("id")?;
            id(&mut j, stored)?;
        }
        DirectEvent::Message {
            from,
            id: n,
            text,
            unix_ms,
        } => {
            j.raw(b"{\"type\":\"dm\",")?;
            j.field("from", from.as_bytes())?;
            j.raw(b",")?;
            j.field("text", text.as_bytes())?;
            j.raw(b",")?;
            j.key("id")?;
            id(&mut j, n)?;
            j.raw(b",")?;
            j.key("ts")?;
            j.number(unix_ms)?;
        }
        DirectEvent::Delivered { id: n } => {
            j.raw(b"{\"type\":\"delivered\",")?;
            j.key("id")?;
            j.number(u64::from(n))?;
        }
    }
    j.raw(b"}")?;
    Some(j.len())
}

/// Why a direct message to `to` was not taken, as an `error` event says it.
fn direct_refused(outcome: DirectOutcome, to: &str) -> arrayvec::ArrayString<128> {
    let why = match outcome {
        DirectOutcome::Stored(_) | DirectOutcome::Delivered => "taken",
        DirectOutcome::NoSuchUser => "no such user",
        DirectOutcome::Full => "the recipient's mailbox is full",
        DirectOutcome::Busy => "the mailbox is busy: try again",
        DirectOutcome::Failed | DirectOutcome::Unconfirmed => {
            "the mailbox could not store the message"
        }
    };
    let mut message = arrayvec::ArrayString::new();
    let _ = write!(message, "{why}: {to}"); // a user name is at most 49 bytes: it fits
    message
}

/// `{"type":"presence","channel","user","event":"joined"|"left"}`.
pub(super) fn encode_presence(
    channel: &Name,
    user: &Person,
    joined: bool,
    buf: &mut [u8],
) -> Option<usize> {
    let mut j = Json::new(buf);
    j.raw(b"{\"type\":\"presence\",")?;
    j.field("channel", channel.as_bytes())?;
    j.raw(b",")?;
    j.field("user", user.name.as_bytes())?;
    j.raw(b",")?;
    j.field("event", if joined { b"joined" } else { b"left" })?;
    j.raw(if user.signed_in {
        b",\"signed_in\":true}"
    } else {
        b",\"signed_in\":false}"
    })?;
    Some(j.len())
}

/// Names per `channels` or `members` event.
pub(super) const NAMES_PER_ANSWER: usize = 256;

/// At most this many bytes: a name is printable, so escaping at most doubles it.
pub(super) fn answer_len(answer: &Answer<'_>) -> usize {
    let names = match answer {
        Answer::List { names, .. } => names.len(),
        Answer::Who { names, .. } => names.len(),
    };
    // Each name may be listed twice: in `users`, and in `signed_in`.
    128 + (names + 1) * 2 * (2 * Name::CAPACITY + 3)
}

pub(super) fn encode_answer(answer: &Answer<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut j = Json::new(buf);
    let last = match *answer {
        Answer::List { names, last } => {
            j.raw(b"{\"type\":\"channels\",\"channels\":")?;
            j.strings(names.iter().map(Name::as_bytes))?;
            last
        }
        Answer::Who {
            channel,
            names,
            last,
            ..
        } => {
            j.raw(b"{\"type\":\"members\",")?;
            j.field("channel", channel.as_bytes())?;
            j.raw(b",\"users\":")?;
            j.strings(names.iter().map(|p| p.name.as_bytes()))?;
            j.raw(b",\"signed_in\":")?;
            j.strings(
                names
                    .iter()
                    .filter(|p| p.signed_in)
                    .map(|p| p.name.as_bytes()),
            )?;
            last
        }
    };
    j.raw(if last {
        b",\"last\":true}"
    } else {
        b",\"last\":false}"
    })?;
    Some(j.len())
}
