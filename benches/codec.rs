//! The DuckChat codec: decoding what arrives, encoding what leaves, per datagram.

use chat_router::proto::duckchat::{self, Inbound, S2sSay, SayLayout};
use chat_router::proto::{Name, Text};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn encoded(request: Inbound) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = request.encode(&mut buf, SayLayout::UserFirst).unwrap();
    buf.truncate(n);
    buf
}

fn codec(c: &mut Criterion) {
    let say = encoded(Inbound::Say {
        channel: b"Common",
        text: b"the quick brown fox jumps over the lazy dog",
    });
    let s2s = encoded(Inbound::S2sSay(S2sSay {
        id: 0x0123_4567_89ab_cdef,
        user: b"alice",
        channel: b"Common",
        text: b"the quick brown fox jumps over the lazy dog",
    }));
    let (channel, user) = (Name::truncating(b"Common"), Name::truncating(b"alice"));
    let text = Text::truncating(b"the quick brown fox jumps over the lazy dog");
    let mut out = [0u8; 256];
    let txt_len = duckchat::encode_txt_say(&mut out, &channel, &user, &text).unwrap();
    let txt_say = out[..txt_len].to_vec();

    c.bench_function("decode SAY", |b| {
        b.iter(|| duckchat::decode_inbound(black_box(&say), SayLayout::UserFirst))
    });
    c.bench_function("decode S2S_SAY", |b| {
        b.iter(|| duckchat::decode_inbound(black_box(&s2s), SayLayout::UserFirst))
    });
    c.bench_function("decode TXT_SAY", |b| {
        b.iter(|| duckchat::decode_outbound(black_box(&txt_say)))
    });
    c.bench_function("encode TXT_SAY", |b| {
        b.iter(|| duckchat::encode_txt_say(&mut out, black_box(&channel), &user, &text))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
