//! Client protocols as front-ends of one core. Each front-end is one file that decodes a request
//! into a [`Command`] (given what it may know of the session, a [`View`]) and writes what the core
//! tells it to (replies to its commands, deliveries, LIST and WHO answers, log lines) in its own
//! format; the core keeps the sessions, the channels and the limits and never names a format.
//!
//! [`Protocol`] is the registry: adding a front-end is a new file and one variant here, with its
//! arm in each match below.

mod command;
mod duckchat;
mod irc;
mod json;
mod text;
mod web;
mod web_compat;

pub use command::{
    AccountOutcome, Change, Command, Decoded, Delivery, DirectEvent, DirectOutcome, Done, Person,
    Refusal, Settings, Token, View,
};
pub use irc::{Word as IrcWord, SERVER as IRC_SERVER, UNREGISTERED as IRC_UNREGISTERED};

use super::{Endpoint, Outbox};
use crate::proto::duckchat::{type_code_order, Endian};
use crate::proto::{Name, Nick};

/// The largest reply a front-end writes to a request (an error or a confirmation).
pub const MAX_REPLY: usize = 512;
/// The scratch buffer a front-end may decode into (an unescaped text, an error reply).
pub const SCRATCH: usize = 4096;
const _: () = assert!(MAX_REPLY <= SCRATCH && crate::proto::text::MAX_MESSAGE <= SCRATCH);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// DuckChat's binary datagrams.
    DuckChat,
    /// DuckChat from a client that writes its type codes big-endian (some public clients do):
    /// the same protocol, answered in the client's own byte order.
    DuckChatBig,
    /// Text lines over UDP.
    Text,
    /// Browsers: JSON over WebSocket.
    Web,
    /// The original browser client of seed 002, over WebSocket.
    WebCompat,
    /// IRC clients, over TCP.
    Irc,
}

/// A LIST or WHO answer, or a part of one: at most [`Protocol::names_per_answer`] names;
/// `last` when no part follows.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'n> {
    List {
        names: &'n [Name],
        last: bool,
    },
    Who {
        channel: &'n Name,
        names: &'n [Person],
        last: bool,
        /// Names only ([`Command::Who`]).
        brief: bool,
    },
}

impl Protocol {
    pub const ALL: [Protocol; 6] = [
        Protocol::DuckChat,
        Protocol::DuckChatBig,
        Protocol::Text,
        Protocol::Web,
        Protocol::WebCompat,
        Protocol::Irc,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The position in [`Protocol::ALL`], for per-protocol arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Which front-end a datagram on the shared UDP port is for.
    pub fn of_datagram(datagram: &[u8]) -> Protocol {
        if crate::proto::text::is_text(datagram) {
            return Protocol::Text;
        }
        match type_code_order(datagram) {
            Some((_, Endian::Big)) => Protocol::DuckChatBig,
            _ => Protocol::DuckChat,
        }
    }

    /// The same protocol in the other byte order, for one whose requests may not show theirs
    /// (a DuckChat LOGIN's type code is 0 either way): the core then goes by the session
    /// there is.
    pub fn byte_order_twin(self) -> Option<Protocol> {
        match self {
            Protocol::DuckChat => Some(Protocol::DuckChatBig),
            Protocol::DuckChatBig => Some(Protocol::DuckChat),
            Protocol::Text | Protocol::Web | Protocol::WebCompat | Protocol::Irc => None,
        }
    }

    /// Whether `request` shows its byte order, for a protocol with a [`Protocol::byte_order_twin`]
    /// (a DuckChat LOGIN's type code, 0, reads the same in both orders).
    pub fn shows_byte_order(self, request: &[u8]) -> bool {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => {
                crate::proto::duckchat::type_code(request) != Some(0)
            }
            Protocol::Text | Protocol::Web | Protocol::WebCompat | Protocol::Irc => true,
        }
    }

    /// Whether this is the order a request that does not show its own is taken in (sessions
    /// move from it to its twin once the client shows the other, never back).
    pub fn is_default_order(self) -> bool {
        self != Protocol::DuckChatBig
    }

    /// One request; what the front-end writes while decoding (an error reply, an unescaped
    /// text) goes to `scratch`.
    pub fn decode<'a>(
        self,
        settings: &Settings,
        request: &'a [u8],
        session: Option<View<'_>>,
        scratch: &'a mut [u8; SCRATCH],
    ) -> Decoded<'a> {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => duckchat::decode(request, session),
            Protocol::Text => text::decode(settings, request, session, scratch),
            Protocol::Web => web::decode(request, scratch),
            Protocol::WebCompat => web_compat::decode(request),
            Protocol::Irc => irc::decode(request, session, scratch),
        }
    }

    /// The name of a session that begins without a login (on its first JOIN), or
    /// `None` when sessions of this protocol begin with a login only.
    pub fn default_name(self, endpoint: Endpoint) -> Option<Nick> {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => None,
            Protocol::Text => Some(text::default_name(endpoint)),
            Protocol::Web => Some(web::default_name(endpoint)),
            Protocol::WebCompat => Some(web_compat::default_name(endpoint)),
            Protocol::Irc => Some(irc::default_name(endpoint)),
        }
    }

    /// The channel a session joins as soon as it begins, if the protocol has one room.
    pub fn auto_join(self) -> Option<Name> {
        match self {
            Protocol::WebCompat => Some(Name::from(super::COMMON)),
            Protocol::DuckChat
            | Protocol::DuckChatBig
            | Protocol::Text
            | Protocol::Web
            | Protocol::Irc => None,
        }
    }

    /// The reply to a command the core refused, for the session named `me` (before the
    /// command; `*` for none).
    pub fn encode_refusal(self, me: &Nick, refusal: &Refusal, buf: &mut [u8]) -> Option<usize> {
        match self {
            Protocol::Irc => irc::encode_refusal(me, refusal, buf),
            Protocol::DuckChat => duckchat::encode_refusal(refusal, buf),
            Protocol::DuckChatBig => big(buf, |buf| duckchat::encode_refusal(refusal, buf)),
            Protocol::Text => text::encode_refusal(refusal, buf),
            Protocol::Web => web::encode_refusal(refusal, buf),
            Protocol::WebCompat => None,
        }
    }

    /// The reply to a command that succeeded, if the protocol confirms it, for the session
    /// named `me` (before the command).
    pub fn encode_done(self, me: &Nick, done: &Done, buf: &mut [u8]) -> Option<usize> {
        match self {
            Protocol::Irc => irc::encode_done(me, done, buf),
            Protocol::DuckChat | Protocol::DuckChatBig | Protocol::WebCompat => None,
            Protocol::Text => text::encode_done(done, buf),
            Protocol::Web => web::encode_done(done, buf),
        }
    }

    /// The longest delivery [`Protocol::encode_chat`] writes.
    pub fn max_chat(self) -> usize {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => duckchat::MAX_CHAT,
            Protocol::Text => text::MAX_CHAT,
            Protocol::Web => web::MAX_CHAT,
            Protocol::WebCompat => web_compat::MAX_CHAT,
            Protocol::Irc => irc::MAX_CHAT,
        }
    }

    /// What a member of a channel receives when someone says something there.
    pub fn encode_chat(self, delivery: &Delivery<'_>, buf: &mut [u8]) -> Option<usize> {
        match self {
            Protocol::DuckChat => duckchat::encode_chat(delivery.channel, delivery.chat, buf),
            Protocol::DuckChatBig => big(buf, |buf| {
                duckchat::encode_chat(delivery.channel, delivery.chat, buf)
            }),
            Protocol::Text => text::encode_chat(delivery.chat, buf),
            Protocol::Web => web::encode_chat(delivery, buf),
            Protocol::WebCompat => web_compat::encode_chat(delivery, buf),
            Protocol::Irc => irc::encode_chat(delivery, buf),
        }
    }

    /// Whether the protocol's users receive what they said themselves in a channel (IRC
    /// clients show their own lines and expect no echo).
    pub fn echoes_own_chat(self) -> bool {
        !matches!(self, Protocol::Irc)
    }

    /// Whether the protocol's users send and receive direct messages (with a mailbox).
    pub fn takes_direct(self) -> bool {
        matches!(self, Protocol::Text | Protocol::Web | Protocol::Irc)
    }

    /// What the mailbox reports to the session named `me`, for a protocol that
    /// [`Protocol::takes_direct`].
    pub fn encode_direct(
        self,
        me: &Nick,
        event: &DirectEvent<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        match self {
            Protocol::Irc => irc::encode_direct(me, event, buf),
            Protocol::Text => text::encode_direct(event, buf),
            Protocol::Web => web::encode_direct(event, buf),
            Protocol::DuckChat | Protocol::DuckChatBig | Protocol::WebCompat => None,
        }
    }

    /// Whether the protocol tells its users who joins and leaves their channels.
    pub fn wants_presence(self) -> bool {
        matches!(self, Protocol::Web | Protocol::Irc)
    }

    /// Whether the protocol shows a member's rename as one event (IRC's NICK); the others see
    /// the old name leave and the new one join.
    pub fn shows_renames(self) -> bool {
        matches!(self, Protocol::Irc)
    }

    /// What changed about `user` in `channel`, for a protocol that [`Protocol::wants_presence`]
    /// (a [`Change::Renamed`] only where it [`Protocol::shows_renames`]).
    pub fn encode_presence(
        self,
        channel: &Name,
        user: &Person,
        change: Change,
        buf: &mut [u8],
    ) -> Option<usize> {
        match self {
            Protocol::Web => web::encode_presence(channel, user, change, buf),
            Protocol::Irc => irc::encode_presence(channel, user, change, buf),
            Protocol::DuckChat | Protocol::DuckChatBig | Protocol::Text | Protocol::WebCompat => {
                None
            }
        }
    }

    /// How many names one LIST (`list`) or WHO answer carries at most.
    pub fn names_per_answer(self, list: bool) -> usize {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => duckchat::names_per_answer(list),
            Protocol::Web => web::NAMES_PER_ANSWER,
            Protocol::Irc => irc::NAMES_PER_ANSWER,
            Protocol::Text | Protocol::WebCompat => 1,
        }
    }

    /// At most how long an answer is, known before it is written (it is charged to the reply
    /// budget first); `None` for a protocol without LIST and WHO.
    pub fn answer_len(self, answer: &Answer<'_>) -> Option<usize> {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => Some(duckchat::answer_len(answer)),
            Protocol::Web => Some(web::answer_len(answer)),
            Protocol::Irc => Some(irc::answer_len(answer)),
            Protocol::Text | Protocol::WebCompat => None,
        }
    }

    /// A LIST or WHO answer for the session named `me`.
    pub fn encode_answer(self, me: &Nick, answer: &Answer<'_>, buf: &mut [u8]) -> Option<usize> {
        match self {
            Protocol::Irc => irc::encode_answer(me, answer, buf),
            Protocol::DuckChat => duckchat::encode_answer(answer, buf),
            Protocol::DuckChatBig => big(buf, |buf| duckchat::encode_answer(answer, buf)),
            Protocol::Web => web::encode_answer(answer, buf),
            Protocol::Text | Protocol::WebCompat => None,
        }
    }

    /// The verbose log line of a command (`user`: the session's name before it), if the
    /// protocol logs it.
    pub fn log_command(
        self,
        settings: &Settings,
        endpoint: Endpoint,
        user: Option<&Nick>,
        command: &Command<'_>,
        outcome: &Result<Done, Refusal>,
        out: &mut Outbox,
    ) {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => {
                duckchat::log_command(settings, endpoint, user, command, out)
            }
            Protocol::Text | Protocol::Web | Protocol::WebCompat | Protocol::Irc => {
                text::log_command(settings, endpoint, outcome, out)
            }
        }
    }

    /// The verbose log line of a session that timed out.
    pub fn log_expired(self, settings: &Settings, endpoint: Endpoint, out: &mut Outbox) {
        match self {
            Protocol::DuckChat | Protocol::DuckChatBig => {
                out.log(format_args!("{} {endpoint} user timed out", settings.local))
            }
            Protocol::Text | Protocol::Web | Protocol::WebCompat | Protocol::Irc => out.log(
                format_args!("{} Client {endpoint} timed out", settings.prefix()),
            ),
        }
    }
}

/// What `encode` writes into `buf` (DuckChat, little-endian), turned big-endian.
fn big(buf: &mut [u8], encode: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<usize> {
    let len = encode(buf)?;
    crate::proto::duckchat::to_big_endian(&mut buf[..len]);
    Some(len)
}
