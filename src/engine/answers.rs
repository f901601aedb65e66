//! LIST and WHO answers, sent by the session's home shard (the owner of a channel only works
//! out WHO's names and sends them home), one datagram at a time while the destination's reply
//! budget allows. What does not fit waits in a bounded queue and goes on as the budget returns,
//! so a long answer is paced rather than sent in one burst or cut; a session has at most one
//! LIST and one WHO answer waiting (asking again meanwhile adds nothing).

use super::frontend::Answer;
use super::frontend::Person;
use super::sessions::SessionId;
use super::{DropReason, Engine, Outbox};
use crate::proto::Name;
use arrayvec::ArrayVec;
use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

/// At most this many answers wait per shard; more are cut and counted (`answer_cut`).
pub(super) const MAX_WAITING: usize = 4096;
/// At most this many bytes of WHO names wait per shard.
const MAX_WAITING_NAMES: usize = 4 << 20;

/// The rest of an answer.
pub(super) enum Rest {
    /// The channels after this one (an empty name: from the first).
    List { after: Name },
    /// `names[next..]` of the channel's members.
    Who {
        channel: Name,
        brief: bool,
        names: Arc<[Person]>,
        next: usize,
    },
}

impl Rest {
    fn name_bytes(&self) -> usize {
        match self {
            Rest::List { .. } => 0,
            Rest::Who { names, next, .. } => std::mem::size_of_val(&names[*next..]),
        }
    }
}

#[derive(Default)]
pub(super) struct Waiting {
    answers: VecDeque<(SessionId, Rest)>,
    name_bytes: usize,
}

impl Waiting {
    pub(super) fn len(&self) -> usize {
        self.answers.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// False (nothing kept) when the queue is full.
    fn push(&mut self, client: SessionId, rest: Rest) -> bool {
        let bytes = rest.name_bytes();
        if self.answers.len() >= MAX_WAITING || self.name_bytes + bytes > MAX_WAITING_NAMES {
            return false;
        }
        self.name_bytes += bytes;
        self.answers.push_back((client, rest));
        debug_assert!(self.answers.len() <= MAX_WAITING && self.name_bytes <= MAX_WAITING_NAMES);
        true
    }

    fn pop(&mut self) -> Option<(SessionId, Rest)> {
        let (client, rest) = self.answers.pop_front()?;
        debug_assert!(
            self.name_bytes >= rest.name_bytes(),
            "names counted in bytes"
        );
        self.name_bytes -= rest.name_bytes();
        debug_assert!(
            !self.answers.is_empty() || self.name_bytes == 0,
            "bytes of no answer"
        );
        Some((client, rest))
    }
}

impl Engine {
    /// Answers LIST with the channels after `after` (all of them when `None`).
    pub(super) fn answer_list(
        &mut self,
        now: Duration,
        id: SessionId,
        after: Option<Name>,
        out: &mut Outbox,
    ) {
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            return;
        };
        let me = self.name_of(id);
        let per = protocol.names_per_answer(true).clamp(1, 64);
        debug_assert!(per >= 1);
        let mut last = after;
        loop {
            let from = last.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
            let chunk: ArrayVec<Name, 64> = self
                .clients
                .directory
                .range((from, Bound::Unbounded))
                .take(per)
                .copied()
                .collect();
            if chunk.is_empty() && last.is_some() {
                return; // the previous datagram held the last channels
            }
            let answer = Answer::List {
                names: &chunk,
                last: chunk.len() < per,
            };
            let Some(bytes) = protocol.answer_len(&answer) else {
                return;
            };
            if endpoint.spoofable() && !self.clients.replies.allow(now, endpoint.ip(), bytes) {
                // An empty name sorts before every channel (names are never empty).
                let after = last.unwrap_or(Name::EMPTY);
                return self.wait(id, Rest::List { after });
            }
            out.send_new(endpoint, bytes, |buf| {
                protocol.encode_answer(&me, &answer, buf).ok_or(())
            });
            if chunk.len() < per {
                return;
            }
            last = chunk.last().copied();
        }
    }

    /// Answers WHO with `names[next..]` (the channel's members, sorted by the owner); an empty
    /// channel's answer is one empty datagram.
    pub(super) fn answer_who(
        &mut self,
        now: Duration,
        id: SessionId,
        (channel, brief): (Name, bool),
        names: Arc<[Person]>,
        mut next: usize,
        out: &mut Outbox,
    ) {
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            return;
        };
        let me = self.name_of(id);
        let per = protocol.names_per_answer(false).max(1);
        debug_assert!(next <= names.len(), "an answer goes on past its names");
        loop {
            let chunk = &names[next..(next + per).min(names.len())];
            let answer = Answer::Who {
                channel: &channel,
                names: chunk,
                last: next + chunk.len() >= names.len(),
                brief,
            };
            let Some(bytes) = protocol.answer_len(&answer) else {
                return;
            };
            if endpoint.spoofable() && !self.clients.replies.allow(now, endpoint.ip(), bytes) {
                let rest = Rest::Who {
                    channel,
                    brief,
                    names,
                    next,
                };
                return self.wait(id, rest);
            }
            out.send_new(endpoint, bytes, |buf| {
                protocol.encode_answer(&me, &answer, buf).ok_or(())
            });
            next += chunk.len();
            if next >= names.len() {
                return;
            }
        }
    }

    fn wait(&mut self, id: SessionId, rest: Rest) {
        let is_list = matches!(rest, Rest::List { .. });
        let Some(session) = self.clients.sessions.get_mut(id) else {
            return;
        };
        if !self.clients.waiting.push(id, rest) {
            return self.counters.dropped(DropReason::AnswerCut);
        }
        if is_list {
            session.list_waiting = true;
        } else {
            session.who_waiting = true;
        }
    }

    /// Goes on with the answers waiting for budget, for sessions still there.
    pub(super) fn pace_answers(&mut self, now: Duration, out: &mut Outbox) {
        for _ in 0..self.clients.waiting.len() {
            let Some((id, rest)) = self.clients.waiting.pop() else {
                break;
            };
            let Some(session) = self.clients.sessions.get_mut(id) else {
                continue;
            };
            // Set again if it has to wait once more.
            match rest {
                Rest::List { after } => {
                    session.list_waiting = false;
                    let after = (!after.is_empty()).then_some(after);
                    self.answer_list(now, id, after, out);
                }
                Rest::Who {
                    channel,
                    brief,
                    names,
                    next,
                } => {
                    session.who_waiting = false;
                    self.answer_who(now, id, (channel, brief), names, next, out);
                }
            }
        }
    }
}
