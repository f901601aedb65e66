//! The original browser client of seed 002, unmodified: it sends the raw text typed, in one
//! global room, and receives a welcome line (written by the stream thread when it opens the
//! connection) and then `{"sender","originServerId","content","timestamp"}` for every message.
//! Here its session is named `User@/ip:port` as the original names it, begins when the
//! connection opens, and is in `Common`, with everyone else there.

use super::command::{Command, Decoded, Delivery};
use super::json;
use crate::engine::{Endpoint, COMMON};
use crate::proto::{text, Name, Nick};
use std::fmt::Write as _;

pub(super) const MAX_CHAT: usize = super::web::MAX_CHAT;

pub(super) fn decode(request: &[u8]) -> Decoded<'_> {
    let line = request.trim_ascii();
    if line.is_empty() {
        return Decoded::Nothing;
    }
    Decoded::Command(Command::Say {
        channel: Name::from(COMMON),
        text: &line[..line.len().min(text::MAX_MESSAGE)],
    })
}

pub(super) fn default_name(endpoint: Endpoint) -> Nick {
    let mut nick = arrayvec::ArrayString::<63>::new();
    let _ = write!(nick, "User@/{endpoint}");
    Nick::from(nick.as_str())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    sender: std::borrow::Cow<'a, str>,
    origin_server_id: &'a str,
    content: std::borrow::Cow<'a, str>,
    timestamp: u64,
}

pub(super) fn encode_chat(d: &Delivery<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut origin = arrayvec::ArrayString::<64>::new();
    match d.origin {
        Some(o) => write!(origin, "{o}").ok()?,
        None => write!(origin, "unknown").ok()?,
    }
    let message = Message {
        sender: json::text(d.chat.user()),
        origin_server_id: &origin,
        content: json::text(d.chat.text()),
        timestamp: d.unix_ms,
    };
    json::write(buf, &message)
}
