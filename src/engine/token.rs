//! Sign-in tokens: JSON Web Tokens signed with HMAC-SHA256 (`alg` HS256), whose `sub` names
//! the account and whose `exp` (seconds since 1970) ends them. The router signs one for a
//! browser that signed in with its password (the page keeps it, never the password), and takes
//! those signed with the operator's key (`--auth-key`), as Centrifugo takes its connection
//! tokens, so an existing site can sign its users in. Pure functions, no I/O.

use super::accounts::is_account_name;
use crate::proto::Nick;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A token as the router writes it (the name is at most 31 bytes: it fits).
pub use super::frontend::Token;
/// A token longer than this is refused unread.
pub const MAX_TOKEN: usize = 2048;
/// How long a token the router signs lasts.
pub const LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// `{"alg":"HS256","typ":"JWT"}`, encoded.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// A token for `name`, signed with `key`, ending at `exp` (seconds since 1970).
pub fn sign(key: &[u8], name: &str, exp: u64) -> Option<Token> {
    let claims = serde_json::json!({ "sub": name, "exp": exp }).to_string();
    let mut token = Token::new();
    token.try_push_str(HEADER).ok()?;
    token.try_push('.').ok()?;
    token
        .try_push_str(&URL_SAFE_NO_PAD.encode(claims.as_bytes()))
        .ok()?;
    let mut m = mac(key);
    m.update(token.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    token.try_push('.').ok()?;
    token.try_push_str(&signature).ok()?;
    Some(token)
}

/// Why a token was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not three parts of base64url, not JSON, not HS256, no name or expiry.
    Malformed,
    /// No key signed it.
    Signature,
    Expired,
}

/// The account a token signed with one of `keys` vouches for, if it has not expired by `now`
/// (seconds since 1970).
pub fn verify(keys: &[Vec<u8>], token: &[u8], now: u64) -> Result<Nick, Invalid> {
    if token.len() > MAX_TOKEN {
        return Err(Invalid::Malformed);
    }
    let token = std::str::from_utf8(token).map_err(|_| Invalid::Malformed)?;
    let mut parts = token.splitn(3, '.');
    let (Some(header), Some(claims), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| Invalid::Malformed);
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| Invalid::Malformed)?;
    // Only HS256: a token must never choose how it is checked ("none", or a public key used
    // as an HMAC key).
    if header["alg"] != "HS256" {
        return Err(Invalid::Malformed);
    }
    let signature = decode(signature)?;
    let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
    let genuine = keys.iter().any(|key| {
        let mut m = mac(key);
        m.update(signed.as_bytes());
        m.verify_slice(&signature).is_ok() // constant time
    });
    if !genuine {
        return Err(Invalid::Signature);
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(claims)?).map_err(|_| Invalid::Malformed)?;
    let exp = claims["exp"].as_u64().ok_or(Invalid::Malformed)?;
    let name = claims["sub"].as_str().ok_or(Invalid::Malformed)?;
    if !is_account_name(name.as_bytes()) {
        return Err(Invalid::Malformed);
    }
    if exp <= now {
        return Err(Invalid::Expired);
    }
    Ok(Nick::truncating(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"the operator's secret";

    #[test]
    fn a_signed_token_vouches_for_its_name_until_it_expires() {
        let token = sign(KEY, "amy", 1_000).unwrap();
        let keys = vec![b"another key".to_vec(), KEY.to_vec()];
        assert_eq!(verify(&keys, token.as_bytes(), 999), Ok(Nick::from("amy")));
        assert_eq!(
            verify(&keys, token.as_bytes(), 1_000),
            Err(Invalid::Expired)
        );
        assert_eq!(
            verify(&keys[..1], token.as_bytes(), 1),
            Err(Invalid::Signature),
            "another key"
        );
    }

    #[test]
    fn a_token_made_elsewhere_with_the_same_key_is_taken() {
        // Made with Python's own hmac, hashlib and base64 modules, as a site's backend would:
        // HS256 over {"alg":"HS256","typ":"JWT"} and {"sub":"bob","exp":4102444800}.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiJib2IiLCJleHAiOjQxMDI0NDQ4MDB9.\
                     9TfpDETOHLEKNxWtJkmfMcj5xh3qJoezFhhXFUX-aV0";
        assert_eq!(
            verify(&[KEY.to_vec()], token.as_bytes(), 0),
            Ok(Nick::from("bob"))
        );
    }

    #[test]
    fn forgeries_are_refused() {
        let keys = [KEY.to_vec()];
        let token = sign(KEY, "amy", 1_000).unwrap();
        let (head, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        // Another name under amy's signature.
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"eve","exp":1000}"#);
        let swapped = format!("{head}.{claims}.{signature}");
        assert_eq!(
            verify(&keys, swapped.as_bytes(), 1),
            Err(Invalid::Signature)
        );
        // alg "none" with no signature.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none}.{claims}.");
        assert_eq!(
            verify(&keys, unsigned.as_bytes(), 1),
            Err(Invalid::Malformed)
        );
        for garbage in [&b""[..], b"a.b", b"a.b.c", b"\xff.\xff.\xff", &[b'a'; 3000]] {
            assert!(verify(&keys, garbage, 1).is_err(), "{garbage:?}");
        }
        // A name no account can have.
        let bad = sign(KEY, "a b", 1_000).unwrap();
        assert_eq!(verify(&keys, bad.as_bytes(), 1), Err(Invalid::Malformed));
    }
}
