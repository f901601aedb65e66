//! The ordering checker of the text protocol's replicated rooms, shared by the simulation tests
//! and loadgen's `ordering` scenario: given what each client sent and what each client received,
//! in order, it counts what the public stress tester checks, and more.
//!
//! Messages are numbered per sender and written `M<seq>-S<sender>-G<room>-<padding>` (the public
//! tester's form), so any received line can be traced to its sender. Every receiver is taken to
//! be in its room for the whole run, so it must receive every message sent to the room.

use crate::proto::text::NOT_SENT;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

/// The text of message `seq` of `sender` in `room`, padded with digits to at least `len` bytes.
pub fn message(seq: u64, sender: u32, room: u32, len: usize) -> String {
    let mut text = format!("M{seq}-S{sender}-G{room}-");
    let mut digit = 0u8;
    while text.len() < len {
        let _ = write!(text, "{digit}");
        digit = (digit + 1) % 10;
    }
    text
}

/// A delivered line `<nick> M<seq>-S<sender>-G<room>-<padding>`, read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    pub sender: u32,
    pub room: u32,
    /// The message's length in bytes.
    pub len: usize,
    /// Whether the text is exactly what [`message`] writes for these numbers and length.
    pub intact: bool,
}

/// The text of a delivered chat line `<nick> text`.
pub fn delivered_text(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    Some(text.strip_prefix('<')?.split_once("> ")?.1)
}

pub fn parse_delivery(line: &[u8]) -> Option<Delivery> {
    let text = delivered_text(line)?;
    let mut fields = text.strip_prefix('M')?.splitn(4, '-');
    let seq = fields.next()?.parse().ok()?;
    let sender = fields.next()?.strip_prefix('S')?.parse().ok()?;
    let room = fields.next()?.strip_prefix('G')?.parse().ok()?;
    Some(Delivery {
        seq,
        sender,
        room,
        len: text.len(),
        intact: message(seq, sender, room, text.len()) == text,
    })
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages sent.
    pub sent: u64,
    /// Deliveries expected: each message times the members of its room (the sender included).
    pub expected: u64,
    /// Deliveries that arrived (first copies only).
    pub delivered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Second and later copies of a delivery.
    pub duplicates: u64,
    /// A message of a sender arriving after a later one of the same sender.
    pub fifo_violations: u64,
    /// Deliveries whose position in the receiver's room sequence differs from the position of
    /// the same message at the room's reference receiver (the member that received the most).
    pub total_violations: u64,
    /// Lines that are no message of this run, or of another room than the receiver's.
    pub foreign: u64,
    /// Messages that arrived cut short or altered.
    pub corrupt: u64,
    /// Messages the cluster refused (its sender was answered `-ERR Message not sent...`) and
    /// that reached no one: not expected anywhere, so not lost. A refusal matched by no
    /// undelivered message of that sender counts as foreign.
    pub refused: u64,
}

impl Report {
    /// No loss, no duplicate, nothing foreign, no FIFO violation and, where `total`, no total
    /// order violation.
    pub fn clean(&self, total: bool) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.foreign == 0
            && self.corrupt == 0
            && self.fifo_violations == 0
            && (!total || self.total_violations == 0)
    }
}

#[derive(Default)]
pub struct Checker {
    /// Each client's room.
    rooms: HashMap<u32, u32>,
    /// Messages sent per room: (sender, seq) -> length.
    sent: HashMap<u32, HashMap<(u32, u64), usize>>,
    /// What each client received, in order: (sender, seq, length).
    received: HashMap<u32, Vec<(u32, u64, usize)>>,
    /// Refusals each client was answered with.
    refusals: HashMap<u32, u64>,
    foreign: u64,
    corrupt: u64,
}

impl Checker {
    /// Client `client` is in `room` for the whole run.
    pub fn member(&mut self, client: u32, room: u32) {
        self.rooms.insert(client, room);
    }

    /// `sender` sent message `seq` of `len` bytes (see [`message`]) to its room.
    pub fn sent(&mut self, sender: u32, seq: u64, len: usize) {
        if let Some(&room) = self.rooms.get(&sender) {
            self.sent
                .entry(room)
                .or_default()
                .insert((sender, seq), len);
        }
    }

    /// The next line `receiver` got.
    pub fn received(&mut self, receiver: u32, line: &[u8]) {
        if line.starts_with(NOT_SENT.as_bytes()) {
            *self.refusals.entry(receiver).or_default() += 1;
            return;
        }
        match (parse_delivery(line), self.rooms.get(&receiver)) {
            (Some(d), Some(&mine)) if d.room == mine && d.intact => {
                self.received
                    .entry(receiver)
                    .or_default()
                    .push((d.sender, d.seq, d.len));
            }
            (Some(d), Some(&mine)) if d.room == mine => self.corrupt += 1,
            _ => self.foreign += 1,
        }
    }

    pub fn report(&self) -> Report {
        let mut r = Report {
            foreign: self.foreign,
            corrupt: self.corrupt,
            ..Report::default()
        };
        let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&client, &room) in &self.rooms {
            members.entry(room).or_default().push(client);
        }
        for clients in members.values_mut() {
            clients.sort_unstable(); // the reference receiver must not depend on hash order
        }
        for (room, clients) in &members {
            let empty = HashMap::new();
            let sent = self.sent.get(room).unwrap_or(&empty);
            r.sent += sent.len() as u64;
            // First copies, in arrival order, per member.
            let mut sequences: Vec<Vec<(u32, u64)>> = Vec::new();
            for client in clients {
                let mut seen = HashSet::new();
                let mut last: HashMap<u32, u64> = HashMap::new();
                let mut sequence = Vec::new();
                for &(sender, seq, len) in self.received.get(client).map_or(&[][..], |v| v) {
                    match sent.get(&(sender, seq)) {
                        None => {
                            r.foreign += 1;
                            continue;
                        }
                        Some(&sent_len) if sent_len != len => {
                            r.corrupt += 1;
                            continue;
                        }
                        Some(_) => {}
                    }
                    if !seen.insert((sender, seq)) {
                        r.duplicates += 1;
                        continue;
                    }
                    let newest = last.entry(sender).or_insert(0);
                    if seq < *newest {
                        r.fifo_violations += 1;
                    }
                    *newest = (*newest).max(seq);
                    sequence.push((sender, seq));
                }
                r.expected += sent.len() as u64;
                r.delivered += sequence.len() as u64;
                r.lost += (sent.len() - sequence.len()) as u64;
                sequences.push(sequence);
            }
            // A refused message reaches no member: each sender's refusals excuse as many of
            // its messages that no member received (it was expected, and counted lost, at
            // every member).
            let reached: HashSet<(u32, u64)> = sequences.iter().flatten().copied().collect();
            let mut unreached: HashMap<u32, u64> = HashMap::new();
            for &(sender, seq) in sent.keys() {
                if !reached.contains(&(sender, seq)) {
                    *unreached.entry(sender).or_default() += 1;
                }
            }
            for client in clients {
                let refusals = self.refusals.get(client).copied().unwrap_or(0);
                let excused = refusals.min(unreached.get(client).copied().unwrap_or(0));
                r.refused += excused;
                r.foreign += refusals - excused;
                let members = clients.len() as u64;
                r.expected -= excused * members;
                r.lost -= excused * members;
            }
            let Some(reference) = sequences.iter().min_by_key(|s| std::cmp::Reverse(s.len()))
            else {
                continue;
            };
            let position: HashMap<(u32, u64), usize> =
                reference.iter().enumerate().map(|(i, &m)| (m, i)).collect();
            for sequence in &sequences {
                // Positions among the messages both received, so one lost message is counted
                // as lost, not as a shift of everything after it.
                let common: Vec<usize> = sequence
                    .iter()
                    .filter_map(|m| position.get(m).copied())
                    .collect();
                let mut rank: Vec<usize> = common.clone();
                rank.sort_unstable();
                r.total_violations +=
                    common.iter().zip(&rank).filter(|(a, b)| a != b).count() as u64;
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, sender: u32, room: u32) -> Vec<u8> {
        format!("<n{sender}> {}", message(seq, sender, room, 30)).into_bytes()
    }

    #[test]
    fn messages_parse_back() {
        let text = message(12, 3, 7, 40);
        assert_eq!(text.len(), 40);
        assert!(text.starts_with("M12-S3-G7-0123"));
        let delivered = format!("<127.0.0.1:5000> {text}");
        let d = parse_delivery(delivered.as_bytes()).unwrap();
        assert_eq!(
            (d.seq, d.sender, d.room, d.len, d.intact),
            (12, 3, 7, 40, true)
        );
        let altered = delivered.replace("0123", "0124");
        assert!(!parse_delivery(altered.as_bytes()).unwrap().intact);
        assert_eq!(parse_delivery(b"<x> hello"), None);
        assert_eq!(parse_delivery(b"M1-S1-G1-"), None);
    }

    #[test]
    fn a_clean_run_is_clean() {
        let mut c = Checker::default();
        c.member(1, 5);
        c.member(2, 5);
        c.sent(1, 1, 30);
        c.sent(2, 1, 30);
        for receiver in [1, 2] {
            c.received(receiver, &line(1, 1, 5));
            c.received(receiver, &line(1, 2, 5));
        }
        let r = c.report();
        assert!(r.clean(true), "{r:?}");
        assert_eq!((r.sent, r.expected, r.delivered), (2, 4, 4));
    }

    #[test]
    fn every_fault_is_counted() {
        let mut c = Checker::default();
        for client in [1, 2, 3] {
            c.member(client, 5);
        }
        c.member(4, 6);
        for seq in 1..=3 {
            c.sent(1, seq, 30);
        }
        c.sent(2, 1, 30);
        // Client 1: everything in order. Client 2: 1.2 before 1.1 (FIFO and total order), a
        // duplicate, and a foreign line. Client 3: loses 1.3.
        for l in [line(1, 1, 5), line(2, 1, 5), line(3, 1, 5), line(1, 2, 5)] {
            c.received(1, &l);
        }
        for l in [
            line(2, 1, 5),
            line(1, 1, 5),
            line(3, 1, 5),
            line(3, 1, 5),
            line(1, 2, 5),
            b"hello".to_vec(),
            line(9, 9, 5),
            format!("<n1> {}", message(3, 1, 5, 20)).into_bytes(), // cut short
            format!("<n1> {}", message(3, 1, 5, 30))
                .replace("01", "10")
                .into_bytes(),
        ] {
            c.received(2, &l);
        }
        for l in [line(1, 1, 5), line(2, 1, 5), line(1, 2, 5)] {
            c.received(3, &l);
        }
        let r = c.report();
        assert_eq!(r.lost, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.fifo_violations, 1);
        assert_eq!(r.total_violations, 2, "1.1 and 1.2 swapped at client 2");
        assert_eq!(r.foreign, 2);
        assert_eq!(r.corrupt, 2);
        assert_eq!(r.expected, 12);
        assert!(!r.clean(false));
    }

    #[test]
    fn a_refused_message_is_not_lost_but_a_partial_delivery_is() {
        let refusal = format!("{NOT_SENT}5: a server of the cluster is behind; try again");
        let mut c = Checker::default();
        c.member(1, 5);
        c.member(2, 5);
        for seq in 1..=3 {
            c.sent(1, seq, 30);
        }
        // 1.2 was refused and reached no one; 1.3 reached only client 1, and client 1 says
        // it was refused too: that refusal excuses nothing.
        c.received(1, refusal.as_bytes());
        c.received(1, refusal.as_bytes());
        for l in [line(1, 1, 5), line(3, 1, 5)] {
            c.received(1, &l);
        }
        c.received(2, &line(1, 1, 5));
        let r = c.report();
        assert_eq!(r.refused, 1, "{r:?}");
        assert_eq!((r.expected, r.delivered, r.lost), (4, 3, 1), "{r:?}");
        assert_eq!(r.foreign, 1, "the refusal nothing matches");
        assert!(!r.clean(false));

        // Refused alone: clean.
        let mut c = Checker::default();
        c.member(1, 5);
        c.member(2, 5);
        c.sent(1, 1, 30);
        c.sent(1, 2, 30);
        c.received(1, refusal.as_bytes());
        c.received(1, &line(2, 1, 5));
        c.received(2, &line(2, 1, 5));
        let r = c.report();
        assert_eq!((r.refused, r.expected, r.lost), (1, 2, 0), "{r:?}");
        assert!(r.clean(true), "{r:?}");
    }

    #[test]
    fn total_order_alone_is_told_apart_from_fifo() {
        let mut c = Checker::default();
        c.member(1, 1);
        c.member(2, 1);
        c.sent(1, 1, 30);
        c.sent(2, 1, 30);
        for l in [line(1, 1, 1), line(1, 2, 1)] {
            c.received(1, &l);
        }
        for l in [line(1, 2, 1), line(1, 1, 1)] {
            c.received(2, &l);
        }
        let r = c.report();
        assert!(r.clean(false));
        assert!(!r.clean(true));
        assert_eq!(r.total_violations, 2);
    }
}
