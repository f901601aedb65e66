//! Browsers over WebSocket (`docs/websocket.md`): one JSON object per text frame each way.
//! Requests are `{"type": "nick" | "join" | "leave" | "say" | "list" | "who" | "dm", ...}`;
//! events are `message`, `presence`, `ok`, `error`, `channels`, `members`, `dm` and `delivered`. A session begins with the
//! first `nick` or `join` (named after its address until it picks a nick) and ends with the
//! connection; a bad frame gets an `error` event, never a silent disconnect.

use super::command::DirectOutcome;
use super::command::{Change, Command, Decoded, Delivery, DirectEvent, Done, Person, Refusal};
use super::json::{self, text as lossy};
use super::{Answer, SCRATCH};
use crate::engine::Endpoint;
use crate::proto::{text, Name, Nick};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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

/// The events, field by field as docs/websocket.md lists them.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Event<'a> {
    Error {
        message: Cow<'a, str>,
    },
    Ok(Ok<'a>),
    /// The id is 16 hex digits (a 64-bit number does not fit a JavaScript number).
    Message {
        channel: Cow<'a, str>,
        from: Cow<'a, str>,
        text: Cow<'a, str>,
        origin: Option<&'a str>,
        id: &'a str,
        ts: u64,
    },
    Dm {
        from: &'a str,
        text: &'a str,
        /// `null` when it was not stored.
        id: Option<u32>,
        ts: u64,
    },
    Delivered {
        id: u32,
    },
    Presence {
        channel: Cow<'a, str>,
        user: Cow<'a, str>,
        event: &'static str,
        signed_in: bool,
    },
    Channels {
        channels: Names<'a, Name>,
        last: bool,
    },
    Members {
        channel: Cow<'a, str>,
        users: Names<'a, Person>,
        signed_in: Names<'a, Person>,
        last: bool,
    },
}

/// What an `ok` event confirms: the request, and what it names.
#[derive(Serialize)]
struct Ok<'a> {
    request: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    /// A direct message's id (`null` when it was handed over, not stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Option<u32>>,
}

impl Ok<'_> {
    fn request(request: &'static str) -> Self {
        Ok {
            request,
            name: None,
            channel: None,
            token: None,
            to: None,
            id: None,
        }
    }
}

/// Names as a JSON array of strings; `signed_in` only: those signed in.
struct Names<'a, T> {
    names: &'a [T],
    signed_in_only: bool,
}

impl<T: Named> Serialize for Names<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let names = self
            .names
            .iter()
            .filter(|n| !self.signed_in_only || n.signed_in());
        serializer.collect_seq(names.map(|n| lossy(n.name())))
    }
}

trait Named {
    fn name(&self) -> &[u8];
    fn signed_in(&self) -> bool;
}

impl Named for Name {
    fn name(&self) -> &[u8] {
        self.as_bytes()
    }
    fn signed_in(&self) -> bool {
        false
    }
}

impl Named for Person {
    fn name(&self) -> &[u8] {
        self.name.as_bytes()
    }
    fn signed_in(&self) -> bool {
        self.signed_in
    }
}

fn write_error(buf: &mut [u8], message: &[u8]) -> Option<usize> {
    json::write(
        buf,
        &Event::Error {
            message: lossy(message),
        },
    )
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
    let ok = match done {
        Done::Named(nick) => Ok {
            name: Some(lossy(nick.as_bytes())),
            ..Ok::request("nick")
        },
        Done::Joined(c) => Ok {
            channel: Some(lossy(c.as_bytes())),
            ..Ok::request("join")
        },
        Done::Left(c) => Ok {
            channel: Some(lossy(c.as_bytes())),
            ..Ok::request("leave")
        },
        Done::Registered { name, token } | Done::SignedIn { name, token } => {
            let request = match done {
                Done::Registered { .. } => "register",
                _ => "login",
            };
            Ok {
                name: Some(lossy(name.as_bytes())),
                token: token.as_ref().map(|t| t.as_str()),
                ..Ok::request(request)
            }
        }
        Done::Nothing | Done::Quit | Done::Confirmed | Done::Code(_) => return None,
    };
    json::write(buf, &Event::Ok(ok))
}

/// `{"type":"message","channel","from","text","origin","id","ts"}`; the id is 16 hex digits
/// (a 64-bit number does not fit a JavaScript number).
pub(super) fn encode_chat(d: &Delivery<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut origin = arrayvec::ArrayString::<64>::new();
    if let Some(o) = d.origin {
        let _ = write!(origin, "{o}"); // an address with its port fits
    }
    let mut id = arrayvec::ArrayString::<16>::new();
    let _ = write!(id, "{:016x}", d.id);
    let event = Event::Message {
        channel: lossy(d.channel.as_bytes()),
        from: lossy(d.chat.user()),
        text: lossy(d.chat.text()),
        origin: d.origin.map(|_| origin.as_str()),
        id: &id,
        ts: d.unix_ms,
    };
    json::write(buf, &event)
}

/// `ok` (`request` `dm`, `to`, and `id` when stored) or `error` for a direct message sent;
/// `{"type":"dm","from","text","id","ts"}` for one received (`id` null when it was not stored);
/// `{"type":"delivered","id"}` when one the session sent has been delivered.
pub(super) fn encode_direct(event: &DirectEvent<'_>, buf: &mut [u8]) -> Option<usize> {
    let event = match *event {
        DirectEvent::Sent { to, outcome } => {
            let stored = match outcome {
                DirectOutcome::Stored(n) => Some(n),
                DirectOutcome::Delivered => None,
                refused => return write_error(buf, direct_refused(refused, to).as_bytes()),
            };
            Event::Ok(Ok {
                to: Some(to),
                id: Some(stored),
                ..Ok::request("dm")
            })
        }
        DirectEvent::Message {
            from,
            id,
            text,
            unix_ms,
        } => Event::Dm {
            from,
            text,
            id,
            ts: unix_ms,
        },
        DirectEvent::Delivered { id } => Event::Delivered { id },
    };
    json::write(buf, &event)
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
    change: Change,
    buf: &mut [u8],
) -> Option<usize> {
    let joined = match change {
        Change::Joined => true,
        Change::Left => false,
        // Shown as the old name leaving and the new one joining (Protocol::shows_renames).
        Change::Renamed { .. } => return None,
    };
    let event = Event::Presence {
        channel: lossy(channel.as_bytes()),
        user: lossy(user.name.as_bytes()),
        event: if joined { "joined" } else { "left" },
        signed_in: user.signed_in,
    };
    json::write(buf, &event)
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
    let event = match *answer {
        Answer::List { names, last } => Event::Channels {
            channels: Names {
                names,
                signed_in_only: false,
            },
            last,
        },
        Answer::Who {
            channel,
            names,
            last,
            ..
        } => Event::Members {
            channel: lossy(channel.as_bytes()),
            users: Names {
                names,
                signed_in_only: false,
            },
            signed_in: Names {
                names,
                signed_in_only: true,
            },
            last,
        },
    };
    json::write(buf, &event)
}
