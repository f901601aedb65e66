//! Fixed-capacity byte strings: the `char[]` fields of the DuckChat structs, kept inline so
//! that names and texts can be stored and queued without touching the heap.

use std::fmt;
use std::hash::{Hash, Hasher};

/// At most `CAP` bytes, stored inline. Bytes are opaque (not necessarily UTF-8), exactly as
/// they travel on the wire; equality and hashing look only at the used bytes.
#[derive(Clone, Copy)]
pub struct FixedStr<const CAP: usize> {
    len: u8,
    bytes: [u8; CAP],
}

/// A user or channel name: at most 31 bytes, so that it always fits a 32-byte field with its NUL.
pub type Name = FixedStr<31>;
/// A say-text: at most 63 bytes, so that it always fits a 64-byte field with its NUL.
pub type Text = FixedStr<63>;
/// A text-protocol nickname (see [`crate::proto::text::MAX_NICK`]).
pub type Nick = FixedStr<63>;

impl<const CAP: usize> FixedStr<CAP> {
    /// The most bytes it holds.
    pub const CAPACITY: usize = CAP;

    /// The empty string.
    pub const EMPTY: Self = Self {
        len: 0,
        bytes: [0; CAP],
    };

    /// Copies `src`, silently truncated to `CAP` bytes (as the protocol truncates on encode).
    pub fn truncating(src: &[u8]) -> Self {
        let len = src.len().min(CAP);
        let mut bytes = [0; CAP];
        bytes[..len].copy_from_slice(&src[..len]);
        Self {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<const CAP: usize> PartialEq for FixedStr<CAP> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const CAP: usize> Eq for FixedStr<CAP> {}

impl<const CAP: usize> PartialOrd for FixedStr<CAP> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const CAP: usize> Ord for FixedStr<CAP> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl<const CAP: usize> Hash for FixedStr<CAP> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state)
    }
}

impl<const CAP: usize> fmt::Display for FixedStr<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

impl<const CAP: usize> fmt::Debug for FixedStr<CAP> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

impl<const CAP: usize> From<&str> for FixedStr<CAP> {
    fn from(s: &str) -> Self {
        Self::truncating(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_to_capacity_and_compares_by_content() {
        let long = Name::truncating(&[b'x'; 40]);
        assert_eq!(long.len(), 31);
        assert_eq!(Name::from("abc"), Name::truncating(b"abc"));
        assert!(Name::from("abc") < Name::from("abd"));
        assert!(Name::EMPTY.is_empty());
    }
}
