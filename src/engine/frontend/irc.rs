//! IRC clients (`docs/irc.md`): the commands of a registered connection turned into the core's,
//! and what the core says written as IRC lines. The connection's own business (CAP, the
//! registration, PING, QUIT) is the IRC transport's (`crate::streams::irc`); what reaches this
//! file is a registered client's line, or the registration's `NICK` and SASL's `AUTHENTICATE`
//! as the transport forwards them. A session is named `*` until its nick is granted.
//!
//! Channel `#x` is the core's channel `x`: `#Common` is DuckChat's `Common`, `#7` text room 7.
//! A PRIVMSG to a nick is a direct message (the mailbox). IRC clients show their own lines
//! themselves, so a channel message is not sent back to the IRC user who said it.

use super::command::DirectOutcome;
use super::command::{
    Change, Command, Decoded, Delivery, DirectEvent, Done, Person, Refusal, View,
};
use super::text::account_refusal;
use super::{Answer, SCRATCH};
use crate::engine::Endpoint;
use crate::proto::irc::{self, Message};
use crate::proto::{Name, Nick};
use base64::Engine as _;
use std::io::Write as _;

/// The server's name in the prefix of its own lines, and the host of every user's.
pub const SERVER: &str = "chat-router";
/// The name a session goes by until its nick is granted (as IRC writes an unregistered target).
pub const UNREGISTERED: &str = "*";
/// Text bytes per PRIVMSG line: a longer message is split over several lines, each within
/// IRC's 512 bytes with the longest prefix.
const TEXT_PER_LINE: usize = 380;
/// The longest delivery: a message of the longest text the core carries (1000 bytes, the text
/// protocol's), split into lines, each with its prefix and channel.
pub(super) const MAX_CHAT: usize = 4096;
const _: () = assert!(
    MAX_CHAT >= crate::proto::text::MAX_MESSAGE.div_ceil(TEXT_PER_LINE) * (TEXT_PER_LINE + 200)
);
/// Names per LIST or WHO answer (written as several lines).
pub(super) const NAMES_PER_ANSWER: usize = 32;

pub(super) fn decode<'a>(
    request: &'a [u8],
    session: Option<View<'_>>,
    scratch: &'a mut [u8; SCRATCH],
) -> Decoded<'a> {
    let message = match irc::parse(request) {
        Ok(m) => m,
        Err(irc::LineError::Empty) => return Decoded::Nothing,
        Err(_) => return Decoded::Malformed,
    };
    let me = session.map_or(UNREGISTERED, |s| str_of(s.name.as_bytes()));
    let registered = me != UNREGISTERED;
    // The commands of a connection still in its registration.
    if message.is("NICK") {
        return nick(&message, me, scratch);
    }
    if message.is("AUTHENTICATE") {
        return sign_in(&message, scratch);
    }
    if message.is("QUIT") {
        return match session {
            Some(_) => Decoded::Command(Command::Quit),
            None => Decoded::Nothing,
        };
    }
    if message.is("PONG") {
        return Decoded::Command(Command::KeepAlive);
    }
    if !registered {
        return reply(scratch, |w| {
            numeric(w, "451", me, format_args!(":You have not registered"))
        });
    }
    let command = message.command;
    let command = match message.command_upper().as_slice() {
        b"JOIN" => match message.param(0) {
            Some(b"0") => return Decoded::Nothing, // "part all": not kept
            Some(target) => match channel(target) {
                Some(channel) => Command::Join { channel },
                None => return no_such_channel(scratch, me, target),
            },
            None => return need_more_params(scratch, me, command),
        },
        b"PART" => match message.param(0) {
            Some(target) => match channel(target) {
                Some(channel) => Command::Leave { channel },
                None => return no_such_channel(scratch, me, target),
            },
            None => return need_more_params(scratch, me, command),
        },
        b"PRIVMSG" | b"NOTICE" => {
            let Some(target) = message.param(0) else {
                return reply(scratch, |w| {
                    numeric(w, "411", me, format_args!(":No recipient given"))
                });
            };
            let text = match message.param(1) {
                Some(text) if !text.is_empty() => text,
                _ => {
                    return reply(scratch, |w| {
                        numeric(w, "412", me, format_args!(":No text to send"))
                    })
                }
            };
            if target.starts_with(b"#") {
                match channel(target) {
                    Some(channel) => Command::Say { channel, text },
                    None => return no_such_channel(scratch, me, target),
                }
            } else {
                Command::Direct { to: target, text }
            }
        }
        b"NAMES" | b"WHO" => {
            let brief = message.is("NAMES");
            let Some(channel) = message.param(0).and_then(channel) else {
                // A nick, a mask, or nothing: only channels are listed here.
                let target = Word(message.param(0).unwrap_or(b"*"));
                let (code, what) = if brief {
                    ("366", "NAMES")
                } else {
                    ("315", "WHO")
                };
                return reply(scratch, |w| {
                    numeric(w, code, me, format_args!("{target} :End of /{what} list"))
                });
            };
            Command::Who { channel, brief }
        }
        b"LIST" => Command::List,
        b"PING" => {
            let token = Word(message.param(0).unwrap_or(b""));
            return reply(scratch, |w| {
                line(w, format_args!(":{SERVER} PONG {SERVER} :{token}"))
            });
        }
        b"TOPIC" => {
            let Some(target) = message.param(0) else {
                return need_more_params(scratch, me, command);
            };
            let target = Word(target);
            return reply(scratch, |w| match message.param(1) {
                None => numeric(w, "331", me, format_args!("{target} :No topic is set")),
                Some(_) => numeric(
                    w,
                    "482",
                    me,
                    format_args!("{target} :Topics are not kept on this server"),
                ),
            });
        }
        b"AWAY" => {
            return reply(scratch, |w| match message.param(0) {
                Some(text) if !text.is_empty() => numeric(
                    w,
                    "306",
                    me,
                    format_args!(":You have been marked as being away"),
                ),
                _ => numeric(
                    w,
                    "305",
                    me,
                    format_args!(":You are no longer marked as being away"),
                ),
            })
        }
        b"MODE" => return mode(&message, me, scratch),
        b"WHOIS" => {
            let target = Word(
                message
                    .param(message.params.len().saturating_sub(1))
                    .unwrap_or(b"*"),
            );
            return reply(scratch, |w| {
                numeric(w, "318", me, format_args!("{target} :End of /WHOIS list"))
            });
        }
        b"USER" | b"PASS" => {
            return reply(scratch, |w| {
                numeric(w, "462", me, format_args!(":You may not reregister"))
            })
        }
        _ => {
            let command = Word(&command[..command.len().min(32)]);
            return reply(scratch, |w| {
                numeric(w, "421", me, format_args!("{command} :Unknown command"))
            });
        }
    };
    Decoded::Command(command)
}

/// `NICK name`: a nick IRC can carry, or 431/432.
fn nick<'a>(message: &Message<'a>, me: &str, scratch: &'a mut [u8; SCRATCH]) -> Decoded<'a> {
    match message.param(0) {
        None | Some(b"") => reply(scratch, |w| {
            numeric(w, "431", me, format_args!(":No nickname given"))
        }),
        Some(name) if irc::is_valid_nick(name) => Decoded::Command(Command::Login {
            name: Nick::truncating(name),
        }),
        Some(name) => {
            let name = Word(&name[..name.len().min(64)]);
            reply(scratch, |w| {
                numeric(w, "432", me, format_args!("{name} :Erroneous nickname"))
            })
        }
    }
}

/// SASL PLAIN's credentials (`authzid NUL authcid NUL password`, base64), as the transport
/// forwards them once the exchange is complete: a sign-in, or 904.
fn sign_in<'a>(message: &Message<'a>, scratch: &'a mut [u8; SCRATCH]) -> Decoded<'a> {
    let encoded = message.param(0).unwrap_or(b"");
    let Ok(len) = base64::engine::general_purpose::STANDARD.decode_slice(encoded, &mut scratch[..])
    else {
        return reply(scratch, |w| {
            numeric(
                w,
                "904",
                UNREGISTERED,
                format_args!(":SASL authentication failed"),
            )
        });
    };
    let mut parts = scratch[..len].splitn(3, |&b| b == 0);
    let (Some(authz), Some(name), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
        return reply(scratch, |w| {
            numeric(
                w,
                "904",
                UNREGISTERED,
                format_args!(":SASL authentication failed"),
            )
        });
    };
    if !authz.is_empty() && authz != name {
        // Acting for another account is not offered.
        return reply(scratch, |w| {
            numeric(
                w,
                "904",
                UNREGISTERED,
                format_args!(":SASL authentication failed"),
            )
        });
    }
    let scratch: &'a [u8; SCRATCH] = scratch;
    let mut parts = scratch[..len].splitn(3, |&b| b == 0).skip(1);
    match (parts.next(), parts.next()) {
        (Some(name), Some(password)) => Decoded::Command(Command::SignIn { name, password }),
        _ => Decoded::Nothing,
    }
}

/// MODE: channels have `+n` (only members speak) and no bans; user modes are not kept.
fn mode<'a>(message: &Message<'a>, me: &str, scratch: &'a mut [u8; SCRATCH]) -> Decoded<'a> {
    let Some(target) = message.param(0) else {
        return need_more_params(scratch, me, message.command);
    };
    let change = message.param(1);
    let target_text = Word(target);
    if target.starts_with(b"#") {
        return reply(scratch, |w| match change {
            None => numeric(w, "324", me, format_args!("{target_text} +n")),
            Some(b"b" | b"+b") => numeric(
                w,
                "368",
                me,
                format_args!("{target_text} :End of channel ban list"),
            ),
            Some(_) => numeric(
                w,
                "482",
                me,
                format_args!("{target_text} :Channel modes are not kept on this server"),
            ),
        });
    }
    if target != me.as_bytes() {
        return reply(scratch, |w| {
            numeric(
                w,
                "502",
                me,
                format_args!(":Can't change mode for other users"),
            )
        });
    }
    match change {
        None => reply(scratch, |w| numeric(w, "221", me, format_args!("+"))),
        Some(_) => Decoded::Nothing,
    }
}

/// The core's channel for `#name`: 1 to 31 bytes after the `#`.
fn channel(target: &[u8]) -> Option<Name> {
    let name = target.strip_prefix(b"#")?;
    (!name.is_empty() && name.len() <= Name::CAPACITY && crate::proto::is_printable_name(name))
        .then(|| Name::truncating(name))
}

fn no_such_channel<'a>(scratch: &'a mut [u8; SCRATCH], me: &str, target: &[u8]) -> Decoded<'a> {
    let target = Word(&target[..target.len().min(64)]);
    reply(scratch, |w| {
        numeric(w, "403", me, format_args!("{target} :No such channel"))
    })
}

fn need_more_params<'a>(scratch: &'a mut [u8; SCRATCH], me: &str, command: &[u8]) -> Decoded<'a> {
    let command = Word(&command[..command.len().min(32)]);
    reply(scratch, |w| {
        numeric(
            w,
            "461",
            me,
            format_args!("{command} :Not enough parameters"),
        )
    })
}

/// A reply written by `write` into `scratch`.
fn reply<'a>(
    scratch: &'a mut [u8; SCRATCH],
    write: impl FnOnce(&mut Lines<'_>) -> Option<()>,
) -> Decoded<'a> {
    let mut lines = Lines::new(&mut scratch[..]);
    match write(&mut lines) {
        Some(()) => {
            let len = lines.len;
            let written: &'a [u8; SCRATCH] = scratch;
            Decoded::Reply(&written[..len])
        }
        None => Decoded::Nothing,
    }
}

pub(super) fn default_name(_: Endpoint) -> Nick {
    Nick::from(UNREGISTERED)
}

pub(super) fn encode_refusal(me: &Nick, refusal: &Refusal, buf: &mut [u8]) -> Option<usize> {
    let me = str_of(me.as_bytes());
    write(buf, |w| match refusal {
        Refusal::NotLoggedIn => numeric(w, "451", me, format_args!(":You have not registered")),
        Refusal::UnknownCommand => numeric(w, "421", me, format_args!("* :Unknown command")),
        Refusal::NoChannel(c) => {
            numeric(w, "403", me, format_args!("#{} :No such channel", Chan(c)))
        }
        Refusal::NotInChannel(c) => numeric(
            w,
            "442",
            me,
            format_args!("#{} :You're not on that channel", Chan(c)),
        ),
        Refusal::TooManyChannels => numeric(
            w,
            "405",
            me,
            format_args!("* :You have joined too many channels"),
        ),
        Refusal::ServerChannelLimit(c) => numeric(
            w,
            "405",
            me,
            format_args!("#{} :Too many channels on this server", Chan(c)),
        ),
        Refusal::BadChannelName => numeric(w, "479", me, format_args!("* :Illegal channel name")),
        Refusal::BadUserName => numeric(w, "432", me, format_args!("* :Erroneous nickname")),
        Refusal::Backlog(c) => numeric(
            w,
            "404",
            me,
            format_args!(
                "#{} :Message not sent: a server of the cluster is behind; try again",
                Chan(c)
            ),
        ),
        Refusal::NameRegistered(n) => numeric(
            w,
            "433",
            me,
            format_args!(
                "{} :Nickname is registered: sign in with SASL to use it",
                str_of(n.as_bytes())
            ),
        ),
        Refusal::NameTaken(n) => numeric(
            w,
            "433",
            me,
            format_args!("{} :Nickname is already in use", str_of(n.as_bytes())),
        ),
        // The session asked for another nick before this one was answered: that one is
        // answered instead.
        Refusal::Superseded(_) => None,
        Refusal::BadAccountName
        | Refusal::BadPassword
        | Refusal::NoAccounts
        | Refusal::BadToken => numeric(w, "904", me, format_args!(":SASL authentication failed")),
        Refusal::Account(outcome) => numeric(
            w,
            "904",
            me,
            format_args!(":SASL authentication failed: {}", account_refusal(*outcome)),
        ),
        Refusal::SignedInAs(n) => notice(
            w,
            me,
            format_args!(
                "You are signed in as {}: your nick is your account's",
                str_of(n.as_bytes())
            ),
        ),
        Refusal::TooManySessions => {
            notice(w, me, format_args!("Too many sessions from your address"))
        }
        Refusal::NoMailbox => notice(
            w,
            me,
            format_args!("Direct messages are off on this server"),
        ),
        Refusal::BadDirectText => notice(
            w,
            me,
            format_args!("A direct message is at most 255 bytes of UTF-8"),
        ),
        Refusal::NoSuchUser => numeric(w, "401", me, format_args!("* :No such nick/channel")),
        Refusal::Unconfirmed(_) | Refusal::WrongCode => {
            notice(w, me, format_args!("Your address is not confirmed"))
        }
    })
}

pub(super) fn encode_done(me: &Nick, done: &Done, buf: &mut [u8]) -> Option<usize> {
    let me = str_of(me.as_bytes());
    write(buf, |w| match done {
        // Renamed (the transport turns a registration's into the welcome).
        Done::Named(nick) => line(
            w,
            format_args!(
                ":{} NICK :{}",
                Prefix(me.as_bytes()),
                str_of(nick.as_bytes())
            ),
        ),
        // The JOIN line comes to the joiner as to every member (presence).
        Done::Joined(_) | Done::Nothing | Done::Quit | Done::Confirmed => None,
        Done::Left(c) => line(
            w,
            format_args!(":{} PART #{}", Prefix(me.as_bytes()), Chan(c)),
        ),
        Done::SignedIn { name, .. } | Done::Registered { name, .. } => {
            let name = str_of(name.as_bytes());
            numeric(
                w,
                "900",
                me,
                format_args!(
                    "{} {name} :You are now logged in as {name}",
                    Prefix(me.as_bytes())
                ),
            )?;
            numeric(
                w,
                "903",
                me,
                format_args!(":SASL authentication successful"),
            )
        }
        Done::Code(_) => None,
    })
}

pub(super) fn encode_chat(delivery: &Delivery<'_>, buf: &mut [u8]) -> Option<usize> {
    let from = Prefix(delivery.chat.user());
    let channel = Chan(delivery.channel);
    write(buf, |w| {
        for part in split(delivery.chat.text()) {
            line(
                w,
                format_args!(":{from} PRIVMSG #{channel} :{}", Clean(part)),
            )?;
        }
        Some(())
    })
}

pub(super) fn encode_presence(
    channel: &Name,
    user: &Person,
    change: Change,
    buf: &mut [u8],
) -> Option<usize> {
    let verb = match change {
        Change::Joined => "JOIN",
        Change::Left => "PART",
        Change::Renamed { from } if from.name == user.name => return None,
        Change::Renamed { from } => {
            let (from, to) = (Prefix(from.name.as_bytes()), Word(user.name.as_bytes()));
            return write(buf, |w| line(w, format_args!(":{from} NICK :{to}")));
        }
    };
    write(buf, |w| {
        line(
            w,
            format_args!(
                ":{} {verb} #{}",
                Prefix(user.name.as_bytes()),
                Chan(channel)
            ),
        )
    })
}

/// Bytes per name line of an answer, at most: prefix, numeric, target, channel, and the names.
pub(super) fn answer_len(answer: &Answer<'_>) -> usize {
    let names = match answer {
        Answer::List { names, .. } => names.len(),
        Answer::Who { names, .. } => names.len(),
    };
    // A WHO line names its user three times; every line has the server, target and channel.
    256 + names * (4 * (Name::CAPACITY + 1) + 3 * Nick::CAPACITY + 64)
}

pub(super) fn encode_answer(me: &Nick, answer: &Answer<'_>, buf: &mut [u8]) -> Option<usize> {
    let me = str_of(me.as_bytes());
    write(buf, |w| match *answer {
        Answer::List { names, last } => {
            for name in names {
                numeric(w, "322", me, format_args!("#{} 0 :", Chan(name)))?;
            }
            match last {
                true => numeric(w, "323", me, format_args!(":End of /LIST")),
                false => Some(()),
            }
        }
        Answer::Who {
            channel,
            names,
            last,
            brief: true,
        } => {
            let channel = Chan(channel);
            for chunk in names.chunks(8) {
                numeric(w, "353", me, format_args!("= #{channel} :{}", Names(chunk)))?;
            }
            match last {
                true => numeric(w, "366", me, format_args!("#{channel} :End of /NAMES list")),
                false => Some(()),
            }
        }
        Answer::Who {
            channel,
            names,
            last,
            brief: false,
        } => {
            let channel = Chan(channel);
            for person in names {
                let nick = Word(person.name.as_bytes());
                numeric(
                    w,
                    "352",
                    me,
                    format_args!("#{channel} {nick} {SERVER} {SERVER} {nick} H :0 {nick}"),
                )?;
            }
            match last {
                true => numeric(w, "315", me, format_args!("#{channel} :End of /WHO list")),
                false => Some(()),
            }
        }
    })
}

/// A direct message for the session, or what became of one it sent: a message stored or
/// handed over is not confirmed (IRC does not), one that was not is told.
pub(super) fn encode_direct(me: &Nick, event: &DirectEvent<'_>, buf: &mut [u8]) -> Option<usize> {
    let me_str = str_of(me.as_bytes());
    write(buf, |w| match *event {
        DirectEvent::Sent { to, outcome } => match outcome {
            DirectOutcome::Stored(_) | DirectOutcome::Delivered | DirectOutcome::Unconfirmed => {
                None
            }
            DirectOutcome::NoSuchUser => numeric(
                w,
                "401",
                me_str,
                format_args!("{} :No such nick/channel", Word(to.as_bytes())),
            ),
            DirectOutcome::Full => notice(
                w,
                me_str,
                format_args!(
                    "Message to {} not sent: their mailbox is full",
                    Clean(to.as_bytes())
                ),
            ),
            DirectOutcome::Busy => notice(
                w,
                me_str,
                format_args!(
                    "Message to {} not sent: the mailbox is busy, try again",
                    Clean(to.as_bytes())
                ),
            ),
            DirectOutcome::Failed => notice(
                w,
                me_str,
                format_args!(
                    "Message to {} not sent: the mailbox could not store it",
                    Clean(to.as_bytes())
                ),
            ),
        },
        DirectEvent::Message { from, text, .. } => {
            for part in split(text.as_bytes()) {
                line(
                    w,
                    format_args!(
                        ":{} PRIVMSG {me_str} :{}",
                        Prefix(from.as_bytes()),
                        Clean(part)
                    ),
                )?;
            }
            Some(())
        }
        DirectEvent::Delivered { .. } => None,
    })
}

/// A name as text (names are printable UTF-8; anything else reads as unregistered).
fn str_of(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or(UNREGISTERED)
}

/// Lines written one after another into a buffer; `None` when they do not fit.
struct Lines<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> Lines<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, len: 0 }
    }
}

/// What `lines` writes into `buf`, and its length; `None` when it writes nothing or does not fit.
fn write(buf: &mut [u8], lines: impl FnOnce(&mut Lines<'_>) -> Option<()>) -> Option<usize> {
    let mut w = Lines::new(buf);
    lines(&mut w)?;
    (w.len > 0).then_some(w.len)
}

/// One line and its CR LF.
fn line(w: &mut Lines<'_>, args: std::fmt::Arguments<'_>) -> Option<()> {
    let mut cursor = std::io::Cursor::new(&mut w.buf[w.len..]);
    cursor.write_fmt(args).ok()?;
    cursor.write_all(b"\r\n").ok()?;
    w.len += cursor.position() as usize;
    Some(())
}

/// `:server CODE target rest`.
fn numeric(w: &mut Lines<'_>, code: &str, me: &str, rest: std::fmt::Arguments<'_>) -> Option<()> {
    line(w, format_args!(":{SERVER} {code} {me} {rest}"))
}

fn notice(w: &mut Lines<'_>, me: &str, text: std::fmt::Arguments<'_>) -> Option<()> {
    line(w, format_args!(":{SERVER} NOTICE {me} :{text}"))
}

/// A text in pieces of at most [`TEXT_PER_LINE`] bytes, cut between UTF-8 characters.
fn split(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(TEXT_PER_LINE);
        while cut < rest.len() && cut > 0 && (rest[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        if cut == 0 {
            cut = rest.len().min(TEXT_PER_LINE);
        }
        let (part, after) = rest.split_at(cut);
        rest = after;
        Some(part)
    })
}

/// Bytes as IRC may carry them in a trailing parameter: no NUL, CR or LF (which would end the
/// line and let a user of another protocol write IRC commands), invalid UTF-8 replaced.
struct Clean<'a>(&'a [u8]);

impl std::fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        replacing(f, self.0, |c| matches!(c, '\0' | '\r' | '\n'), " ")
    }
}

/// `bytes` as UTF-8 (invalid sequences as U+FFFD), each character that `bad` picks as `with`.
fn replacing(
    f: &mut std::fmt::Formatter<'_>,
    bytes: &[u8],
    bad: fn(char) -> bool,
    with: &str,
) -> std::fmt::Result {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match bad(c) {
                true => f.write_str(with)?,
                false => std::fmt::Write::write_char(f, c)?,
            }
        }
        if !chunk.invalid().is_empty() {
            f.write_str("\u{FFFD}")?;
        }
    }
    Ok(())
}

/// A user as an IRC prefix (`nick!nick@chat-router`): names of other protocols may hold bytes
/// a prefix cannot (a space, `!`, `@`), written as `_`.
struct Prefix<'a>(&'a [u8]);

impl std::fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nick = Word(self.0);
        write!(f, "{nick}!{nick}@{SERVER}")
    }
}

/// A name (or a client's bytes) as one word of a line: no byte that ends or splits an IRC
/// word or a prefix.
pub struct Word<'a>(pub &'a [u8]);

impl std::fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bad = |c| matches!(c, ' ' | '!' | '@' | ',' | '\0' | '\r' | '\n');
        replacing(f, self.0, bad, "_")
    }
}

/// Nicks separated by spaces.
struct Names<'a>(&'a [Person]);

impl std::fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, person) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            Word(person.name.as_bytes()).fmt(f)?;
        }
        Ok(())
    }
}

/// A channel's name after its `#`.
struct Chan<'a>(&'a Name);

impl std::fmt::Display for Chan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Word(self.0.as_bytes()).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Chat;

    fn chat_lines(user: &[u8], text: &[u8]) -> Vec<String> {
        let channel = Name::from("Common");
        let chat = Chat::new(user, text);
        let delivery = Delivery {
            channel: &channel,
            chat: &chat,
            id: 1,
            origin: None,
            unix_ms: 0,
        };
        let mut buf = [0u8; MAX_CHAT];
        let len = encode_chat(&delivery, &mut buf).expect("fits");
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.ends_with("\r\n"));
        text.split_terminator("\r\n").map(str::to_string).collect()
    }

    #[test]
    fn a_long_message_is_split_into_lines_irc_can_carry() {
        let text = "é".repeat(500); // 1000 bytes, two per character
        let lines = chat_lines(b"amy", text.as_bytes());
        assert_eq!(lines.len(), 3);
        let mut joined = String::new();
        for line in &lines {
            assert!(line.len() + 2 <= irc::MAX_LINE, "{}", line.len());
            let said = line
                .strip_prefix(":amy!amy@chat-router PRIVMSG #Common :")
                .unwrap();
            joined.push_str(said);
        }
        assert_eq!(joined, text, "cut between characters, nothing lost");
    }

    #[test]
    fn nobody_writes_irc_lines_into_another_users_connection() {
        let lines = chat_lines(b"duck user", b"hi\r\nQUIT :bye\0x\xff");
        assert_eq!(
            lines,
            [":duck_user!duck_user@chat-router PRIVMSG #Common :hi  QUIT :bye x\u{FFFD}"]
        );
    }

    #[test]
    fn numerics_name_their_target() {
        let mut buf = [0u8; 512];
        let me = Nick::from("amy");
        let len = encode_refusal(&me, &Refusal::NoChannel(Name::from("x")), &mut buf).unwrap();
        assert_eq!(&buf[..len], b":chat-router 403 amy #x :No such channel\r\n");
        let len = encode_done(&me, &Done::Named(Nick::from("amelia")), &mut buf).unwrap();
        assert_eq!(&buf[..len], b":amy!amy@chat-router NICK :amelia\r\n");
    }

    #[test]
    fn sasl_plain_becomes_a_sign_in() {
        let mut scratch = [0u8; SCRATCH];
        let encoded = base64::engine::general_purpose::STANDARD.encode(b"\0amy\0secret pw");
        let line = format!("AUTHENTICATE {encoded}");
        match decode(line.as_bytes(), None, &mut scratch) {
            Decoded::Command(Command::SignIn { name, password }) => {
                assert_eq!((name, password), (&b"amy"[..], &b"secret pw"[..]));
            }
            other => panic!("{other:?}"),
        }
        let mut scratch = [0u8; SCRATCH];
        let other = base64::engine::general_purpose::STANDARD.encode(b"bob\0amy\0pw");
        let line = format!("AUTHENTICATE {other}");
        assert!(
            matches!(decode(line.as_bytes(), None, &mut scratch), Decoded::Reply(r) if r.starts_with(b":chat-router 904")),
            "acting for another account is refused"
        );
    }
}
