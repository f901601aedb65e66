//! Accounts, as the shards see them (`docs/accounts.md`). A name registered with a password is
//! its owner's alone: only a session signed in to it may go by it, on every front-end. The
//! password hashes live with the mailbox's store and are checked on its thread (argon2 takes
//! milliseconds a shard must not spend); a shard keeps a copy of which names are accounts, so
//! that a login under one is refused at once, before the session can do anything under it.
//!
//! A durable effect (an account, a stored message) needs a sender that has shown it receives:
//! a datagram's source may be forged. A UDP session shows it by sending back a code the router
//! sent its address (`/confirm CODE`): a keyed hash of the address, so the router remembers
//! nothing for addresses that never answer. A connection showed it in its handshake.

use super::direct::{Secret, ToMailbox};
pub use super::frontend::AccountOutcome;
use super::frontend::{Done, Refusal};
use super::logins::Claim;
use super::sessions::{Key, SessionId, Standing};
use super::token::{self, Token};
use super::{Endpoint, Engine, Outbox};
use crate::proto::{self, Name, Nick};
use ahash::AHashSet;
use std::sync::Arc;
use std::time::Duration;

/// An account name is 1 to this many bytes (a DuckChat user name's field).
pub const MAX_ACCOUNT_NAME: usize = Name::CAPACITY;
/// A password is this many bytes, at least and at most.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=128;

/// A name that can be an account: 1 to [`MAX_ACCOUNT_NAME`] bytes of printable UTF-8 without
/// whitespace (a `/msg` names its recipient by its first word) or `>` (text deliveries end the
/// nick with it). Such a name is a valid user name of every front-end.
pub fn is_account_name(name: &[u8]) -> bool {
    name.len() <= MAX_ACCOUNT_NAME
        && proto::is_printable_name(name)
        && std::str::from_utf8(name)
            .is_ok_and(|s| !s.chars().any(|c| c == '>' || c.is_whitespace()))
}

/// A password the accounts take: [`PASSWORD_BYTES`] bytes of UTF-8 without NUL or line breaks.
pub fn is_password(password: &[u8]) -> bool {
    PASSWORD_BYTES.contains(&password.len())
        && std::str::from_utf8(password).is_ok()
        && !password.iter().any(|&b| b == 0 || b == b'\n' || b == b'\r')
}

/// A shard's knowledge of accounts: which names are accounts (those there were at start,
/// shared by every shard, and those registered since), and the key of its confirmation codes.
pub(super) struct Accounts {
    at_start: Arc<AHashSet<Name>>,
    since: AHashSet<Name>,
    code_key: [u8; 32],
}

impl Accounts {
    pub(super) fn new(at_start: Arc<AHashSet<Name>>, code_key: [u8; 32]) -> Self {
        Self {
            at_start,
            since: AHashSet::new(),
            code_key,
        }
    }

    /// Whether `name` (as a session would go by it) is an account's.
    pub(super) fn is_account(&self, name: &[u8]) -> bool {
        let name = Name::truncating(name);
        self.at_start.contains(&name) || self.since.contains(&name)
    }

    /// The code that `endpoint` must send back to show it receives.
    pub(super) fn code(&self, endpoint: Endpoint) -> u32 {
        let peer = endpoint.peer();
        let mut bytes = [0u8; 18];
        match peer.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            std::net::IpAddr::V6(v6) => bytes[..16].copy_from_slice(&v6.octets()),
        }
        bytes[16..].copy_from_slice(&peer.port().to_be_bytes());
        let hash = blake3::keyed_hash(&self.code_key, &bytes);
        let [a, b, c, d, ..] = *hash.as_bytes();
        u32::from_be_bytes([a, b, c, d])
    }
}

/// A code as it is written: 8 hexadecimal digits.
pub fn parse_code(code: &[u8]) -> Option<u32> {
    let code = std::str::from_utf8(code).ok()?;
    (code.len() == 8)
        .then(|| u32::from_str_radix(code, 16).ok())
        .flatten()
}

impl Engine {
    /// `/confirm CODE`: the session's address receives (a session named after its address
    /// begins here if there is none).
    pub(super) fn confirm(
        &mut self,
        now: Duration,
        id: Option<SessionId>,
        key: Key,
        code: &[u8],
        out: &mut Outbox,
    ) -> Result<Done, Refusal> {
        let expected = self.accounts.code(key.0);
        if code.is_empty() {
            // Asked for: a client that confirms before it needs to (`chat --text` at start).
            return Ok(Done::Code(expected));
        }
        if parse_code(code) != Some(expected) {
            return Err(Refusal::WrongCode);
        }
        let id = match id {
            Some(id) => id,
            None => {
                let name = key.1.default_name(key.0).ok_or(Refusal::NotLoggedIn)?;
                self.open(now, key, name, out)?
            }
        };
        if let Some(session) = self.clients.sessions.get_mut(id) {
            session.confirmed = true;
        }
        self.clients.sessions.raise(id, Standing::Active);
        // A name it took before is where its mail goes from now on.
        self.announce_name(id, false, out);
        Ok(Done::Confirmed)
    }

    /// `/register` and `/login`: checked here, carried out by the accounts on the mailbox's
    /// thread, answered when they have ([`Engine::account_answer`]).
    pub(super) fn ask_account(
        &mut self,
        now: Duration,
        id: Option<SessionId>,
        key: Key,
        (name, password): (&[u8], &[u8]),
        register: bool,
        out: &mut Outbox,
    ) -> Result<Done, Refusal> {
        if !self.cfg.mailbox {
            return Err(Refusal::NoAccounts);
        }
        if !is_account_name(name) {
            return Err(Refusal::BadAccountName);
        }
        if !is_password(password) {
            return Err(Refusal::BadPassword);
        }
        let id = self.confirmed_session(now, id, key, out)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let password = Secret(String::from_utf8_lossy(password).into_owned());
        let source = key.0.ip();
        out.ask_mailbox(ToMailbox::Account {
            session: id,
            name,
            password,
            source,
            register,
        });
        Ok(Done::Nothing)
    }

    /// The session a request that signs in comes from, which must have shown it receives: a
    /// connection's (begun here if it has none), or a datagram session's that sent back its
    /// code (begun by its `/confirm`).
    fn confirmed_session(
        &mut self,
        now: Duration,
        id: Option<SessionId>,
        key: Key,
        out: &mut Outbox,
    ) -> Result<SessionId, Refusal> {
        let confirmed = id
            .and_then(|id| self.clients.sessions.get(id))
            .is_some_and(|s| s.confirmed);
        if key.0.spoofable() && !confirmed {
            return Err(Refusal::Unconfirmed(self.accounts.code(key.0)));
        }
        match id {
            Some(id) => Ok(id),
            None => {
                let name = key.1.default_name(key.0).ok_or(Refusal::NotLoggedIn)?;
                self.open(now, key, name, out)
            }
        }
    }

    /// `/login TOKEN`, or a browser's `login` with a token: signed in at once when a key this
    /// server knows signed it and it has not expired.
    pub(super) fn sign_in_with_token(
        &mut self,
        now: Duration,
        id: Option<SessionId>,
        key: Key,
        token: &[u8],
        out: &mut Outbox,
    ) -> Result<Done, Refusal> {
        if self.cfg.token_keys.is_empty() {
            return Err(Refusal::NoAccounts);
        }
        let name = token::verify(&self.cfg.token_keys, token, self.unix_secs(now))
            .map_err(|_| Refusal::BadToken)?;
        let id = self.confirmed_session(now, id, key, out)?;
        self.sign_in(id, name, out);
        let token = self.issue_token(now, &name);
        Ok(Done::SignedIn { name, token })
    }

    fn unix_secs(&self, now: Duration) -> u64 {
        (self.cfg.epoch_unix_ms + now.as_millis() as u64) / 1000
    }

    /// A token that signs `name` in again, if this server signs any.
    fn issue_token(&self, now: Duration, name: &Nick) -> Option<Token> {
        let key = self.cfg.session_key.as_ref()?;
        let name = std::str::from_utf8(name.as_bytes()).ok()?;
        token::sign(key, name, self.unix_secs(now) + token::LIFETIME_SECS)
    }

    /// The accounts' answer to session `id`'s registration or sign-in as `name`: on success the
    /// session goes by the account's name from now on, signed in.
    pub(super) fn account_answer(
        &mut self,
        now: Duration,
        id: SessionId,
        name: &str,
        outcome: AccountOutcome,
        out: &mut Outbox,
    ) {
        let Some((endpoint, protocol)) = self.clients.sessions.key(id) else {
            return; // ended meanwhile: nothing to sign in
        };
        let nick = Nick::truncating(name.as_bytes());
        let mut buf = [0u8; super::frontend::MAX_REPLY];
        let answer = match outcome {
            AccountOutcome::Registered | AccountOutcome::SignedIn => {
                self.sign_in(id, nick, out);
                let token = self.issue_token(now, &nick);
                let done = match outcome {
                    AccountOutcome::Registered => Done::Registered { name: nick, token },
                    _ => Done::SignedIn { name: nick, token },
                };
                protocol
                    .encode_done(&self.name_of(id), &done, &mut buf)
                    .map(|len| (len, false))
            }
            refused => protocol
                .encode_refusal(&self.name_of(id), &Refusal::Account(refused), &mut buf)
                .map(|len| (len, true)),
        };
        if let Some((len, error)) = answer {
            self.send_reply(now, endpoint, &buf[..len], error, out);
        }
    }

    /// Session `id` is signed in to the account `name` and goes by it.
    fn sign_in(&mut self, id: SessionId, name: Nick, out: &mut Outbox) {
        let Some((_, protocol)) = self.clients.sessions.key(id) else {
            return;
        };
        let Some(session) = self.clients.sessions.get_mut(id) else {
            return;
        };
        let old = session
            .claimed
            .then(|| Name::truncating(session.name.as_bytes()));
        session.name = name;
        session.signed_in = true;
        session.claimed = true;
        session.pending_name = None;
        debug_assert!(
            proto::is_printable_name(name.as_bytes()),
            "an account's name is printable"
        );
        let channels = session.channels.clone();
        self.clients.sessions.raise(id, Standing::SignedIn);
        debug_assert!(
            self.clients
                .sessions
                .get(id)
                .is_some_and(|s| s.signed_in && s.name == name),
            "signed in under the account's name"
        );
        for channel in channels {
            self.member_joined_at_owner(channel, id, name, protocol, out);
        }
        self.announce_name(id, false, out);
        let name = Name::truncating(name.as_bytes());
        if let Some(old) = old.filter(|old| *old != name) {
            self.release_name(id, old, out);
        }
        self.claim_name(id, name, Claim::Account, out);
    }

    /// The accounts registered `name` (for session `by`): this shard refuses it to everyone
    /// not signed in to it from now on, and as the name's owner it logs out the sessions that
    /// went by it until now (but `by`, which is signing in to it).
    pub(super) fn account_created(&mut self, name: &str, by: SessionId, out: &mut Outbox) {
        let name = Name::truncating(name.as_bytes());
        self.accounts.since.insert(name);
        debug_assert!(
            self.accounts.is_account(name.as_bytes()),
            "a new account is known at once"
        );
        if self.owner(&name) == self.shard {
            self.evict_holders(name, Some(by), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_and_passwords() {
        assert!(is_account_name(b"amy"));
        assert!(is_account_name("zoë".as_bytes()));
        assert!(is_account_name(&[b'a'; MAX_ACCOUNT_NAME]));
        for bad in [
            &b""[..],
            b"a b",
            b"a>b",
            b"a\tb",
            &[b'a'; 32],
            b"\x1b[2J",
            b"\xff",
        ] {
            assert!(!is_account_name(bad), "{bad:?}");
        }
        assert!(
            !is_account_name("a\u{00a0}b".as_bytes()),
            "a no-break space"
        );
        assert!(is_password(b"12345678"));
        assert!(is_password("pass word with spaces".as_bytes()));
        for bad in [
            &b"1234567"[..],
            &[b'x'; 129],
            b"abcd\nefgh",
            b"abcd\0efgh",
            b"\xff2345678",
        ] {
            assert!(!is_password(bad), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_per_address_and_keyed() {
        let a = Accounts::new(Arc::default(), [1; 32]);
        let b = Accounts::new(Arc::default(), [2; 32]);
        let one = Endpoint::Udp("10.0.0.1:5000".parse().unwrap());
        let other_port = Endpoint::Udp("10.0.0.1:5001".parse().unwrap());
        assert_eq!(a.code(one), a.code(one));
        assert_ne!(a.code(one), a.code(other_port));
        assert_ne!(a.code(one), b.code(one), "another key, another code");
        let written = format!("{:08x}", a.code(one));
        assert_eq!(parse_code(written.as_bytes()), Some(a.code(one)));
        assert_eq!(parse_code(b"1234"), None);
        assert_eq!(parse_code(b"zzzzzzzz"), None);
    }
}
