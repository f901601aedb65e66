//! The DuckChat client protocol ([`crate::proto::duckchat`]): fixed-size binary requests, a session
//! begins with LOGIN, success is silent, a refusal is one TXT_ERROR, and LIST and WHO answers
//! are TXT_LIST and TXT_WHO datagrams of at most [`duckchat::SPLIT_LIMIT`] bytes.

use super::command::{Command, Decoded, Refusal, Settings, View};
use super::Answer;
use crate::engine::lossy::Lossy;
use crate::engine::{Chat, DropReason, Endpoint, Outbox};
use crate::proto::duckchat::{self, DecodeError, Inbound, SayLayout};
use crate::proto::{Name, Nick, Text};

pub(super) const MAX_CHAT: usize = duckchat::TXT_SAY_LEN;

pub(super) fn decode<'a>(request: &'a [u8], session: Option<View<'_>>) -> Decoded<'a> {
    // The layout only matters to S2S_SAY, which is not a client's request.
    let inbound = match duckchat::decode_inbound(request, SayLayout::UserFirst) {
        Ok(inbound) => inbound,
        Err(DecodeError::UnknownType(_)) => return Decoded::Command(Command::Unknown),
        Err(_) => return Decoded::Malformed,
    };
    let command = match inbound {
        Inbound::Login { user } => Command::Login {
            name: Nick::truncating(Name::truncating(user).as_bytes()),
        },
        Inbound::Logout => Command::Quit,
        Inbound::Join { channel } => Command::Join {
            channel: Name::truncating(channel),
        },
        Inbound::Leave { .. } if session.is_none() && request.len() == duckchat::TXT_ERROR_LEN => {
            // The shape of a TXT_ERROR: another server's error, not a request.
            return Decoded::Drop(DropReason::ReplyShaped);
        }
        Inbound::Leave { channel } => Command::Leave {
            channel: Name::truncating(channel),
        },
        Inbound::Say { channel, text } => Command::Say {
            channel: Name::truncating(channel),
            // A DuckChat text is at most its field less the NUL, as it is delivered.
            text: &text[..text.len().min(Text::CAPACITY)],
        },
        Inbound::List => Command::List,
        Inbound::Who { channel } => Command::Who {
            channel: Name::truncating(channel),
            brief: false,
        },
        Inbound::KeepAlive => Command::KeepAlive,
        Inbound::S2sJoin { .. } | Inbound::S2sLeave { .. } | Inbound::S2sSay(_) => {
            return Decoded::Drop(DropReason::NotNeighbor);
        }
    };
    Decoded::Command(command)
}

/// One TXT_ERROR; its text is at most 63 bytes.
pub(super) fn encode_refusal(refusal: &Refusal, buf: &mut [u8]) -> Option<usize> {
    let (prefix, name): (&[u8], &[u8]) = match refusal {
        // A source whose address may hold no more sessions was not logged in.
        Refusal::NotLoggedIn | Refusal::TooManySessions => (b"Not logged in", b""),
        Refusal::UnknownCommand => (b"*Unknown command", b""),
        Refusal::NoChannel(c) => (b"No channel by the name ", c.as_bytes()),
        Refusal::NotInChannel(c) => (b"You are not in channel ", c.as_bytes()),
        Refusal::TooManyChannels => (b"Too many channels", b""),
        Refusal::ServerChannelLimit(_) => (b"Too many channels on this server", b""),
        Refusal::BadChannelName => (b"Channel names must be printable UTF-8", b""),
        Refusal::BadUserName => (b"User names must be printable UTF-8", b""),
        Refusal::Backlog(c) => (b"Not sent, a server is behind: ", c.as_bytes()),
        Refusal::NameRegistered(n) => (b"Registered name, sign in elsewhere: ", n.as_bytes()),
        // DuckChat has no direct messages nor accounts: it never asks for them.
        Refusal::NoMailbox
        | Refusal::BadDirectText
        | Refusal::NoSuchUser
        | Refusal::NameTaken(_)
        | Refusal::Superseded(_)
        | Refusal::SignedInAs(_)
        | Refusal::Unconfirmed(_)
        | Refusal::WrongCode
        | Refusal::BadAccountName
        | Refusal::BadPassword
        | Refusal::NoAccounts
        | Refusal::BadToken
        | Refusal::Account(_) => (b"*Unknown command", b""),
    };
    let mut message = [0u8; 96];
    let end = prefix.len() + name.len();
    message[..prefix.len()].copy_from_slice(prefix);
    message[prefix.len()..end].copy_from_slice(name);
    duckchat::encode_txt_error(buf, &message[..end]).ok()
}

/// A TXT_SAY: name and text cut to DuckChat's fields.
pub(super) fn encode_chat(channel: &Name, chat: &Chat, buf: &mut [u8]) -> Option<usize> {
    let user = Name::truncating(chat.user());
    let text = Text::truncating(chat.text());
    duckchat::encode_txt_say(buf, channel, &user, &text).ok()
}

pub(super) fn names_per_answer(list: bool) -> usize {
    let head = match list {
        true => duckchat::TXT_LIST_HEAD,
        false => duckchat::TXT_WHO_HEAD,
    };
    duckchat::names_per_datagram(head, duckchat::SPLIT_LIMIT)
}

pub(super) fn answer_len(answer: &Answer<'_>) -> usize {
    match answer {
        Answer::List { names, .. } => duckchat::TXT_LIST_HEAD + names.len() * duckchat::NAME_FIELD,
        Answer::Who { names, .. } => duckchat::TXT_WHO_HEAD + names.len() * duckchat::NAME_FIELD,
    }
}

pub(super) fn encode_answer(answer: &Answer<'_>, buf: &mut [u8]) -> Option<usize> {
    match answer {
        Answer::List { names, .. } => duckchat::encode_txt_list(buf, names.iter()).ok(),
        Answer::Who { channel, names, .. } => {
            duckchat::encode_txt_who(buf, channel, names.iter().map(|p| &p.name)).ok()
        }
    }
}

/// The course server's log line for every request of a logged-in user, and for every LOGIN.
pub(super) fn log_command(
    settings: &Settings,
    src: Endpoint,
    user: Option<&Nick>,
    command: &Command<'_>,
    out: &mut Outbox,
) {
    let local = settings.local;
    if let Command::Login { name } = command {
        return out.log(format_args!("{local} {src} recv Request login {name}"));
    }
    let Some(user) = user else {
        return;
    };
    match *command {
        Command::Quit => out.log(format_args!("{local} {src} recv Request logout {user}")),
        Command::Join { channel } => out.log(format_args!(
            "{local} {src} recv Request join {user} {channel}"
        )),
        Command::Leave { channel } => out.log(format_args!(
            "{local} {src} recv Request leave {user} {channel}"
        )),
        Command::Say { channel, text } => out.log(format_args!(
            "{local} {src} recv Request say {user} {channel} \"{}\"",
            Lossy(text)
        )),
        Command::List => out.log(format_args!("{local} {src} recv Request list {user}")),
        Command::Who { channel, .. } => out.log(format_args!(
            "{local} {src} recv Request who {user} {channel}"
        )),
        Command::KeepAlive => out.log(format_args!("{local} {src} recv Request keep alive {user}")),
        Command::Login { .. }
        | Command::Direct { .. }
        | Command::Register { .. }
        | Command::SignIn { .. }
        | Command::SignInToken { .. }
        | Command::Confirm { .. }
        | Command::Unknown => {}
    }
}
