//! Server-to-server datagrams of group federation (`docs/cluster.md`). The public delaying proxy
//! forwards only text without NUL bytes and at most 999 bytes, so a datagram is a line of
//! space-separated fields; strings carry their length (`3:abc`), so fields and frames can follow
//! one another whatever bytes a chat text holds.
//!
//! ```text
//! C <from> <to> <seq> <ack> <mac> [frame ...]   frames on the stream from one server to another
//! X <from> <to> <mac>                           "you were excluded": the receiver starts afresh
//! ```
//!
//! `from` is the sender's incarnation (chosen at start-up), `to` the receiver's as the sender
//! knows it (0: not yet). `seq` numbers the datagram on the sender's reliable stream to the
//! receiver (0: it carries only the header, an acknowledgement or a keep-alive); `ack`
//! acknowledges the receiver's stream to the sender cumulatively. `mac` is `-`, or with a shared
//! key 32 hex digits of a keyed BLAKE3 hash of the datagram without the mac field.
//!
//! Frames (servers are numbered from 1; `mseq` numbers what a server sends to every other, the
//! same for all of them, so a survivor can pass a dead server's frames on):
//!
//! ```text
//! M <mseq> <room> <counter> <more> <user> <text>   chat message, or a fragment of one
//! G <mseq> <room> <counter> <priority> <proposer>  agreed priority of the sender's message
//! P <room> <counter> <priority>                    proposal for the receiver's message
//! H <first> <count> <pos> ...                      multicast frames handled, per origin
//! F <origin> <inc>                                 the sender excludes that incarnation
//! V <origin> <inc> <M or G frame>                  one of its frames, passed on
//! E <origin> <inc>                                 no more of its frames from the sender
//! ```

use arrayvec::ArrayVec;
use thiserror::Error;

/// The most a datagram may hold (the proxy truncates anything longer).
pub const MAX_DATAGRAM: usize = 999;
/// The longest room name (a DuckChat channel name).
pub const MAX_ROOM: usize = 31;
/// The longest user name.
pub const MAX_USER: usize = 63;
/// The most servers a cluster may have.
pub const MAX_SERVERS: usize = 64;
/// Room for the `C` header at its widest, mac included: frames get the rest.
pub const MAX_HEADER: usize = 2 + 3 * 21 + 20 + 1 + MAC_HEX + 1;
/// The most frame bytes one datagram carries.
pub const MAX_FRAMES: usize = MAX_DATAGRAM - MAX_HEADER;
/// What passing a frame on adds to it (`V <origin> <inc> `).
pub const RELAY_OVERHEAD: usize = 2 + 3 + 21 + 1;
const MAC_HEX: usize = 32;

/// A message's part of an `M` frame or its `G` frame: what every other server receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multicast<'a> {
    Msg {
        room: &'a [u8],
        counter: u64,
        more: bool,
        user: &'a [u8],
        text: &'a [u8],
    },
    Agreed {
        room: &'a [u8],
        counter: u64,
        priority: u64,
        proposer: u16,
    },
}

// Frames are decoded one at a time onto the stack and never stored: the size of `Have` costs
// nothing, where boxing it would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Multicast {
        mseq: u64,
        m: Multicast<'a>,
    },
    Propose {
        room: &'a [u8],
        counter: u64,
        priority: u64,
    },
    /// Positions for servers `first`, `first + 1`, ... (0-based).
    Have {
        first: u16,
        positions: ArrayVec<u64, MAX_SERVERS>,
    },
    Flush {
        origin: u16,
        inc: u64,
    },
    Relay {
        origin: u16,
        inc: u64,
        mseq: u64,
        m: Multicast<'a>,
    },
    End {
        origin: u16,
        inc: u64,
    },
}

/// The fixed fields of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub excluded: bool,
    pub from: u64,
    pub to: u64,
    pub seq: u64,
    pub ack: u64,
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

/// The shared key of a cluster: every datagram carries a MAC made with it.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// Any secret (a line of the cluster file or a key file): hashed into the MAC's key.
    pub fn derive(secret: &[u8]) -> Self {
        Self(blake3::derive_key(
            "chat-router cluster datagram MAC v1",
            secret,
        ))
    }

    fn mac(&self, before: &[u8], after: &[u8]) -> [u8; MAC_HEX] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(before);
        h.update(after);
        let digest = h.finalize();
        let mut hex = [0u8; MAC_HEX];
        for (i, b) in digest.as_bytes()[..MAC_HEX / 2].iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        hex
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The longest chat text one `M` frame can carry for this room and user, whatever the numbers,
/// even when a survivor passes it on.
pub fn max_text(room: &[u8], user: &[u8]) -> usize {
    // "M " mseq " " room " " counter " 1 " user " " len ":" text
    let fixed = 2 + 21 + prefixed_len(room) + 1 + 21 + 3 + prefixed_len(user) + 1 + 4;
    MAX_FRAMES.saturating_sub(RELAY_OVERHEAD + fixed)
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

/// Writes the header of a `C` datagram; frames follow with [`finish`].
pub fn encode_header(out: &mut [u8], h: &Header) -> Result<usize, EncodeError> {
    let limit = out.len().min(MAX_DATAGRAM);
    let mut w = Writer {
        out: &mut out[..limit],
        at: 0,
    };
    w.bytes(if h.excluded { b"X " } else { b"C " })?;
    w.number(h.from)?;
    w.bytes(b" ")?;
    w.number(h.to)?;
    if !h.excluded {
        w.bytes(b" ")?;
        w.number(h.seq)?;
        w.bytes(b" ")?;
        w.number(h.ack)?;
    }
    w.bytes(b" ")?;
    Ok(w.at)
}

/// Completes a datagram: `buf[..header]` from [`encode_header`], then the mac field, then the
/// `frames` (already encoded, each preceded by a space). Returns its length.
pub fn finish(
    buf: &mut [u8],
    header: usize,
    frames: &[u8],
    key: Option<&Key>,
) -> Result<usize, EncodeError> {
    let mac_len = if key.is_some() { MAC_HEX } else { 1 };
    let end = header + mac_len + frames.len();
    if end > buf.len().min(MAX_DATAGRAM) || frames.contains(&0) {
        return Err(EncodeError::DoesNotFit);
    }
    buf[header + mac_len..end].copy_from_slice(frames);
    match key {
        Some(key) => {
            let mac = key.mac(&buf[..header], frames);
            buf[header..header + MAC_HEX].copy_from_slice(&mac);
        }
        None => buf[header] = b'-',
    }
    Ok(end)
}

/// Appends one frame, preceded by a space, to `out` if it fits within `limit` bytes in all.
/// False (and `out` unchanged) when it does not.
pub fn push_frame(out: &mut Vec<u8>, limit: usize, frame: &Frame<'_>) -> bool {
    let start = out.len();
    out.resize(limit.max(start), 0);
    let mut w = Writer {
        out: &mut out[..],
        at: start,
    };
    let ok = w.bytes(b" ").and_then(|()| w.frame(frame)).is_ok();
    let end = if ok { w.at } else { start };
    out.truncate(end);
    ok
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

    /// ` n` for each number.
    fn numbers(&mut self, ns: &[u64]) -> Result<(), EncodeError> {
        for &n in ns {
            self.bytes(b" ")?;
            self.number(n)?;
        }
        Ok(())
    }

    fn prefixed(&mut self, s: &[u8]) -> Result<(), EncodeError> {
        self.bytes(b" ")?;
        self.number(s.len() as u64)?;
        self.bytes(b":")?;
        self.bytes(s)
    }

    fn multicast(&mut self, mseq: u64, m: &Multicast<'_>) -> Result<(), EncodeError> {
        match *m {
            Multicast::Msg {
                room,
                counter,
                more,
                user,
                text,
            } => {
                self.bytes(b"M")?;
                self.numbers(&[mseq])?;
                self.prefixed(room)?;
                self.numbers(&[counter, u64::from(more)])?;
                self.prefixed(user)?;
                self.prefixed(text)
            }
            Multicast::Agreed {
                room,
                counter,
                priority,
                proposer,
            } => {
                self.bytes(b"G")?;
                self.numbers(&[mseq])?;
                self.prefixed(room)?;
                self.numbers(&[counter, priority, u64::from(proposer) + 1])
            }
        }
    }

    fn frame(&mut self, frame: &Frame<'_>) -> Result<(), EncodeError> {
        match frame {
            Frame::Multicast { mseq, m } => self.multicast(*mseq, m),
            Frame::Propose {
                room,
                counter,
                priority,
            } => {
                self.bytes(b"P")?;
                self.prefixed(room)?;
                self.numbers(&[*counter, *priority])
            }
            Frame::Have { first, positions } => {
                self.bytes(b"H")?;
                self.numbers(&[u64::from(*first)])?;
                self.bytes(b" ")?;
                self.number(positions.len() as u64)?;
                self.numbers(positions)
            }
            Frame::Flush { origin, inc } => {
                self.bytes(b"F")?;
                self.numbers(&[u64::from(*origin) + 1, *inc])
            }
            Frame::Relay {
                origin,
                inc,
                mseq,
                m,
            } => {
                self.bytes(b"V")?;
                self.numbers(&[u64::from(*origin) + 1, *inc])?;
                self.bytes(b" ")?;
                self.multicast(*mseq, m)
            }
            Frame::End { origin, inc } => {
                self.bytes(b"E")?;
                self.numbers(&[u64::from(*origin) + 1, *inc])
            }
        }
    }
}

/// A decoded datagram: its header, where its mac field is, and its frames, read one at a time.
#[derive(Debug)]
pub struct Datagram<'a> {
    pub header: Header,
    buf: &'a [u8],
    mac: (usize, usize),
    frames: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Whether the datagram carries the right MAC (always, without a key; never, with a key and
    /// none in the datagram).
    pub fn authentic(&self, key: Option<&Key>) -> bool {
        let Some(key) = key else {
            return true;
        };
        let (start, end) = self.mac;
        // Constant time: a forger learns nothing from how fast a wrong MAC is refused.
        end - start == MAC_HEX
            && constant_time_eq(
                &key.mac(&self.buf[..start], &self.buf[end..]),
                &self.buf[start..end],
            )
    }

    pub fn frames(&self) -> Frames<'a> {
        Frames { buf: self.frames }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes a datagram's header; anything malformed is an error, never a panic. The frames are
/// checked as [`Frames`] reads them.
pub fn decode(buf: &[u8]) -> Result<Datagram<'_>, DecodeError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLong(buf.len()));
    }
    let mut r = Reader { buf };
    let excluded = match r.word("kind")? {
        b"C" => false,
        b"X" => true,
        _ => return Err(DecodeError::Field("kind")),
    };
    let from = r.number("from")?;
    r.space("from")?;
    let to = r.number("to")?;
    r.space("to")?;
    let (seq, ack) = if excluded {
        (0, 0)
    } else {
        let seq = r.number("seq")?;
        r.space("seq")?;
        let ack = r.number("ack")?;
        r.space("ack")?;
        (seq, ack)
    };
    let mac_start = buf.len() - r.buf.len();
    let mac = r.buf.iter().position(|&b| b == b' ').unwrap_or(r.buf.len());
    let frames = &r.buf[mac..];
    Ok(Datagram {
        header: Header {
            excluded,
            from,
            to,
            seq,
            ack,
        },
        buf,
        mac: (mac_start, mac_start + mac),
        frames,
    })
}

/// Frames as [`push_frame`] encodes them (each preceded by a space).
pub fn frames_of(buf: &[u8]) -> Frames<'_> {
    Frames { buf }
}

/// The frames of a datagram, in order; a malformed one ends them with an error.
pub struct Frames<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let mut r = Reader { buf: self.buf };
        let frame = r.space("frame").and_then(|()| r.frame());
        self.buf = if frame.is_ok() { r.buf } else { &[] };
        Some(frame)
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

    /// ` n`.
    fn next_number(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.space(field)?;
        self.number(field)
    }

    /// ` n` for a server, 1-based on the wire, 0-based here.
    fn server(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        match self.next_number(field)? {
            n @ 1..=64 => Ok(n as u16 - 1),
            _ => Err(DecodeError::Field(field)),
        }
    }

    fn prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.next_number(field)? as usize;
        match self.buf.split_first() {
            Some((b':', rest)) if len <= max && len <= rest.len() => {
                self.buf = &rest[len..];
                Ok(&rest[..len])
            }
            _ => Err(DecodeError::Field(field)),
        }
    }

    fn kind(&mut self) -> Result<u8, DecodeError> {
        let (&kind, rest) = self.buf.split_first().ok_or(DecodeError::Field("frame"))?;
        self.buf = rest;
        Ok(kind)
    }

    fn multicast(&mut self, kind: u8) -> Result<(u64, Multicast<'a>), DecodeError> {
        let mseq = self.next_number("mseq")?;
        let room = self.prefixed("room", MAX_ROOM)?;
        let counter = self.next_number("counter")?;
        let m = match kind {
            b'M' => {
                let more = match self.next_number("more")? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Field("more")),
                };
                let user = self.prefixed("user", MAX_USER)?;
                let text = self.prefixed("text", MAX_DATAGRAM)?;
                Multicast::Msg {
                    room,
                    counter,
                    more,
                    user,
                    text,
                }
            }
            b'G' => {
                let priority = self.next_number("priority")?;
                let proposer = self.server("proposer")?;
                Multicast::Agreed {
                    room,
                    counter,
                    priority,
                    proposer,
                }
            }
            _ => return Err(DecodeError::Field("frame")),
        };
        Ok((mseq, m))
    }

    fn frame(&mut self) -> Result<Frame<'a>, DecodeError> {
        match self.kind()? {
            kind @ (b'M' | b'G') => {
                let (mseq, m) = self.multicast(kind)?;
                Ok(Frame::Multicast { mseq, m })
            }
            b'P' => Ok(Frame::Propose {
                room: self.prefixed("room", MAX_ROOM)?,
                counter: self.next_number("counter")?,
                priority: self.next_number("priority")?,
            }),
            b'H' => {
                let first = self.next_number("first")?;
                let count = self.next_number("count")?;
                if first + count > MAX_SERVERS as u64 {
                    return Err(DecodeError::Field("count"));
                }
                let mut positions = ArrayVec::new();
                for _ in 0..count {
                    positions.push(self.next_number("position")?);
                }
                Ok(Frame::Have {
                    first: first as u16,
                    positions,
                })
            }
            b'F' => Ok(Frame::Flush {
                origin: self.server("origin")?,
                inc: self.next_number("inc")?,
            }),
            b'E' => Ok(Frame::End {
                origin: self.server("origin")?,
                inc: self.next_number("inc")?,
            }),
            b'V' => {
                let origin = self.server("origin")?;
                let inc = self.next_number("inc")?;
                self.space("relay")?;
                let kind = self.kind()?;
                let (mseq, m) = self.multicast(kind)?;
                Ok(Frame::Relay {
                    origin,
                    inc,
                    mseq,
                    m,
                })
            }
            _ => Err(DecodeError::Field("frame")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(h: &Header, frames: &[Frame<'_>], key: Option<&Key>) -> Vec<u8> {
        let mut encoded = Vec::new();
        for f in frames {
            assert!(push_frame(&mut encoded, MAX_FRAMES, f), "{f:?} fits");
        }
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode_header(&mut buf, h).unwrap();
        let n = finish(&mut buf, n, &encoded, key).unwrap();
        let wire = buf[..n].to_vec();
        let d = decode(&wire).unwrap();
        assert_eq!(d.header, *h);
        assert!(d.authentic(key));
        let back: Vec<Frame<'_>> = d.frames().map(Result::unwrap).collect();
        assert_eq!(back, frames);
        wire
    }

    const H: Header = Header {
        excluded: false,
        from: 17,
        to: 9,
        seq: 3,
        ack: 2,
    };

    fn have(first: u16, p: &[u64]) -> Frame<'static> {
        Frame::Have {
            first,
            positions: p.iter().copied().collect(),
        }
    }

    #[test]
    fn every_frame_round_trips_and_reads_as_text() {
        let msg = Multicast::Msg {
            room: b"7",
            counter: 3,
            more: false,
            user: b"127.0.0.1:5000",
            text: b"hi 1:x M 3 P <z> ",
        };
        let agreed = Multicast::Agreed {
            room: b"10",
            counter: 9,
            priority: 44,
            proposer: 9,
        };
        let wire = datagram(
            &H,
            &[
                Frame::Multicast { mseq: 5, m: msg },
                Frame::Propose {
                    room: b"10",
                    counter: 9,
                    priority: 44,
                },
                Frame::Multicast { mseq: 6, m: agreed },
                have(0, &[1, 0, 7]),
                Frame::Flush { origin: 2, inc: 77 },
                Frame::Relay {
                    origin: 2,
                    inc: 77,
                    mseq: 4,
                    m: msg,
                },
                Frame::End { origin: 2, inc: 77 },
            ],
            None,
        );
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "C 17 9 3 2 - M 5 1:7 3 0 14:127.0.0.1:5000 17:hi 1:x M 3 P <z>  P 2:10 9 44 \
             G 6 2:10 9 44 10 H 0 3 1 0 7 F 3 77 V 3 77 M 4 1:7 3 0 14:127.0.0.1:5000 \
             17:hi 1:x M 3 P <z>  E 3 77"
        );
        let bare = datagram(&Header { seq: 0, ..H }, &[], None);
        assert_eq!(bare, b"C 17 9 0 2 -");
        let excluded = Header {
            excluded: true,
            seq: 0,
            ack: 0,
            ..H
        };
        assert_eq!(datagram(&excluded, &[], None), b"X 17 9 -");
    }

    #[test]
    fn the_mac_covers_every_byte() {
        let key = Key::derive(b"secret");
        let frames = [Frame::Propose {
            room: b"1",
            counter: 1,
            priority: 2,
        }];
        let wire = datagram(&H, &frames, Some(&key));
        assert!(!decode(&wire)
            .unwrap()
            .authentic(Some(&Key::derive(b"other"))));
        assert!(!decode(&datagram(&H, &frames, None))
            .unwrap()
            .authentic(Some(&key)));
        for i in 0..wire.len() {
            let mut forged = wire.clone();
            forged[i] ^= 1;
            if let Ok(d) = decode(&forged) {
                assert!(!d.authentic(Some(&key)), "byte {i} changed unnoticed");
            }
        }
    }

    #[test]
    fn max_text_fits_at_the_widest_numbers_even_when_passed_on() {
        let user = [b'u'; MAX_USER];
        let room = [b'r'; MAX_ROOM];
        let text = vec![b't'; max_text(&room, &user)];
        let m = Multicast::Msg {
            room: &room,
            counter: u64::MAX,
            more: true,
            user: &user,
            text: &text,
        };
        let relayed = Frame::Relay {
            origin: 63,
            inc: u64::MAX,
            mseq: u64::MAX,
            m,
        };
        let mut frames = Vec::new();
        assert!(push_frame(&mut frames, MAX_FRAMES, &relayed));
        let widest = Header {
            excluded: false,
            from: u64::MAX,
            to: u64::MAX,
            seq: u64::MAX,
            ack: u64::MAX,
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = encode_header(&mut buf, &widest).unwrap();
        assert!(finish(&mut buf, n, &frames, Some(&Key::derive(b"k"))).is_ok());
        assert!(
            max_text(&room, &user) > 600,
            "a 1000-byte message takes two"
        );
    }

    #[test]
    fn a_full_datagram_refuses_the_next_frame_unchanged() {
        let mut frames = Vec::new();
        let p = Frame::Propose {
            room: b"1",
            counter: 1,
            priority: 1,
        };
        while push_frame(&mut frames, 40, &p) {}
        let before = frames.clone();
        assert!(!push_frame(&mut frames, 40, &p));
        assert_eq!(frames, before);
        assert!(frames.len() <= 40);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &b""[..],
            b"C",
            b"C 1 2 3",
            b"C 1 2 3 4 - Q",
            b"C 1 2 3 4 - M 1 2:7 3 0 1:u 5:abc",
            b"C 1 2 3 4 - H 60 9 1 1 1 1 1 1 1 1 1",
            b"C 1 2 3 4 - F 0 1",
            b"C 1 2 3 4 - F 65 1",
            b"C 1 2 3 4 - G 1 1:1 1 1 0",
            b"C 1 2 3 4 - V 1 1 P 1:1 1 1",
            b"C 99999999999999999999 2 3 4 -",
            b"Z 1 2 -",
        ] {
            let frames_ok = decode(bad).is_ok_and(|d| d.frames().all(|f| f.is_ok()));
            assert!(!frames_ok, "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(decode(&[b'C'; 1000]).is_err());
    }
}
