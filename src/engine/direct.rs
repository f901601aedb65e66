//! Direct messages, as the shards see them: a session asks the mailbox to carry a message, and
//! tells it which name it goes by, through the runtime's queues ([`ToMailbox`]); the mailbox
//! answers, pushes direct messages and reports deliveries back to the session's home shard
//! ([`FromMailbox`]). The store and its disk stay on the mailbox's thread: a shard only queues.

pub use super::frontend::DirectOutcome;
use super::frontend::{self, AccountOutcome, DirectEvent, Refusal};
use super::{Engine, Outbox, SessionId};
use std::net::IpAddr;
use std::time::Duration;

/// A mailbox user name is 1 to this many bytes (the original service's limit).
pub const MAX_USER: usize = 49;
/// A direct message is 1 to this many bytes of UTF-8.
pub const MAX_TEXT: usize = 255;

/// A password on its way to the accounts: never written to a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a shard asks of the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToMailbox {
    /// The session's user (named `from`) sends `text` to the user named `to`.
    Send {
        session: SessionId,
        from: String,
        to: String,
        text: String,
        /// The session's address, for the store's quotas per source network.
        source: IpAddr,
        /// The session has shown it receives, so the message may be stored (see
        /// [`super::accounts`]); otherwise it can only be handed to a recipient online now.
        may_store: bool,
    },
    /// The session goes by `name` from now on, or (`None`) no longer takes direct messages:
    /// it ended or took a name the mailbox cannot know.
    Named {
        session: SessionId,
        name: Option<String>,
        /// The session is signed in to the account `name`.
        signed_in: bool,
    },
    /// Sign the session in to the account `name`, creating it first when `register`.
    Account {
        session: SessionId,
        name: String,
        password: Secret,
        source: IpAddr,
        register: bool,
    },
    /// Whether the event that carried `token` reached its session (false: it had ended).
    Handed { token: u64, delivered: bool },
}

impl ToMailbox {
    /// Membership in the mailbox's directory must not be lost; a send may be refused.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            ToMailbox::Named { .. } | ToMailbox::Handed { .. } | ToMailbox::Account { .. }
        )
    }
}

/// What the mailbox sends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromMailbox {
    /// The answer to the session's [`ToMailbox::Send`] to `to`.
    Sent {
        session: SessionId,
        to: String,
        outcome: DirectOutcome,
    },
    /// A direct message for the session's user (`id`: stored messages have one). The shard
    /// reports with [`ToMailbox::Handed`] and `token` whether the session was still there.
    Message {
        session: SessionId,
        from: String,
        id: Option<u32>,
        text: String,
        token: u64,
    },
    /// The message `id` that the session's user sent has been delivered (reported back like
    /// a message).
    Delivered {
        session: SessionId,
        id: u32,
        token: u64,
    },
    /// The answer to the session's [`ToMailbox::Account`].
    Account {
        session: SessionId,
        name: String,
        outcome: AccountOutcome,
    },
    /// To every shard: `name` is an account now (registered by session `by`).
    AccountCreated { name: String, by: SessionId },
}

impl FromMailbox {
    /// The session the event is for; `None` for one every shard gets.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            FromMailbox::Sent { session, .. }
            | FromMailbox::Message { session, .. }
            | FromMailbox::Delivered { session, .. }
            | FromMailbox::Account { session, .. } => Some(*session),
            FromMailbox::AccountCreated { .. } => None,
        }
    }

    /// The token to report back with, for events the mailbox waits on.
    fn token(&self) -> Option<u64> {
        match self {
            FromMailbox::Sent { .. }
            | FromMailbox::Account { .. }
            | FromMailbox::AccountCreated { .. } => None,
            FromMailbox::Message { token, .. } | FromMailbox::Delivered { token, .. } => {
                Some(*token)
            }
        }
    }
}

/// A name the mailbox can know: 1 to [`MAX_USER`] bytes of printable UTF-8.
pub fn is_user_name(name: &[u8]) -> bool {
    name.len() <= MAX_USER && crate::proto::is_printable_name(name)
}

/// A text the mailbox can carry: 1 to [`MAX_TEXT`] bytes of UTF-8 without NUL or newline (its
/// protocol ends a field at either).
pub fn is_direct_text(text: &[u8]) -> bool {
    (1..=MAX_TEXT).contains(&text.len())
        && !text.iter().any(|&b| b == 0 || b == b'\n')
        && std::str::from_utf8(text).is_ok()
}

impl Engine {
    /// `/msg` or `dm` from session `id`: checked here, carried by the mailbox, answered when the
    /// mailbox has done it ([`FromMailbox::Sent`]).
    pub(super) fn send_direct(
        &mut self,
        id: SessionId,
        to: &[u8],
        text: &[u8],
        out: &mut Outbox,
    ) -> Result<frontend::Done, Refusal> {
        if !self.cfg.mailbox {
            return Err(Refusal::NoMailbox);
        }
        if !is_user_name(to) {
            return Err(Refusal::NoSuchUser);
        }
        if !is_direct_text(text) {
            return Err(Refusal::BadDirectText);
        }
        let Some(session) = self.clients.sessions.get(id) else {
            return Err(Refusal::NotLoggedIn);
        };
        debug_assert_eq!(id.home, self.shard, "mail is sent from the session's home");
        debug_assert!(is_user_name(to) && is_direct_text(text));
        let source = self
            .clients
            .sessions
            .key(id)
            .map_or(IpAddr::from([0, 0, 0, 0]), |(endpoint, _)| endpoint.ip());
        out.ask_mailbox(ToMailbox::Send {
            session: id,
            from: String::from_utf8_lossy(session.name.as_bytes()).into_owned(),
            to: String::from_utf8_lossy(to).into_owned(),
            text: String::from_utf8_lossy(text).into_owned(),
            source,
            may_store: session.confirmed,
        });
        Ok(frontend::Done::Nothing)
    }

    /// Tells the mailbox the name session `id` now goes by (after a login), or that it takes
    /// no direct messages any more (`gone`: it is ending). Only sessions that picked a name
    /// and have shown they receive are known to the mailbox: one named after its address is
    /// not, and a forged `/nick bob` must not divert bob's mail to an address that never
    /// reads it (see [`super::accounts`]).
    pub(super) fn announce_name(&mut self, id: SessionId, gone: bool, out: &mut Outbox) {
        if !self.cfg.mailbox {
            return;
        }
        let Some((_, protocol)) = self.clients.sessions.key(id) else {
            return;
        };
        let Some(session) = self.clients.sessions.get_mut(id) else {
            return;
        };
        let known = !gone && protocol.takes_direct() && session.claimed && session.confirmed;
        let name = Some(session.name.as_bytes())
            .filter(|name| known && is_user_name(name))
            .map(|name| String::from_utf8_lossy(name).into_owned());
        if name.is_none() && !session.known_to_mailbox {
            return;
        }
        session.known_to_mailbox = name.is_some();
        let signed_in = session.signed_in;
        out.ask_mailbox(ToMailbox::Named {
            session: id,
            name,
            signed_in,
        });
    }

    /// What the mailbox sends one of this shard's sessions (an answer, a direct message, a
    /// delivery report), written in its protocol; nothing when the session has ended since.
    pub fn mailbox_event(&mut self, now: Duration, event: FromMailbox, out: &mut Outbox) {
        self.take_mailbox_event(now, event, out);
        // What it made this shard send itself (a name claimed, a session logged out) happens
        // now, before the next request, as after every event.
        self.drain_loopback(now, out);
    }

    fn take_mailbox_event(&mut self, now: Duration, event: FromMailbox, out: &mut Outbox) {
        let event = match event {
            FromMailbox::Account {
                session,
                name,
                outcome,
            } => return self.account_answer(now, session, &name, outcome, out),
            FromMailbox::AccountCreated { name, by } => {
                return self.account_created(&name, by, out)
            }
            event => event,
        };
        let Some(id) = event.session() else {
            return;
        };
        if let FromMailbox::Sent {
            outcome: DirectOutcome::Busy,
            ..
        } = event
        {
            self.counters.dropped(super::DropReason::MailboxBusy);
        }
        let delivered = match self.clients.sessions.key(id) {
            None => false,
            Some((endpoint, protocol)) => {
                let me = self.name_of(id);
                let unix_ms = self.cfg.epoch_unix_ms + now.as_millis() as u64;
                let shown = match &event {
                    FromMailbox::Sent { to, outcome, .. } => DirectEvent::Sent {
                        to,
                        outcome: *outcome,
                    },
                    FromMailbox::Message { from, id, text, .. } => DirectEvent::Message {
                        from,
                        id: *id,
                        text,
                        unix_ms,
                    },
                    FromMailbox::Delivered { id, .. } => DirectEvent::Delivered { id: *id },
                    FromMailbox::Account { .. } | FromMailbox::AccountCreated { .. } => {
                        unreachable!("handled above")
                    }
                };
                let mut buf = [0u8; frontend::SCRATCH];
                let encoded = match shown {
                    DirectEvent::Sent {
                        outcome: DirectOutcome::Unconfirmed,
                        ..
                    } => {
                        let refusal = Refusal::Unconfirmed(self.accounts.code(endpoint));
                        protocol.encode_refusal(&me, &refusal, &mut buf)
                    }
                    _ => protocol.encode_direct(&me, &shown, &mut buf),
                };
                if let Some(len) = encoded {
                    match shown {
                        // An answer to the session's own request, charged like every reply.
                        DirectEvent::Sent { outcome, .. } => {
                            let error = !matches!(
                                outcome,
                                DirectOutcome::Stored(_) | DirectOutcome::Delivered
                            );
                            self.send_reply(now, endpoint, &buf[..len], error, out);
                        }
                        DirectEvent::Message { .. } | DirectEvent::Delivered { .. } => {
                            self.counters.deliveries.inc();
                            out.send_bytes(endpoint, &buf[..len]);
                        }
                    }
                }
                true
            }
        };
        if let Some(token) = event.token() {
            out.ask_mailbox(ToMailbox::Handed { token, delivered });
        }
    }
}
