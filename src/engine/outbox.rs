//! What one engine step produces: datagrams to send, messages for other shards, requests for
//! the mailbox, log lines.
//!
//! Payloads are encoded once into an arena and referenced by every send that carries them, so
//! fanning one TXT_SAY out to a thousand members copies 132 bytes once, not a thousand times.
//! The vectors keep their capacity across [`Outbox::clear`], so after warm-up nothing allocates.

use super::direct::ToMailbox;
use super::{Endpoint, ShardMsg};
use std::fmt::Write as _;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadId(u32);

#[derive(Debug, Clone, Copy)]
pub struct Send {
    pub dst: SocketAddr,
    pub payload: PayloadId,
}

#[derive(Default)]
pub struct Outbox {
    arena: Vec<u8>,
    payloads: Vec<(u32, u32)>,
    sends: Vec<Send>,
    /// Sends to stream connections (`Endpoint::Stream`): connection id and payload.
    stream_sends: Vec<(u64, PayloadId)>,
    msgs: Vec<(u16, ShardMsg)>,
    /// Requests for the mailbox's thread, in order.
    mailbox: Vec<ToMailbox>,
    log: String,
}

impl Outbox {
    pub fn with_capacity(sends: usize) -> Self {
        Self {
            arena: Vec::with_capacity(sends * 64),
            payloads: Vec::with_capacity(sends),
            sends: Vec::with_capacity(sends),
            stream_sends: Vec::new(),
            msgs: Vec::with_capacity(sends),
            mailbox: Vec::new(),
            log: String::new(),
        }
    }

    /// Encodes a payload of at most `max` bytes with `encode`; `None` when the encoder fails.
    pub fn payload<E>(
        &mut self,
        max: usize,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) -> Option<PayloadId> {
        let start = self.arena.len();
        self.arena.resize(start + max, 0);
        match encode(&mut self.arena[start..]) {
            Ok(n) => {
                assert!(n <= max, "an encoder wrote past what it asked for");
                self.arena.truncate(start + n);
                self.payloads.push((start as u32, n as u32));
                Some(PayloadId(self.payloads.len() as u32 - 1))
            }
            Err(_) => {
                self.arena.truncate(start);
                None
            }
        }
    }

    pub fn send(&mut self, dst: SocketAddr, payload: PayloadId) {
        debug_assert!(
            (payload.0 as usize) < self.payloads.len(),
            "a send of no payload"
        );
        self.sends.push(Send { dst, payload });
    }

    /// Sends to a client wherever it is reached.
    pub fn send_to(&mut self, dst: Endpoint, payload: PayloadId) {
        match dst {
            Endpoint::Udp(addr) => self.send(addr, payload),
            Endpoint::Stream { conn, .. } => {
                debug_assert!(
                    (payload.0 as usize) < self.payloads.len(),
                    "a send of no payload"
                );
                self.stream_sends.push((conn, payload))
            }
        }
    }

    /// Encodes and sends to one destination.
    pub fn send_new<E>(
        &mut self,
        dst: impl Into<Endpoint>,
        max: usize,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, E>,
    ) {
        if let Some(p) = self.payload(max, encode) {
            self.send_to(dst.into(), p);
        }
    }

    /// Sends a copy of `bytes` to one destination.
    pub fn send_bytes(&mut self, dst: impl Into<Endpoint>, bytes: &[u8]) {
        self.send_new(dst, bytes.len(), |buf| {
            buf.copy_from_slice(bytes);
            Ok::<_, std::convert::Infallible>(bytes.len())
        });
    }

    pub fn bytes(&self, payload: PayloadId) -> &[u8] {
        let (start, len) = self.payloads[payload.0 as usize];
        &self.arena[start as usize..(start + len) as usize]
    }

    pub fn sends(&self) -> &[Send] {
        &self.sends
    }

    /// Sends to stream connections, in order.
    pub fn stream_sends(&self) -> &[(u64, PayloadId)] {
        &self.stream_sends
    }

    pub(super) fn queue(&mut self, shard: u16, msg: ShardMsg) {
        self.msgs.push((shard, msg));
    }

    /// Messages for other shards, in the order they were produced.
    pub fn msgs(&self) -> &[(u16, ShardMsg)] {
        &self.msgs
    }

    pub fn take_msgs(&mut self) -> std::vec::Drain<'_, (u16, ShardMsg)> {
        self.msgs.drain(..)
    }

    pub(super) fn ask_mailbox(&mut self, request: ToMailbox) {
        self.mailbox.push(request);
    }

    /// Requests for the mailbox, in the order they were produced.
    pub fn take_mailbox(&mut self) -> std::vec::Drain<'_, ToMailbox> {
        self.mailbox.drain(..)
    }

    /// Appends one log line (only called when verbose logging is on).
    pub(super) fn log(&mut self, line: std::fmt::Arguments<'_>) {
        let _ = self.log.write_fmt(line);
        self.log.push('\n');
    }

    pub fn log_text(&self) -> &str {
        &self.log
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
            && self.stream_sends.is_empty()
            && self.msgs.is_empty()
            && self.mailbox.is_empty()
            && self.log.is_empty()
    }

    pub fn clear(&mut self) {
        self.arena.clear();
        self.payloads.clear();
        self.sends.clear();
        self.stream_sends.clear();
        self.msgs.clear();
        self.mailbox.clear();
        self.log.clear();
    }
}
