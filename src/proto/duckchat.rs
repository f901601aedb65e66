//! DuckChat, to the byte (`shared/spec/duckchat.md`): packed structs, a little-endian `i32`
//! type code first, fixed `char[]` fields NUL-terminated inside the field.
//!
//! Decoders borrow from the datagram and clamp every field to its struct; a datagram longer
//! than its struct is accepted, a shorter one is an error. Encoders always write exactly the
//! struct size, NUL-padding every field.

use super::{Name, Text};
use thiserror::Error;

pub const NAME_FIELD: usize = 32;
pub const TEXT_FIELD: usize = 64;
/// A LIST/WHO answer is split so that no datagram exceeds this many bytes.
pub const SPLIT_LIMIT: usize = 1400;

pub const LOGIN: i32 = 0;
pub const LOGOUT: i32 = 1;
pub const JOIN: i32 = 2;
pub const LEAVE: i32 = 3;
pub const SAY: i32 = 4;
pub const LIST: i32 = 5;
pub const WHO: i32 = 6;
pub const KEEP_ALIVE: i32 = 7;
pub const S2S_JOIN: i32 = 8;
pub const S2S_LEAVE: i32 = 9;
pub const S2S_SAY: i32 = 10;

pub const TXT_SAY: i32 = 0;
pub const TXT_LIST: i32 = 1;
pub const TXT_WHO: i32 = 2;
pub const TXT_ERROR: i32 = 3;

/// Struct sizes in bytes.
pub const LOGIN_LEN: usize = 36;
pub const BARE_LEN: usize = 4;
pub const CHANNEL_REQ_LEN: usize = 36;
pub const SAY_LEN: usize = 100;
pub const S2S_SAY_LEN: usize = 140;
pub const TXT_SAY_LEN: usize = 132;
pub const TXT_LIST_HEAD: usize = 8;
pub const TXT_WHO_HEAD: usize = 40;
pub const TXT_ERROR_LEN: usize = 68;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes has no type code")]
    NoType(usize),
    #[error("unknown type code {0}")]
    UnknownType(i32),
    #[error("type {kind} needs {need} bytes, got {got}")]
    Short { kind: i32, need: usize, got: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("output buffer of {got} bytes is smaller than the {need} bytes needed")]
pub struct BufferTooSmall {
    pub need: usize,
    pub got: usize,
}

/// Where the S2S_SAY struct puts its two names; see the spec's "Username comes before channel".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SayLayout {
    /// The course specification: username @12, channel @44.
    #[default]
    UserFirst,
    /// Seed 000's variant: channel @12, username @44.
    ChannelFirst,
}

/// Everything a server can receive: client requests and S2S datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    Login { user: &'a [u8] },
    Logout,
    Join { channel: &'a [u8] },
    Leave { channel: &'a [u8] },
    Say { channel: &'a [u8], text: &'a [u8] },
    List,
    Who { channel: &'a [u8] },
    KeepAlive,
    S2sJoin { channel: &'a [u8] },
    S2sLeave { channel: &'a [u8] },
    S2sSay(S2sSay<'a>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2sSay<'a> {
    pub id: u64,
    pub user: &'a [u8],
    pub channel: &'a [u8],
    pub text: &'a [u8],
}

/// Everything a client can receive from its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    Say {
        channel: &'a [u8],
        user: &'a [u8],
        text: &'a [u8],
    },
    List(NameList<'a>),
    Who {
        channel: &'a [u8],
        users: NameList<'a>,
    },
    Error {
        message: &'a [u8],
    },
}

/// The `n x char[32]` tail of TXT_LIST / TXT_WHO, with `n` clamped to what the datagram holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameList<'a> {
    raw: &'a [u8],
}

impl<'a> NameList<'a> {
    pub fn len(&self) -> usize {
        self.raw.len() / NAME_FIELD
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.raw.chunks_exact(NAME_FIELD).map(field)
    }
}

/// The byte order of a peer's integers. The course's structs are little-endian; some public
/// implementations write them big-endian, and get answers in their own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Endian {
    #[default]
    Little,
    Big,
}

/// The highest type code of either direction (S2S_SAY).
const MAX_TYPE: i32 = S2S_SAY;

/// The type code of a datagram and the byte order it is written in, if it has four bytes:
/// little-endian unless only the big-endian reading is a known code. Code 0 (LOGIN, TXT_SAY)
/// reads the same both ways and is taken as little-endian.
pub fn type_code_order(buf: &[u8]) -> Option<(i32, Endian)> {
    let head: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let little = i32::from_le_bytes(head);
    let big = i32::from_be_bytes(head);
    let known = |code: i32| (0..=MAX_TYPE).contains(&code);
    Some(match (known(little), known(big)) {
        (false, true) => (big, Endian::Big),
        _ => (little, Endian::Little),
    })
}

/// The type code of a datagram, in whichever byte order it is written.
pub fn type_code(buf: &[u8]) -> Option<i32> {
    type_code_order(buf).map(|(code, _)| code)
}

/// Rewrites a datagram this module encoded (little-endian) in big-endian order: the type code,
/// and the name count of TXT_LIST and TXT_WHO, the only integers the protocol has (an
/// S2S_SAY id is an opaque 8 bytes, forwarded as it came).
pub fn to_big_endian(datagram: &mut [u8]) {
    let Some((kind, Endian::Little)) = type_code_order(datagram) else {
        return;
    };
    datagram[..4].reverse();
    // TXT_LIST and TXT_WHO share their codes with LOGOUT (4 bytes) and JOIN (36 bytes), and are
    // told from them by their length.
    let counted = match kind {
        TXT_LIST => datagram.len() >= TXT_LIST_HEAD,
        TXT_WHO => datagram.len() >= TXT_WHO_HEAD,
        _ => false,
    };
    if counted {
        datagram[4..8].reverse();
    }
}

/// The bytes of a `char[]` field up to its first NUL (the whole field when it has none).
fn field(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

fn need(buf: &[u8], kind: i32, len: usize) -> Result<(), DecodeError> {
    if buf.len() < len {
        Err(DecodeError::Short {
            kind,
            need: len,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

fn name_at(buf: &[u8], offset: usize) -> &[u8] {
    field(&buf[offset..offset + NAME_FIELD])
}

/// Decodes a datagram sent to a server. `layout` only matters for S2S_SAY.
pub fn decode_inbound(buf: &[u8], layout: SayLayout) -> Result<Inbound<'_>, DecodeError> {
    let kind = type_code(buf).ok_or(DecodeError::NoType(buf.len()))?;
    let channel_req = |buf| -> Result<&[u8], DecodeError> {
        need(buf, kind, CHANNEL_REQ_LEN)?;
        Ok(name_at(buf, 4))
    };
    Ok(match kind {
        LOGIN => Inbound::Login {
            user: channel_req(buf)?,
        },
        LOGOUT => Inbound::Logout,
        JOIN => Inbound::Join {
            channel: channel_req(buf)?,
        },
        LEAVE => Inbound::Leave {
            channel: channel_req(buf)?,
        },
        SAY => {
            need(buf, kind, SAY_LEN)?;
            Inbound::Say {
                channel: name_at(buf, 4),
                text: field(&buf[36..36 + TEXT_FIELD]),
            }
        }
        LIST => Inbound::List,
        WHO => Inbound::Who {
            channel: channel_req(buf)?,
        },
        KEEP_ALIVE => Inbound::KeepAlive,
        S2S_JOIN => Inbound::S2sJoin {
            channel: channel_req(buf)?,
        },
        S2S_LEAVE => Inbound::S2sLeave {
            channel: channel_req(buf)?,
        },
        S2S_SAY => {
            need(buf, kind, S2S_SAY_LEN)?;
            let (user_at, channel_at) = match layout {
                SayLayout::UserFirst => (12, 44),
                SayLayout::ChannelFirst => (44, 12),
            };
            let mut id = [0; 8];
            id.copy_from_slice(&buf[4..12]);
            Inbound::S2sSay(S2sSay {
                id: u64::from_le_bytes(id),
                user: name_at(buf, user_at),
                channel: name_at(buf, channel_at),
                text: field(&buf[76..76 + TEXT_FIELD]),
            })
        }
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// Decodes a datagram sent by a server to a client.
pub fn decode_outbound(buf: &[u8]) -> Result<Outbound<'_>, DecodeError> {
    let kind = type_code(buf).ok_or(DecodeError::NoType(buf.len()))?;
    Ok(match kind {
        TXT_SAY => {
            need(buf, kind, TXT_SAY_LEN)?;
            Outbound::Say {
                channel: name_at(buf, 4),
                user: name_at(buf, 36),
                text: field(&buf[68..68 + TEXT_FIELD]),
            }
        }
        TXT_LIST => {
            need(buf, kind, TXT_LIST_HEAD)?;
            Outbound::List(list(buf, TXT_LIST_HEAD))
        }
        TXT_WHO => {
            need(buf, kind, TXT_WHO_HEAD)?;
            Outbound::Who {
                channel: name_at(buf, 8),
                users: list(buf, TXT_WHO_HEAD),
            }
        }
        TXT_ERROR => {
            need(buf, kind, TXT_ERROR_LEN)?;
            Outbound::Error {
                message: field(&buf[4..4 + TEXT_FIELD]),
            }
        }
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// The names after `head`, as many as the count claims and the datagram really holds.
fn list(buf: &[u8], head: usize) -> NameList<'_> {
    let count = [buf[4], buf[5], buf[6], buf[7]];
    let claimed = match type_code_order(buf) {
        Some((_, Endian::Big)) => i32::from_be_bytes(count),
        _ => i32::from_le_bytes(count),
    };
    let claimed = claimed.max(0) as usize;
    let n = claimed.min((buf.len() - head) / NAME_FIELD);
    NameList {
        raw: &buf[head..head + n * NAME_FIELD],
    }
}

/// A bounds-checked writer for one struct: every field NUL-padded, exactly `len` bytes.
struct Writer<'a> {
    out: &'a mut [u8],
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8], len: usize, kind: i32) -> Result<Self, BufferTooSmall> {
        if out.len() < len {
            return Err(BufferTooSmall {
                need: len,
                got: out.len(),
            });
        }
        let out = &mut out[..len];
        out.fill(0);
        out[..4].copy_from_slice(&kind.to_le_bytes());
        Ok(Self { out })
    }

    /// Writes at most `width - 1` bytes so that the field always keeps its NUL.
    fn str(&mut self, offset: usize, width: usize, s: &[u8]) -> &mut Self {
        let n = s.len().min(width - 1);
        self.out[offset..offset + n].copy_from_slice(&s[..n]);
        self
    }

    fn done(&self) -> usize {
        self.out.len()
    }
}

impl Inbound<'_> {
    /// Encodes this request or S2S datagram; returns the number of bytes written.
    pub fn encode(&self, out: &mut [u8], layout: SayLayout) -> Result<usize, BufferTooSmall> {
        let channel = |out, kind, channel| {
            Writer::new(out, CHANNEL_REQ_LEN, kind)
                .map(|mut w| w.str(4, NAME_FIELD, channel).done())
        };
        match *self {
            Inbound::Login { user } => channel(out, LOGIN, user),
            Inbound::Logout => Writer::new(out, BARE_LEN, LOGOUT).map(|w| w.done()),
            Inbound::Join { channel: c } => channel(out, JOIN, c),
            Inbound::Leave { channel: c } => channel(out, LEAVE, c),
            Inbound::Say { channel, text } => Writer::new(out, SAY_LEN, SAY).map(|mut w| {
                w.str(4, NAME_FIELD, channel)
                    .str(36, TEXT_FIELD, text)
                    .done()
            }),
            Inbound::List => Writer::new(out, BARE_LEN, LIST).map(|w| w.done()),
            Inbound::Who { channel: c } => channel(out, WHO, c),
            Inbound::KeepAlive => Writer::new(out, BARE_LEN, KEEP_ALIVE).map(|w| w.done()),
            Inbound::S2sJoin { channel: c } => channel(out, S2S_JOIN, c),
            Inbound::S2sLeave { channel: c } => channel(out, S2S_LEAVE, c),
            Inbound::S2sSay(say) => say.encode(out, layout),
        }
    }
}

impl S2sSay<'_> {
    pub fn encode(&self, out: &mut [u8], layout: SayLayout) -> Result<usize, BufferTooSmall> {
        let (user_at, channel_at) = match layout {
            SayLayout::UserFirst => (12, 44),
            SayLayout::ChannelFirst => (44, 12),
        };
        let mut w = Writer::new(out, S2S_SAY_LEN, S2S_SAY)?;
        w.out[4..12].copy_from_slice(&self.id.to_le_bytes());
        Ok(w.str(user_at, NAME_FIELD, self.user)
            .str(channel_at, NAME_FIELD, self.channel)
            .str(76, TEXT_FIELD, self.text)
            .done())
    }
}

/// TXT_SAY: `[channel][user]: text` at the client.
pub fn encode_txt_say(
    out: &mut [u8],
    channel: &Name,
    user: &Name,
    text: &Text,
) -> Result<usize, BufferTooSmall> {
    Ok(Writer::new(out, TXT_SAY_LEN, TXT_SAY)?
        .str(4, NAME_FIELD, channel.as_bytes())
        .str(36, NAME_FIELD, user.as_bytes())
        .str(68, TEXT_FIELD, text.as_bytes())
        .done())
}

/// TXT_ERROR with `message` truncated to 63 bytes.
pub fn encode_txt_error(out: &mut [u8], message: &[u8]) -> Result<usize, BufferTooSmall> {
    Ok(Writer::new(out, TXT_ERROR_LEN, TXT_ERROR)?
        .str(4, TEXT_FIELD, message)
        .done())
}

/// How many names one TXT_LIST / TXT_WHO datagram carries so that it stays within `limit`
/// bytes (at least one, so that a split always makes progress).
pub fn names_per_datagram(head: usize, limit: usize) -> usize {
    (limit.saturating_sub(head) / NAME_FIELD).max(1)
}

/// TXT_LIST carrying `channels` (the caller splits with [`names_per_datagram`]).
pub fn encode_txt_list<'n>(
    out: &mut [u8],
    channels: impl ExactSizeIterator<Item = &'n Name>,
) -> Result<usize, BufferTooSmall> {
    let n = channels.len();
    let mut w = Writer::new(out, TXT_LIST_HEAD + n * NAME_FIELD, TXT_LIST)?;
    w.out[4..8].copy_from_slice(&(n as i32).to_le_bytes());
    for (i, c) in channels.enumerate() {
        w.str(TXT_LIST_HEAD + i * NAME_FIELD, NAME_FIELD, c.as_bytes());
    }
    Ok(w.done())
}

/// TXT_WHO for `channel` carrying `users` (the caller splits with [`names_per_datagram`]).
pub fn encode_txt_who<'n>(
    out: &mut [u8],
    channel: &Name,
    users: impl ExactSizeIterator<Item = &'n Name>,
) -> Result<usize, BufferTooSmall> {
    let n = users.len();
    let mut w = Writer::new(out, TXT_WHO_HEAD + n * NAME_FIELD, TXT_WHO)?;
    w.out[4..8].copy_from_slice(&(n as i32).to_le_bytes());
    w.str(8, NAME_FIELD, channel.as_bytes());
    for (i, u) in users.enumerate() {
        w.str(TXT_WHO_HEAD + i * NAME_FIELD, NAME_FIELD, u.as_bytes());
    }
    Ok(w.done())
}

#[cfg(test)]
#[path = "duckchat_tests.rs"]
mod tests;
