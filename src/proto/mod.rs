//! Wire codecs: pure functions from `&[u8]` to borrowed views and back into `&mut [u8]`.
//!
//! Nothing here does I/O or allocates; every decoder treats its input as hostile and
//! answers bad bytes with a [`DecodeError`], never a panic.

pub mod duckchat;
mod fixed;
pub mod group;
pub mod text;

pub use fixed::{FixedStr, Name, Nick, Text};
