//! Writing JSON into a fixed buffer without allocating: the web front-ends' events are small
//! objects of strings and numbers.

use std::io::Write;

/// A cursor over the output buffer; every write reports whether it fitted.
pub(super) struct Json<'b> {
    out: &'b mut [u8],
    at: usize,
}

pub(super) type Fits = Option<()>;

impl<'b> Json<'b> {
    pub(super) fn new(out: &'b mut [u8]) -> Self {
        Self { out, at: 0 }
    }

    pub(super) fn raw(&mut self, bytes: &[u8]) -> Fits {
        let end = self.at.checked_add(bytes.len())?;
        self.out.get_mut(self.at..end)?.copy_from_slice(bytes);
        self.at = end;
        Some(())
    }

    /// A JSON string of `bytes`, read as UTF-8 (invalid sequences become U+FFFD).
    pub(super) fn string(&mut self, bytes: &[u8]) -> Fits {
        self.raw(b"\"")?;
        for chunk in bytes.utf8_chunks() {
            self.escaped(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                self.raw("\u{FFFD}".as_bytes())?;
            }
        }
        self.raw(b"\"")
    }

    fn escaped(&mut self, s: &str) -> Fits {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f | 0x7f => b"",
                _ => continue,
            };
            self.raw(&s.as_bytes()[start..i])?;
            if escape.is_empty() {
                self.number_escape(b)?;
            } else {
                self.raw(escape)?;
            }
            start = i + 1;
        }
        self.raw(&s.as_bytes()[start..])
    }

    fn number_escape(&mut self, b: u8) -> Fits {
        let mut buf = [0u8; 6];
        write!(&mut buf[..], "\\u{b:04x}").ok()?;
        self.raw(&buf)
    }

    /// `"key":` then a string.
    pub(super) fn field(&mut self, key: &str, value: &[u8]) -> Fits {
        self.key(key)?;
        self.string(value)
    }

    pub(super) fn key(&mut self, key: &str) -> Fits {
        self.string(key.as_bytes())?;
        self.raw(b":")
    }

    pub(super) fn number(&mut self, n: u64) -> Fits {
        let mut buf = [0u8; 20];
        let mut w = &mut buf[..];
        write!(w, "{n}").ok()?;
        let len = 20 - w.len();
        self.raw(&buf[..len])
    }

    /// A JSON array of strings.
    pub(super) fn strings<'n>(&mut self, items: impl Iterator<Item = &'n [u8]>) -> Fits {
        self.raw(b"[")?;
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.raw(b",")?;
            }
            self.string(item)?;
        }
        self.raw(b"]")
    }

    pub(super) fn len(&self) -> usize {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_valid() {
        let mut buf = [0u8; 128];
        let mut j = Json::new(&mut buf);
        j.string(b"a\"b\\c\nd\x01e\xffz \xf0\x9f\xa6\x86").unwrap();
        let n = j.len();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(text, "\"a\\\"b\\\\c\\nd\\u0001e\u{FFFD}z \u{1F986}\"");
        let back: String = serde_json::from_str(text).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}e\u{FFFD}z \u{1F986}");
    }

    #[test]
    fn too_long_does_not_fit() {
        let mut buf = [0u8; 4];
        let mut j = Json::new(&mut buf);
        assert_eq!(j.string(b"hello"), None);
    }
}
