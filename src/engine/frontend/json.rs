//! Events as JSON through serde_json, written into a fixed buffer without allocating: names
//! and texts are read as UTF-8 (invalid sequences become U+FFFD, borrowed when there are none).
//! serde_json's writer is faster than the hand-written one this replaced (measured side by side
//! with `benches/web_json.rs`: 1.6 to 2x on a long text with escapes, no slower on a short one).

use serde::Serialize;
use std::borrow::Cow;

/// `event` as JSON in `buf`: its length, or `None` when it does not fit.
pub(super) fn write(buf: &mut [u8], event: &impl Serialize) -> Option<usize> {
    let mut cursor = std::io::Cursor::new(buf);
    serde_json::to_writer(&mut cursor, event).ok()?;
    Some(cursor.position() as usize)
}

/// Bytes as a JSON string: UTF-8, lossy.
pub(super) fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_valid() {
        let mut buf = [0u8; 128];
        let n = write(&mut buf, &text(b"a\"b\\c\nd\x01e\xffz \xf0\x9f\xa6\x86")).unwrap();
        let json = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(json, "\"a\\\"b\\\\c\\nd\\u0001e\u{FFFD}z \u{1F986}\"");
        let back: String = serde_json::from_str(json).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}e\u{FFFD}z \u{1F986}");
    }

    #[test]
    fn too_long_does_not_fit() {
        let mut buf = [0u8; 4];
        assert_eq!(write(&mut buf, &"hello"), None);
    }
}
