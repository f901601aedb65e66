//! Server-to-server datagrams of group federation (`shared/spec/textchat.md`). The public
//! delaying proxy forwards only text without NUL bytes and at most 999 bytes, so every datagram
//! is a line of space-separated fields, strings carry their length (`3:abc`) and the free chat
//! text comes last, where a delimiter inside it cannot confuse the parser:
//!
//! ```text
//! D <room> <seq> M <counter> <more> <user> <text>   chat message (or a fragment of one)
//! D <room> <seq> P <counter> <priority>             proposal for the receiver's message
//! D <room> <seq> G <counter> <priority> <proposer>  agreed priority of the sender's message
//! A <room> <seq>                                    the room's stream arrived up to seq
//! ```
//!
//! `D` datagrams travel on a reliable stream per (room, sender, receiver); `seq` numbers it from 1
//! and `A` acknowledges it cumulatively. A message longer than one datagram is sent as fragments
//! with `more` = 1 followed by one with `more` = 0. Servers are numbered from 1, as in the cluster file.

use thiserror::Error;

/// The most a datagram may hold (the proxy truncates anything longer).
pub const MAX_DATAGRAM: usize = 999;
/// The longest room name (a DuckChat channel name).
pub const MAX_ROOM: usize = 31;
/// The longest user name.
pub const MAX_USER: usize = 63;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    Msg {
        counter: u64,
        more: bool,
        user: &'a [u8],
        text: &'a [u8],
    },
    Propose {
        counter: u64,
        priority: u64,
    },
    Agreed {
        counter: u64,
        priority: u64,
        proposer: u16,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    Data {
        room: &'a [u8],
        seq: u64,
        body: Body<'a>,
    },
    Ack {
        room: &'a [u8],
        seq: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("malformed group datagram: bad {0}")]
    Field(&'static str),
    #[error("group datagram of {0} bytes is longer than {MAX_DATAGRAM}")]
    TooLong(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("group datagram would exceed {MAX_DATAGRAM} bytes or hold a NUL byte")]
    DoesNotFit,
}

/// The longest chat text one `M` datagram can carry for this room and user, whatever the numbers.
pub fn max_text(room: &[u8], user: &[u8]) -> usize {
    // "D " room " " seq " M " counter " 1 " user " ", numbers at their 20-digit widest.
    let header = 2 + prefixed_len(room) + 1 + 20 + 3 + 20 + 3 + prefixed_len(user) + 1;
    MAX_DATAGRAM.saturating_sub(header)
}

fn prefixed_len(s: &[u8]) -> usize {
    digits(s.len() as u64) + 1 + s.len()
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

impl Datagram<'_> {
    pub fn room(&self) -> &[u8] {
        match self {
            Datagram::Data { room, .. } | Datagram::Ack { room, .. } => room,
        }
    }

    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let limit = out.len().min(MAX_DATAGRAM);
        let mut w = Writer {
            out: &mut out[..limit],
            at: 0,
        };
        match *self {
            Datagram::Ack { room, seq } => {
                w.bytes(b"A ")?;
                w.prefixed(room)?;
                w.bytes(b" ")?;
                w.number(seq)?;
            }
            Datagram::Data { room, seq, body } => {
                w.bytes(b"D ")?;
                w.prefixed(room)?;
                w.bytes(b" ")?;
                w.number(seq)?;
                match body {
                    Body::Msg {
                        counter,
                        more,
                        user,
                        text,
                    } => {
                        w.bytes(b" M ")?;
                        w.number(counter)?;
                        w.bytes(if more { b" 1 " } else { b" 0 " })?;
                        w.prefixed(user)?;
                        w.bytes(b" ")?;
                        w.bytes(text)?;
                    }
                    Body::Propose { counter, priority } => {
                        w.bytes(b" P ")?;
                        w.number(counter)?;
                        w.bytes(b" ")?;
                        w.number(priority)?;
                    }
                    Body::Agreed {
                        counter,
                        priority,
                        proposer,
                    } => {
                        w.bytes(b" G ")?;
                        w.number(counter)?;
                        w.bytes(b" ")?;
                        w.number(priority)?;
                        w.bytes(b" ")?;
                        w.number(u64::from(proposer))?;
                    }
                }
            }
        }
        Ok(w.at)
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), EncodeError> {
        let end = self.at + b.len();
        if end > self.out.len() || b.contains(&0) {
            return Err(EncodeError::DoesNotFit);
        }
        self.out[self.at..end].copy_from_slice(b);
        self.at = end;
        Ok(())
    }

    fn number(&mut self, n: u64) -> Result<(), EncodeError> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    fn prefixed(&mut self, s: &[u8]) -> Result<(), EncodeError> {
        self.number(s.len() as u64)?;
        self.bytes(b":")?;
        self.bytes(s)
    }
}

/// Decodes a group datagram; anything malformed is an error, never a panic.
pub fn decode(buf: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLong(buf.len()));
    }
    let mut r = Reader { buf };
    let kind = r.word("kind")?;
    let room = r.prefixed("room", MAX_ROOM)?;
    r.space("room")?;
    let seq = r.number("seq")?;
    match kind {
        b"A" => {
            r.end()?;
            Ok(Datagram::Ack { room, seq })
        }
        b"D" => {
            r.space("seq")?;
            let body = match r.word("body kind")? {
                b"M" => {
                    let counter = r.number("counter")?;
                    r.space("counter")?;
                    let more = match r.word("more")? {
                        b"0" => false,
                        b"1" => true,
                        _ => return Err(DecodeError::Field("more")),
                    };
                    let user = r.prefixed("user", MAX_USER)?;
                    r.space("user")?;
                    Body::Msg {
                        counter,
                        more,
                        user,
                        text: r.buf,
                    }
                }
                b"P" => {
                    let counter = r.number("counter")?;
                    r.space("counter")?;
                    let priority = r.number("priority")?;
                    r.end()?;
                    Body::Propose { counter, priority }
                }
                b"G" => {
                    let counter = r.number("counter")?;
                    r.space("counter")?;
                    let priority = r.number("priority")?;
                    r.space("priority")?;
                    let proposer = u16::try_from(r.number("proposer")?)
                        .map_err(|_| DecodeError::Field("proposer"))?;
                    r.end()?;
                    Body::Agreed {
                        counter,
                        priority,
                        proposer,
                    }
                }
                _ => return Err(DecodeError::Field("body kind")),
            };
            Ok(Datagram::Data { room, seq, body })
        }
        _ => Err(DecodeError::Field("kind")),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A word up to and including the next space.
    fn word(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == b' ')
            .ok_or(DecodeError::Field(field))?;
        let word = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(word)
    }

    fn space(&mut self, after: &'static str) -> Result<(), DecodeError> {
        match self.buf.split_first() {
            Some((b' ', rest)) => {
                self.buf = rest;
                Ok(())
            }
            _ => Err(DecodeError::Field(after)),
        }
    }

    /// Decimal digits (at least one, no sign) up to the next space or the end.
    fn number(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(self.buf.len());
        if end == 0 || end > 20 {
            return Err(DecodeError::Field(field));
        }
        let mut n: u64 = 0;
        for &d in &self.buf[..end] {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(DecodeError::Field(field))?;
        }
        self.buf = &self.buf[end..];
        Ok(n)
    }

    fn prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.number(field)? as usize;
        match self.buf.split_first() {
            Some((b':', rest)) if len <= max && len <= rest.len() => {
                self.buf = &rest[len..];
                Ok(&rest[..len])
            }
            _ => Err(DecodeError::Field(field)),
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Field("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(d: Datagram<'_>) -> Vec<u8> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = d.encode(&mut buf).unwrap();
        assert_eq!(decode(&buf[..n]).unwrap(), d);
        buf[..n].to_vec()
    }

    #[test]
    fn every_kind_round_trips_and_reads_as_text() {
        let wire = round_trip(Datagram::Data {
            room: b"7",
            seq: 12,
            body: Body::Msg {
                counter: 3,
                more: false,
                user: b"127.0.0.1:5000",
                text: b"hi 1:x D 3 P <z> ",
            },
        });
        assert_eq!(wire, b"D 1:7 12 M 3 0 14:127.0.0.1:5000 hi 1:x D 3 P <z> ");
        round_trip(Datagram::Data {
            room: b"a room",
            seq: u64::MAX,
            body: Body::Msg {
                counter: u64::MAX,
                more: true,
                user: b"",
                text: b"",
            },
        });
        let wire = round_trip(Datagram::Data {
            room: b"10",
            seq: 1,
            body: Body::Propose {
                counter: 9,
                priority: 44,
            },
        });
        assert_eq!(wire, b"D 2:10 1 P 9 44");
        round_trip(Datagram::Data {
            room: b"10",
            seq: 2,
            body: Body::Agreed {
                counter: 9,
                priority: 44,
                proposer: 10,
            },
        });
        assert_eq!(round_trip(Datagram::Ack { room: b"3", seq: 5 }), b"A 1:3 5");
    }

    #[test]
    fn max_text_is_exact_at_the_widest_numbers() {
        let user = [b'u'; MAX_USER];
        let room = [b'r'; MAX_ROOM];
        let widest = |text: &[u8]| {
            let mut buf = [0u8; 2000];
            Datagram::Data {
                room: &room,
                seq: u64::MAX,
                body: Body::Msg {
                    counter: u64::MAX,
                    more: true,
                    user: &user,
                    text,
                },
            }
            .encode(&mut buf)
        };
        let text = vec![b't'; max_text(&room, &user)];
        assert_eq!(widest(&text), Ok(MAX_DATAGRAM));
        let mut longer = text.clone();
        longer.push(b't');
        assert_eq!(widest(&longer), Err(EncodeError::DoesNotFit));
    }

    #[test]
    fn nul_bytes_are_refused() {
        let mut buf = [0u8; 100];
        let d = Datagram::Ack {
            room: b"a\0",
            seq: 1,
        };
        assert_eq!(d.encode(&mut buf), Err(EncodeError::DoesNotFit));
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"A",
            b"A 1:3",
            b"A 1:3 ",
            b"A 1:3 x",
            b"A 1:3 5 ",
            b"A 9:3 5",
            b"A 99999999999999999999:3 5",
            b"A 1:3 99999999999999999999",
            b"X 1:3 5",
            b"D 1:3 5",
            b"D 1:3 5 Q 1",
            b"D 1:3 5 M 1 2 1:u t",
            b"D 1:3 5 M 1 0 5:u",
            b"D 1:3 5 M 1 0 1:u",
            b"D 1:3 5 P 1",
            b"D 1:3 5 P 1 2 3",
            b"D 1:3 5 G 1 2 70000",
            b"D 32:rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr 5 P 1 2",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(
            decode(&[b'x'; 1000]),
            Err(DecodeError::TooLong(1000))
        ));
    }
}
