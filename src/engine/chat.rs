//! What a user said, as it travels from the home shard to the channel's owner, between servers,
//! and on to every shard with members. DuckChat's names and texts fit inline, so that path never
//! touches the heap (`tests/allocation.rs`); a text-protocol line longer than DuckChat's fields
//! (up to 1000 bytes) is shared by reference count, so fanning it out copies it once.

use crate::proto::{Name, Text};
use std::sync::Arc;

/// What names one message on every server that delivers it, as far as the federation knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The same on every server of a DuckChat tree (the S2S_SAY id) or a cluster (origin and
    /// counter); a server alone draws one.
    pub id: u64,
    pub origin: Origin,
}

/// The server whose user said it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Here,
    /// A cluster member, by its index.
    Member(u16),
    /// A DuckChat neighbor's message: S2S_SAY does not say whose user sent it.
    Unknown,
}

#[derive(Clone, Debug)]
pub enum Chat {
    Short { user: Name, text: Text },
    Long { user_len: u8, bytes: Arc<[u8]> },
}

impl Chat {
    /// `user` is cut to [`crate::proto::group::MAX_USER`] bytes, the longest a server forwards.
    pub fn new(user: &[u8], text: &[u8]) -> Self {
        let user = &user[..user.len().min(crate::proto::group::MAX_USER)];
        if user.len() <= Name::CAPACITY && text.len() <= Text::CAPACITY {
            return Chat::Short {
                user: Name::truncating(user),
                text: Text::truncating(text),
            };
        }
        // One allocation: the iterator knows its exact length.
        let bytes: Arc<[u8]> = user.iter().chain(text).copied().collect();
        Chat::Long {
            user_len: user.len() as u8,
            bytes,
        }
    }

    pub fn user(&self) -> &[u8] {
        match self {
            Chat::Short { user, .. } => user.as_bytes(),
            Chat::Long { user_len, bytes } => &bytes[..*user_len as usize],
        }
    }

    pub fn text(&self) -> &[u8] {
        match self {
            Chat::Short { text, .. } => text.as_bytes(),
            Chat::Long { user_len, bytes } => &bytes[*user_len as usize..],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_inline_long_shared() {
        let c = Chat::new(b"amy", b"hi");
        assert!(matches!(c, Chat::Short { .. }));
        assert_eq!((c.user(), c.text()), (&b"amy"[..], &b"hi"[..]));
        let text = [b't'; 1000];
        let c = Chat::new(b"127.0.0.1:5000", &text);
        assert!(matches!(c, Chat::Long { .. }));
        assert_eq!((c.user(), c.text()), (&b"127.0.0.1:5000"[..], &text[..]));
        let c = Chat::new(&[b'u'; 100], b"x");
        assert_eq!(c.user().len(), 63);
    }
}
