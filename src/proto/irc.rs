//! IRC messages (RFC 1459/2812, as modern IRC documentation describes them): one line,
//! `[@tags ][:prefix ]COMMAND [params...] [:trailing]`, at most 512 bytes with its CR LF (tags
//! aside). [`parse`] borrows a line's parts without allocating; what a client sends is hostile
//! and anything that does not parse is a [`LineError`], never a panic.

use arrayvec::ArrayVec;

/// The longest line without tags, CR LF included (RFC 2812 2.3).
pub const MAX_LINE: usize = 512;
/// The longest line a client may send with its tags (IRCv3: 4094 bytes of client tags, then
/// the message).
pub const MAX_TAGGED_LINE: usize = 4096 + MAX_LINE;
/// Parameters a message carries at most (RFC 2812: 14 and a trailing one).
pub const MAX_PARAMS: usize = 15;
/// The longest nickname this server gives out (`NICKLEN`).
pub const MAX_NICK: usize = 31;

/// One message as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The command, as written (compare with [`Message::is`]).
    pub command: &'a [u8],
    pub params: ArrayVec<&'a [u8], MAX_PARAMS>,
}

impl<'a> Message<'a> {
    /// Whether the command is `name` (commands are case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.command.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The command in capitals, on the stack (commands are case-insensitive; a command
    /// longer than any IRC has is cut, and matches none).
    pub fn command_upper(&self) -> ArrayVec<u8, 16> {
        self.command
            .iter()
            .take(16)
            .map(u8::to_ascii_uppercase)
            .collect()
    }

    /// Parameter `i`, if there is one.
    pub fn param(&self, i: usize) -> Option<&'a [u8]> {
        self.params.get(i).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("empty line")]
    Empty,
    #[error("a NUL, CR or LF inside the line")]
    ForbiddenByte,
    #[error("no command")]
    NoCommand,
}

/// One line without its CR LF. Tags and the prefix a client sends are skipped (a client's
/// prefix is meaningless: the server knows who it is); parameters beyond [`MAX_PARAMS`] are
/// folded into the last one, as RFC 2812 reads them.
pub fn parse(line: &[u8]) -> Result<Message<'_>, LineError> {
    if line.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(LineError::ForbiddenByte);
    }
    let mut rest = trim_spaces(line);
    if rest.is_empty() {
        return Err(LineError::Empty);
    }
    if rest[0] == b'@' {
        rest = trim_spaces(after_word(rest));
    }
    if rest.first() == Some(&b':') {
        rest = trim_spaces(after_word(rest));
    }
    let (command, mut rest) = split_word(rest);
    if command.is_empty() {
        return Err(LineError::NoCommand);
    }
    let mut params = ArrayVec::new();
    loop {
        rest = trim_spaces(rest);
        if rest.is_empty() {
            break;
        }
        if rest[0] == b':' || params.len() == MAX_PARAMS - 1 {
            let last = rest.strip_prefix(b":").unwrap_or(rest);
            params.push(last);
            break;
        }
        let (word, after) = split_word(rest);
        params.push(word);
        rest = after;
    }
    Ok(Message { command, params })
}

/// Whether `nick` is a nickname IRC clients can write and parse: 1 to [`MAX_NICK`] bytes of
/// letters, digits and `[]\`_^{|}-`, not beginning with a digit or `-` (RFC 2812 2.3.1).
pub fn is_valid_nick(nick: &[u8]) -> bool {
    let special = |b: u8| b"[]\\`_^{|}".contains(&b);
    let Some(&first) = nick.first() else {
        return false;
    };
    nick.len() <= MAX_NICK
        && (first.is_ascii_alphabetic() || special(first))
        && nick
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || special(b) || b == b'-')
}

/// The items of a comma-separated list (`JOIN #a,#b`), empty ones skipped.
pub fn list(param: &[u8]) -> impl Iterator<Item = &[u8]> {
    param.split(|&b| b == b',').filter(|item| !item.is_empty())
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    &s[start..]
}

fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, &[]),
    }
}

fn after_word(s: &[u8]) -> &[u8] {
    split_word(s).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(m: &'a Message<'_>) -> Vec<&'a [u8]> {
        m.params.iter().copied().collect()
    }

    #[test]
    fn parses_commands_params_and_trailing() {
        let m = parse(b"PRIVMSG #Common :hello there").unwrap();
        assert!(m.is("privmsg"));
        assert_eq!(params(&m), [&b"#Common"[..], b"hello there"]);
        let m = parse(b"@time=x :amy!a@h JOIN #a,#b").unwrap();
        assert_eq!(m.command, b"JOIN");
        assert_eq!(params(&m), [&b"#a,#b"[..]]);
        let m = parse(b"USER amy 0 * :Amy Pond").unwrap();
        assert_eq!(params(&m), [&b"amy"[..], b"0", b"*", b"Amy Pond"]);
        let m = parse(b"PRIVMSG #c ::-)").unwrap();
        assert_eq!(m.param(1), Some(&b":-)"[..]));
        let m = parse(b"TOPIC #c :").unwrap();
        assert_eq!(
            m.param(1),
            Some(&b""[..]),
            "an empty trailing parameter is one"
        );
        let m = parse(b"QUIT").unwrap();
        assert!(m.params.is_empty());
    }

    #[test]
    fn folds_params_beyond_fifteen() {
        let line = b"X 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16";
        let m = parse(line).unwrap();
        assert_eq!(m.params.len(), MAX_PARAMS);
        assert_eq!(m.param(14), Some(&b"15 16"[..]));
    }

    #[test]
    fn refuses_what_is_no_message() {
        assert_eq!(parse(b""), Err(LineError::Empty));
        assert_eq!(parse(b"   "), Err(LineError::Empty));
        assert_eq!(parse(b":prefix"), Err(LineError::NoCommand));
        assert_eq!(parse(b"@tags"), Err(LineError::NoCommand));
        assert_eq!(parse(b"NICK a\0b"), Err(LineError::ForbiddenByte));
        assert_eq!(parse(b"NICK a\rb"), Err(LineError::ForbiddenByte));
    }

    #[test]
    fn nicks_irc_can_carry() {
        for ok in ["amy", "Amy_2", "[x]", "a-b", "`q", "a{b}|c^"] {
            assert!(is_valid_nick(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "2amy",
            "-a",
            "a b",
            "a:b",
            "a!b",
            "#c",
            "a@b",
            "a,b",
            &"x".repeat(32),
        ] {
            assert!(!is_valid_nick(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn lists_split_on_commas() {
        let items: Vec<_> = list(b"#a,,#b").collect();
        assert_eq!(items, [&b"#a"[..], b"#b"]);
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut x = 7u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| b" :@,#aZ\x01\xff\n"[((x >> (i % 60)) % 10) as usize])
                .collect();
            let _ = parse(&bytes);
        }
    }
}
