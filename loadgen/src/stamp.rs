//! What each message carries in its 63-byte text: who sent it, the sender's sequence number and
//! the intended send time, so that a receiver can account for it without shared state.
//! Hex fields separated by spaces; at most 8 + 16 + 16 + 2 = 42 bytes.

use arrayvec::ArrayString;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
    /// Nanoseconds since the run's epoch at which the schedule wanted this message sent.
    pub intended_ns: u64,
}

impl Stamp {
    pub fn encode(&self) -> ArrayString<64> {
        let mut s = ArrayString::new();
        // Cannot fail: the longest rendering is 42 bytes.
        let _ = write!(s, "{:x} {:x} {:x}", self.sender, self.seq, self.intended_ns);
        s
    }

    /// `None` for text that is not a stamp (a datagram from someone else, or mangled).
    pub fn parse(text: &[u8]) -> Option<Stamp> {
        let text = std::str::from_utf8(text).ok()?;
        let mut fields = text.split(' ');
        let mut next = || fields.next().and_then(|f| u64::from_str_radix(f, 16).ok());
        let stamp = Stamp {
            sender: u32::try_from(next()?).ok()?,
            seq: next()?,
            intended_ns: next()?,
        };
        fields.next().is_none().then_some(stamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_extremes() {
        for stamp in [
            Stamp {
                sender: 0,
                seq: 0,
                intended_ns: 0,
            },
            Stamp {
                sender: u32::MAX,
                seq: u64::MAX,
                intended_ns: u64::MAX,
            },
            Stamp {
                sender: 17,
                seq: 123_456,
                intended_ns: 9_876_543_210,
            },
        ] {
            let text = stamp.encode();
            assert!(text.len() <= 63, "fits the SAY text field");
            assert_eq!(Stamp::parse(text.as_bytes()), Some(stamp));
        }
    }

    #[test]
    fn rejects_what_is_not_a_stamp() {
        for text in [
            &b""[..],
            b"hello",
            b"1 2",
            b"1 2 3 4",
            b"1 2 x",
            b"100000000 1 1",
            b"\xff 1 1",
        ] {
            assert_eq!(Stamp::parse(text), None, "{text:?}");
        }
    }
}
