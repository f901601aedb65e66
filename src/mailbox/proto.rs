//! The mailbox's TCP protocol (`docs/mailbox.md`), as the original server and its Python client
//! speak it: one request per connection, fields of UTF-8 text each ended by a NUL (or, as the
//! original accepts, a newline), a one-byte reply, and pushes on a new connection to the
//! client's listen port. Pure functions: a request is complete, incomplete (read more), or bad.

pub use crate::engine::direct::{MAX_TEXT, MAX_USER};
/// The longest field read: a longer name or text is cut to its limit, as the original server
/// cuts it (its Python client lets a text of 256 characters through, and hangs on a connection
/// closed unanswered); a field longer than this closes the connection.
pub const MAX_FIELD: usize = 1024;
/// The longest whole request: `SEND`, two names, a text and their terminators.
pub const MAX_REQUEST: usize = 16 + 3 * (MAX_FIELD + 1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register {
        user: String,
    },
    Unregister {
        user: String,
    },
    Connect {
        user: String,
        port: u16,
    },
    Disconnect {
        user: String,
    },
    Send {
        from: String,
        to: String,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed (a request cut short is never acted on).
    Incomplete,
    /// Not a request: the connection is closed without a reply.
    Bad(&'static str),
}

/// Reads one request from the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Request, Parse> {
    let mut fields = Fields { rest: bytes };
    let command = fields.next(16, 16)?;
    let request = match command {
        "REGISTER" => Request::Register {
            user: fields.user()?,
        },
        "UNREGISTER" => Request::Unregister {
            user: fields.user()?,
        },
        "DISCONNECT" => Request::Disconnect {
            user: fields.user()?,
        },
        "CONNECT" => {
            let user = fields.user()?;
            let port = fields.next(5, 5)?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or(Parse::Bad("a listen port is 1 to 65535"))?;
            Request::Connect { user, port }
        }
        "SEND" => Request::Send {
            from: fields.user()?,
            to: fields.user()?,
            text: fields.next(MAX_TEXT, MAX_FIELD)?.to_string(),
        },
        _ => return Err(Parse::Bad("unknown request")),
    };
    Ok(request)
}

struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The next field, cut to at most `max` bytes (at a character boundary); one longer than
    /// `cap` is refused.
    fn next(&mut self, max: usize, cap: usize) -> Result<&'a str, Parse> {
        let Some(end) = self.rest.iter().position(|&b| b == 0 || b == b'\n') else {
            return match self.rest.len() > cap {
                true => Err(Parse::Bad("a field is too long")),
                false => Err(Parse::Incomplete),
            };
        };
        if end > cap {
            return Err(Parse::Bad("a field is too long"));
        }
        let field = std::str::from_utf8(&self.rest[..end]).map_err(|_| Parse::Bad("not UTF-8"))?;
        self.rest = &self.rest[end + 1..];
        let cut = (0..=max.min(field.len()))
            .rev()
            .find(|&i| field.is_char_boundary(i))
            .unwrap_or(0);
        Ok(&field[..cut])
    }

    fn user(&mut self) -> Result<String, Parse> {
        let user = self.next(MAX_USER, MAX_FIELD)?;
        if !crate::proto::is_printable_name(user.as_bytes()) {
            return Err(Parse::Bad("a user name is printable UTF-8"));
        }
        Ok(user.to_string())
    }
}

/// Reply codes, one raw byte each (see the table in `docs/mailbox.md`).
pub mod reply {
    pub const OK: u8 = 0;
    /// REGISTER: already registered; UNREGISTER, CONNECT, DISCONNECT, SEND: not registered.
    pub const ONE: u8 = 1;
    /// CONNECT: already connected; DISCONNECT: not connected; SEND: could not store; else failure.
    pub const TWO: u8 = 2;
    pub const FAILURE: u8 = 3;
}

/// The push of a message to its recipient: `SEND_MESSAGE\0sender\0id\0text\0`.
pub fn message_push(sender: &str, id: u32, text: &str) -> Vec<u8> {
    let mut push = Vec::with_capacity(32 + sender.len() + text.len());
    for field in [b"SEND_MESSAGE".as_slice(), sender.as_bytes()] {
        push.extend_from_slice(field);
        push.push(0);
    }
    push.extend_from_slice(id.to_string().as_bytes());
    push.push(0);
    push.extend_from_slice(text.as_bytes());
    push.push(0);
    push
}

/// The acknowledgement to a sender: `SEND_MESS_ACK\0id\0`.
pub fn ack_push(id: u32) -> Vec<u8> {
    let mut push = b"SEND_MESS_ACK\0".to_vec();
    push.extend_from_slice(id.to_string().as_bytes());
    push.push(0);
    push
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_byte_for_byte() {
        assert_eq!(
            parse(b"REGISTER\0amy\0"),
            Ok(Request::Register { user: "amy".into() })
        );
        assert_eq!(
            parse(b"CONNECT\0amy\x0012345\0"),
            Ok(Request::Connect {
                user: "amy".into(),
                port: 12345
            })
        );
        assert_eq!(
            parse(b"SEND\0amy\0bob\0hello there\0"),
            Ok(Request::Send {
                from: "amy".into(),
                to: "bob".into(),
                text: "hello there".into()
            })
        );
        // The original also ends a field at a newline.
        assert_eq!(
            parse(b"DISCONNECT\namy\n"),
            Ok(Request::Disconnect { user: "amy".into() })
        );
    }

    #[test]
    fn short_requests_are_incomplete_never_acted_on() {
        let whole = b"SEND\0amy\0bob\0hi\0";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Err(Parse::Incomplete), "{cut}");
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(matches!(parse(b"FLY\0"), Err(Parse::Bad(_))));
        assert!(matches!(parse(b"CONNECT\0amy\0port\0"), Err(Parse::Bad(_))));
        assert!(matches!(parse(b"CONNECT\0amy\x000\0"), Err(Parse::Bad(_))));
        let mut req = b"REGISTER\0".to_vec();
        req.extend_from_slice(&[b'a'; MAX_FIELD + 1]);
        assert!(
            matches!(parse(&req), Err(Parse::Bad(_))),
            "too long, even unfinished"
        );
        assert!(matches!(parse(b"REGISTER\0\xff\0"), Err(Parse::Bad(_))));
        assert!(matches!(parse(b"REGISTER\0a\x01b\0"), Err(Parse::Bad(_))));
        assert!(
            matches!(parse(b"REGISTER\0\0"), Err(Parse::Bad(_))),
            "empty"
        );
    }

    #[test]
    fn long_fields_are_cut_as_the_original_cuts_them() {
        let mut req = b"SEND\0".to_vec();
        req.extend_from_slice(&[b'a'; 60]);
        req.push(0);
        req.extend_from_slice(b"bob\0");
        // 254 bytes, then a two-byte character that does not fit whole.
        req.extend_from_slice(&[b't'; 254]);
        req.extend_from_slice("éé".as_bytes());
        req.push(0);
        assert_eq!(
            parse(&req),
            Ok(Request::Send {
                from: "a".repeat(MAX_USER),
                to: "bob".into(),
                text: "t".repeat(254),
            })
        );
    }

    #[test]
    fn pushes() {
        assert_eq!(
            message_push("amy", 7, "hi"),
            b"SEND_MESSAGE\0amy\x007\0hi\0"
        );
        assert_eq!(ack_push(7), b"SEND_MESS_ACK\x007\0");
    }
}
