//! What front-ends and the core say to each other. A front-end turns a request's bytes into a
//! [`Command`] (or answers it itself when it is wrong in the protocol's own terms); the core
//! carries the command out on the session and reports [`Done`] or a [`Refusal`], which the
//! front-end writes back in its own format, as it writes deliveries and LIST and WHO answers.
//! Nothing here names a wire format.

use crate::engine::{Chat, DropReason};
use crate::proto::{Name, Nick};
use std::net::SocketAddr;

/// A sign-in token as the core hands it to a front-end ([`crate::engine::token`] signs and
/// checks them).
pub type Token = arrayvec::ArrayString<256>;

/// What became of a direct message a session sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectOutcome {
    /// Stored under this id, to be delivered when its recipient is connected (now, if it is).
    Stored(u32),
    /// The recipient is not registered but was connected: handed over, not stored.
    Delivered,
    /// Nobody goes by that name: not registered, not connected.
    NoSuchUser,
    /// A limit of the store refused it.
    Full,
    /// The mailbox's queue was full: try again.
    Busy,
    /// The store could not write it.
    Failed,
    /// The recipient is registered and not online, and the session has not shown it receives,
    /// so nothing may be stored for it.
    Unconfirmed,
}

/// What the accounts answered a session's registration or sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOutcome {
    /// The account was created (and the session is signed in to it).
    Registered,
    SignedIn,
    /// The name is registered already (an account, or an open account of the mailbox).
    Taken,
    /// No account by that name, or the wrong password: the answer does not say which.
    WrongPassword,
    /// Too many attempts for this name or from this network lately.
    TooManyAttempts,
    /// A limit of the store refused a new account.
    Full,
    /// Too many passwords are being checked now: try again.
    Busy,
    /// The store could not be read or written.
    Failed,
}

/// What a front-end may know of the session a request comes from.
#[derive(Debug, Clone, Copy)]
pub struct View<'s> {
    pub name: &'s Nick,
    pub channels: &'s [Name],
}

/// What a client asks for, in every protocol's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Begin a session named `name`, or rename the session there is.
    Login {
        name: Nick,
    },
    /// End the session.
    Quit,
    /// Join `channel`. A front-end whose sessions begin without a login
    /// ([`super::Protocol::default_name`]) begins one here.
    Join {
        channel: Name,
    },
    Leave {
        channel: Name,
    },
    Say {
        channel: Name,
        text: &'a [u8],
    },
    List,
    /// The members of `channel`; `brief`: their names only (IRC's NAMES, where WHO lists more),
    /// which the answer carries back to the front-end.
    Who {
        channel: Name,
        brief: bool,
    },
    KeepAlive,
    /// Send `text` to the user named `to` (through the mailbox, see [`crate::engine::direct`]).
    Direct {
        to: &'a [u8],
        text: &'a [u8],
    },
    /// Create the account `name` with `password`, and sign the session in to it.
    Register {
        name: &'a [u8],
        password: &'a [u8],
    },
    /// Sign the session in to the account `name` with its password.
    SignIn {
        name: &'a [u8],
        password: &'a [u8],
    },
    /// Sign the session in with a token that vouches for an account ([`crate::engine::token`]).
    SignInToken {
        token: &'a [u8],
    },
    /// The code this server sent the session's address: the address receives what is sent
    /// to it (see [`crate::engine::accounts`]).
    Confirm {
        code: &'a [u8],
    },
    /// A request the protocol does not have.
    Unknown,
}

/// A request, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Command(Command<'a>),
    /// Wrong in the protocol's own terms: the error reply, as the front-end wrote it (into the
    /// scratch buffer it was given).
    Error(&'a [u8]),
    /// A request the front-end answers itself (IRC's TOPIC, AWAY, MODE): the reply.
    Reply(&'a [u8]),
    /// Not a request at all, dropped for this reason.
    Drop(DropReason),
    /// Bytes that do not parse.
    Malformed,
    /// Nothing to do or answer (the session, if any, was active all the same).
    Nothing,
}

/// Why the core refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotLoggedIn,
    UnknownCommand,
    NoChannel(Name),
    NotInChannel(Name),
    /// The session is in as many channels as one session may be.
    TooManyChannels,
    /// The server knows as many channels as it may.
    ServerChannelLimit(Name),
    BadChannelName,
    BadUserName,
    /// The endpoint's address holds as many sessions as one address may.
    TooManySessions,
    /// A message in this channel was not sent: a server of the cluster has not acknowledged
    /// a whole window (it is down or far behind).
    Backlog(Name),
    /// This server runs no mailbox: no direct messages.
    NoMailbox,
    /// A direct message the mailbox cannot carry (empty, too long, not UTF-8, a NUL or newline).
    BadDirectText,
    /// A direct message to a name nobody can have.
    NoSuchUser,
    /// The name belongs to an account the session is not signed in to.
    NameRegistered(Nick),
    /// Another session of this server goes by the name (which is no account).
    NameTaken(Nick),
    /// The name was not taken: the session asked for another before it was answered.
    Superseded(Nick),
    /// The session is signed in to this account and goes by its name.
    SignedInAs(Nick),
    /// A request with a lasting effect (an account, a stored message) from an address that has
    /// not shown it receives: it must send this code back first (`/confirm`).
    Unconfirmed(u32),
    /// A `/confirm` with a code this server did not send to the address.
    WrongCode,
    /// An account name must be 1 to 31 bytes of printable UTF-8 without spaces or `>`.
    BadAccountName,
    /// A password must be 8 to 128 bytes of UTF-8 without NUL or line breaks.
    BadPassword,
    /// What the accounts refused.
    Account(AccountOutcome),
    /// This server keeps no accounts (it runs no mailbox).
    NoAccounts,
    /// A sign-in token that is forged, malformed or expired.
    BadToken,
}

/// A member of a channel as WHO lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Person {
    pub name: Name,
    /// Signed in to the account of this name.
    pub signed_in: bool,
}

/// What changed about a member of a channel, for protocols that show presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Joined,
    Left,
    /// The member goes by another name now (or was signed in: the same name).
    Renamed {
        from: Person,
    },
}

/// What the mailbox reports to a session, in a front-end's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectEvent<'a> {
    /// What became of the direct message the session sent to `to`.
    Sent { to: &'a str, outcome: DirectOutcome },
    /// A direct message for the session's user.
    Message {
        from: &'a str,
        id: Option<u32>,
        text: &'a str,
        /// When this server handed it over, in milliseconds since 1970.
        unix_ms: u64,
    },
    /// The message `id` that the session's user sent has been delivered.
    Delivered { id: u32 },
}

/// What a command that succeeded did, for front-ends that confirm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Nothing,
    Named(Nick),
    Joined(Name),
    Left(Name),
    Quit,
    /// The account was created and the session signed in to it; `token` signs it in again
    /// (for front-ends that keep one).
    Registered {
        name: Nick,
        token: Option<Token>,
    },
    /// The session signed in to the account.
    SignedIn {
        name: Nick,
        token: Option<Token>,
    },
    /// The session's address has shown it receives.
    Confirmed,
    /// The code that the session's address must send back (it asked for it).
    Code(u32),
}

/// A message as a front-end writes it to a member.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub channel: &'a Name,
    pub chat: &'a Chat,
    /// The same wherever the federation delivers it (see [`crate::engine::Stamp`]).
    pub id: u64,
    /// The server whose user said it, when the federation knows.
    pub origin: Option<SocketAddr>,
    /// When this server delivered it, in milliseconds since 1970.
    pub unix_ms: u64,
}

/// What front-ends need of the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// This server's address, as its log lines name it.
    pub local: SocketAddr,
    /// How its event log lines begin: `Snn` in a cluster, else the address.
    pub cluster_index: Option<u16>,
    /// Text-protocol rooms are 1 to `rooms`.
    pub rooms: u32,
}

impl Settings {
    /// The prefix of event log lines.
    pub fn prefix(&self) -> impl std::fmt::Display + '_ {
        Prefix(self)
    }
}

struct Prefix<'s>(&'s Settings);

impl std::fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.cluster_index {
            Some(i) => write!(f, "S{:02}", i + 1),
            None => self.0.local.fmt(f),
        }
    }
}
