//! What the engine benches share: requests as bytes, and many clients' addresses.

use chat_router::proto::duckchat::{Inbound, SayLayout};
use std::net::SocketAddr;

pub fn encoded(request: Inbound) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = request.encode(&mut buf, SayLayout::UserFirst).unwrap();
    buf.truncate(n);
    buf
}

/// Client `i`: 256 clients per address, well within the default sessions per address.
pub fn client(i: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, (i >> 16) as u8 + 1, (i >> 8) as u8], i as u16))
}
