//! The text line protocol of `shared/spec/textchat.md`: one line per datagram, no CR/LF. A line
//! starting with `/` is a command; anything else is a chat message. The server answers every
//! command with exactly one line starting `+OK` or `-ERR`, and delivers chat as `<nick> text`.
//!
//! One UDP port serves DuckChat too: every DuckChat datagram holds a NUL byte (its type code is
//! a small little-endian integer, its strings are NUL-padded) and a text line never does, so
//! [`is_text`] tells them apart.

use super::is_printable_name;
use std::io::Write;

/// The longest chat message a client may send.
pub const MAX_MESSAGE: usize = 1000;
/// The longest nickname.
pub const MAX_NICK: usize = 63;
/// Room numbers are written with at most this many digits, so a room is always a valid channel name.
pub const MAX_ROOMS: u32 = 1_000_000;
/// The longest reply or delivery this module writes: `<nick> ` + a maximal message.
pub const MAX_LINE: usize = MAX_NICK + 3 + MAX_MESSAGE;

/// True when `datagram` is a line of the text protocol rather than a binary DuckChat datagram.
pub fn is_text(datagram: &[u8]) -> bool {
    !datagram.contains(&0)
}

/// One client line, borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `/join ARG`; the argument is checked by [`parse_room`].
    Join(&'a [u8]),
    Part,
    /// `/nick NAME`: everything after the command, trimmed (names may contain spaces).
    Nick(&'a [u8]),
    Quit,
    /// `/msg NICK text`: everything after the command, trimmed (see [`split_direct`]).
    Msg(&'a [u8]),
    /// `/register NAME PASSWORD`: everything after the command, trimmed (see [`split_direct`]:
    /// the name is the first word, the password the rest).
    Register(&'a [u8]),
    /// `/login NAME PASSWORD` (or `/login TOKEN`): everything after the command, trimmed.
    Login(&'a [u8]),
    /// `/confirm CODE`: the code the server sent this address.
    Confirm(&'a [u8]),
    /// A `/command` this protocol does not have (the word, without arguments).
    Unknown(&'a [u8]),
    Chat(&'a [u8]),
    /// A line shaped like something a server sends (`+OK ...`, `-ERR ...`, `<nick> text`):
    /// another server's reply or delivery, never a client's request. Answering it could start
    /// an endless exchange between two servers, so it is never answered.
    Reply,
}

/// Splits a client line into a command or a chat message. A trailing CR/LF (from `nc -u` and
/// the like) is not part of the line.
pub fn parse(datagram: &[u8]) -> Line<'_> {
    let line = trim_newline(datagram);
    let Some(command) = line.strip_prefix(b"/") else {
        return if is_reply(line) {
            Line::Reply
        } else {
            Line::Chat(line)
        };
    };
    let end = command
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(command.len());
    let (word, rest) = command.split_at(end);
    let arg = rest.trim_ascii();
    match word {
        b"join" => Line::Join(arg),
        b"part" => Line::Part,
        b"nick" => Line::Nick(arg),
        b"quit" => Line::Quit,
        b"msg" => Line::Msg(arg),
        b"register" => Line::Register(arg),
        b"login" => Line::Login(arg),
        b"confirm" => Line::Confirm(arg),
        _ => Line::Unknown(&line[..=word.len()]),
    }
}

/// The first word of a direct message as this server writes it: `+MSG <nick> text`.
pub const DIRECT: &[u8] = b"+MSG";
/// How the reply to a chat line that a cluster refused begins (the room number follows): the
/// message went to no one, and its sender knows.
pub const NOT_SENT: &str = "-ERR Message not sent to room #";

/// The recipient and the text of `/msg NICK text`: the nick is the first word (a nick with a
/// space in it cannot be written here); `None` when either is missing.
pub fn split_direct(arg: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = arg.iter().position(u8::is_ascii_whitespace)?;
    let (nick, text) = arg.split_at(end);
    let text = text.trim_ascii_start();
    (!text.is_empty()).then_some((nick, text))
}

/// `+OK`, `-ERR`, `+MSG` (alone or followed by a space) or `<nick> ` with a nick free of `>`:
/// the shapes of [`encode_reply`], [`encode_chat`] and direct messages. A person's chat line that starts like a delivery
/// (`<b> bold`) is taken for one: that is the price of never answering a server.
fn is_reply(line: &[u8]) -> bool {
    let word = |w: &[u8]| {
        line.strip_prefix(w)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b' ')
    };
    if word(b"+OK") || word(b"-ERR") || word(DIRECT) {
        return true;
    }
    line.strip_prefix(b"<")
        .and_then(|rest| rest.iter().position(|&b| b == b'>').map(|i| &rest[i + 1..]))
        .is_some_and(|after| after.first() == Some(&b' '))
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    Missing,
    NotANumber,
    OutOfRange,
}

/// A room number from 1 to `rooms`.
pub fn parse_room(arg: &[u8], rooms: u32) -> Result<u32, RoomError> {
    if arg.is_empty() {
        return Err(RoomError::Missing);
    }
    if arg.len() > 10 || !arg.iter().all(u8::is_ascii_digit) {
        return Err(RoomError::NotANumber);
    }
    let n = arg.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if n == 0 || n > u64::from(rooms) {
        return Err(RoomError::OutOfRange);
    }
    Ok(n as u32)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NickError {
    Missing,
    TooLong,
    /// `>` would make `<nick> text` ambiguous.
    HasAngle,
    /// Control characters or bytes that are not UTF-8 (see [`is_printable_name`]).
    NotPrintable,
}

pub fn check_nick(nick: &[u8]) -> Result<(), NickError> {
    if nick.is_empty() {
        Err(NickError::Missing)
    } else if nick.len() > MAX_NICK {
        Err(NickError::TooLong)
    } else if nick.contains(&b'>') {
        Err(NickError::HasAngle)
    } else if !is_printable_name(nick) {
        Err(NickError::NotPrintable)
    } else {
        Ok(())
    }
}

/// `<nick> text`, as every member of the room receives it.
pub fn encode_chat(out: &mut [u8], nick: &[u8], text: &[u8]) -> Result<usize, std::io::Error> {
    let total = out.len();
    let mut w = &mut *out;
    w.write_all(b"<")?;
    w.write_all(nick)?;
    w.write_all(b"> ")?;
    w.write_all(text)?;
    Ok(total - w.len())
}

/// Writes a direct message as `+MSG <nick> text`.
pub fn encode_direct(out: &mut [u8], nick: &[u8], text: &[u8]) -> Result<usize, std::io::Error> {
    let total = out.len();
    let mut w = &mut *out;
    w.write_all(DIRECT)?;
    w.write_all(b" ")?;
    let chat = encode_chat(w, nick, text)?;
    Ok(total - w.len() + chat)
}

/// Writes a reply line (`+OK ...` / `-ERR ...`) made by `format_args!`.
pub fn encode_reply(
    out: &mut [u8],
    line: std::fmt::Arguments<'_>,
) -> Result<usize, std::io::Error> {
    let total = out.len();
    let mut w = &mut *out;
    w.write_fmt(line)?;
    Ok(total - w.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_chat() {
        assert_eq!(parse(b"/join 7"), Line::Join(b"7"));
        assert_eq!(parse(b"/join   12  \r\n"), Line::Join(b"12"));
        assert_eq!(parse(b"/join"), Line::Join(b""));
        assert_eq!(parse(b"/part"), Line::Part);
        assert_eq!(parse(b"/nick  Linh Tran "), Line::Nick(b"Linh Tran"));
        assert_eq!(parse(b"/quit\n"), Line::Quit);
        assert_eq!(parse(b"/msg bob  hi there \n"), Line::Msg(b"bob  hi there"));
        assert_eq!(
            split_direct(b"bob  hi there"),
            Some((&b"bob"[..], &b"hi there"[..]))
        );
        assert_eq!(split_direct(b"bob"), None, "no text");
        assert_eq!(split_direct(b""), None);
        assert_eq!(parse(b"/dance wildly"), Line::Unknown(b"/dance"));
        assert_eq!(parse(b"/"), Line::Unknown(b"/"));
        assert_eq!(parse(b"/joinx 1"), Line::Unknown(b"/joinx"));
        assert_eq!(parse(b"hello /join 1"), Line::Chat(b"hello /join 1"));
        assert_eq!(parse(b" /join 1"), Line::Chat(b" /join 1"));
        assert_eq!(parse(b""), Line::Chat(b""));
    }

    #[test]
    fn server_lines_are_replies() {
        for line in [
            &b"+OK You are now in chat room #3"[..],
            b"-ERR You are not in a chat room",
            b"-ERR",
            b"+OK",
            b"<127.0.0.1:5000> hello",
            b"<Linh Tran> ",
            b"<> x",
            b"+MSG <amy> hi",
        ] {
            assert_eq!(
                parse(line),
                Line::Reply,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        for line in [
            &b"+OKAY then"[..],
            b"-ERRATA",
            b"+MSGS",
            b"<3 you",
            b"<b>bold",
            b"x",
            b"a <b> c",
        ] {
            assert_eq!(
                parse(line),
                Line::Chat(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn printable_names() {
        assert!(is_printable_name(b"Linh Tran"));
        assert!(is_printable_name("Zoë 🦆".as_bytes()));
        for bad in [
            &b""[..],
            b"a\nb",
            b"a\rb",
            b"\x1b[2J",
            b"del\x7f",
            b"\xff\xfe",
            "c1\u{85}".as_bytes(),
        ] {
            assert!(!is_printable_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn rooms_are_numbers_in_range() {
        assert_eq!(parse_room(b"1", 10), Ok(1));
        assert_eq!(parse_room(b"10", 10), Ok(10));
        assert_eq!(parse_room(b"007", 10), Ok(7));
        assert_eq!(parse_room(b"", 10), Err(RoomError::Missing));
        assert_eq!(parse_room(b"abc", 10), Err(RoomError::NotANumber));
        assert_eq!(parse_room(b"-1", 10), Err(RoomError::NotANumber));
        assert_eq!(parse_room(b"1 2", 10), Err(RoomError::NotANumber));
        assert_eq!(parse_room(b"0", 10), Err(RoomError::OutOfRange));
        assert_eq!(parse_room(b"11", 10), Err(RoomError::OutOfRange));
        assert_eq!(
            parse_room(b"99999999999999999999", 10),
            Err(RoomError::NotANumber)
        );
        assert_eq!(parse_room(b"9999999999", 10), Err(RoomError::OutOfRange));
    }

    #[test]
    fn nicks() {
        assert_eq!(check_nick(b"Linh"), Ok(()));
        assert_eq!(check_nick(b""), Err(NickError::Missing));
        assert_eq!(check_nick(b"a>b"), Err(NickError::HasAngle));
        assert_eq!(check_nick(&[b'x'; 64]), Err(NickError::TooLong));
        assert_eq!(check_nick(&[b'x'; 63]), Ok(()));
        assert_eq!(check_nick(b"a\x1b[31m"), Err(NickError::NotPrintable));
    }

    #[test]
    fn classification_by_nul() {
        assert!(is_text(b"/join 1"));
        assert!(is_text(b""));
        assert!(!is_text(&[4, 0, 0, 0, b'x']));
        assert!(!is_text(b"abc\0"));
    }

    #[test]
    fn encoders_fill_the_buffer_or_fail() {
        let mut buf = [0u8; MAX_LINE];
        let n = encode_chat(&mut buf, b"127.0.0.1:5000", b"hi there").unwrap();
        assert_eq!(&buf[..n], b"<127.0.0.1:5000> hi there");
        let n = encode_chat(&mut buf, &[b'n'; MAX_NICK], &[b't'; MAX_MESSAGE]).unwrap();
        assert_eq!(n, MAX_LINE);
        let n = encode_reply(
            &mut buf,
            format_args!("+OK You are now in chat room #{}", 7),
        )
        .unwrap();
        assert_eq!(&buf[..n], b"+OK You are now in chat room #7");
        assert!(encode_chat(&mut buf[..5], b"nick", b"text").is_err());
    }
}
