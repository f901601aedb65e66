//! Wire codecs: pure functions from `&[u8]` to borrowed views and back into `&mut [u8]`.
//!
//! Nothing here does I/O or allocates; every decoder treats its input as hostile and
//! answers bad bytes with a [`DecodeError`], never a panic.

pub mod duckchat;
mod fixed;
pub mod group;
pub mod irc;
pub mod text;

pub use fixed::{FixedStr, Name, Nick, Text};

/// A name (nick, user or channel) a person can read: non-empty, valid UTF-8, and free of control
/// characters (C0, DEL, C1), which would let one user write line breaks or terminal escape
/// sequences into other users' screens. Every front-end's names obey it.
pub fn is_printable_name(name: &[u8]) -> bool {
    !name.is_empty() && std::str::from_utf8(name).is_ok_and(|s| !s.chars().any(char::is_control))
}
