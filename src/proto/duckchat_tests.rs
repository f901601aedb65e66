use super::*;
use crate::rng::Rng;

fn le(kind: i32) -> [u8; 4] {
    kind.to_le_bytes()
}

#[test]
fn request_layouts_have_the_spec_sizes_and_offsets() {
    let mut buf = [0xAA; 200];
    let n = Inbound::Login { user: b"alice" }
        .encode(&mut buf, SayLayout::UserFirst)
        .unwrap();
    assert_eq!(n, 36);
    assert_eq!(&buf[..4], &le(0));
    assert_eq!(&buf[4..9], b"alice");
    assert!(buf[9..36].iter().all(|&b| b == 0), "field NUL-padded");

    for (req, kind, len) in [
        (Inbound::Logout, 1, 4),
        (Inbound::List, 5, 4),
        (Inbound::KeepAlive, 7, 4),
        (Inbound::Join { channel: b"c" }, 2, 36),
        (Inbound::Leave { channel: b"c" }, 3, 36),
        (Inbound::Who { channel: b"c" }, 6, 36),
        (Inbound::S2sJoin { channel: b"c" }, 8, 36),
        (Inbound::S2sLeave { channel: b"c" }, 9, 36),
    ] {
        let n = req.encode(&mut buf, SayLayout::UserFirst).unwrap();
        assert_eq!((n, &buf[..4]), (len, &le(kind)[..]), "{req:?}");
        if len == 36 {
            assert_eq!(buf[4], b'c');
        }
    }

    let n = Inbound::Say {
        channel: b"Common",
        text: b"hi",
    }
    .encode(&mut buf, SayLayout::UserFirst)
    .unwrap();
    assert_eq!(n, 100);
    assert_eq!(&buf[4..10], b"Common");
    assert_eq!(&buf[36..38], b"hi");
    assert_eq!(buf[38], 0);
}

#[test]
fn s2s_say_layouts() {
    let say = S2sSay {
        id: 0x0102_0304_0506_0708,
        user: b"bob",
        channel: b"chan",
        text: b"text",
    };
    let mut buf = [0; 140];
    assert_eq!(say.encode(&mut buf, SayLayout::UserFirst), Ok(140));
    assert_eq!(&buf[..4], &le(10));
    assert_eq!(&buf[4..12], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&buf[12..15], b"bob");
    assert_eq!(&buf[44..48], b"chan");
    assert_eq!(&buf[76..80], b"text");
    assert_eq!(
        decode_inbound(&buf, SayLayout::UserFirst),
        Ok(Inbound::S2sSay(say))
    );

    say.encode(&mut buf, SayLayout::ChannelFirst).unwrap();
    assert_eq!(&buf[12..16], b"chan");
    assert_eq!(&buf[44..47], b"bob");
    assert_eq!(
        decode_inbound(&buf, SayLayout::ChannelFirst),
        Ok(Inbound::S2sSay(say))
    );
}

#[test]
fn text_layouts() {
    let mut buf = [0xAA; 2000];
    let n = encode_txt_say(&mut buf, &"ch".into(), &"us".into(), &"tx".into()).unwrap();
    assert_eq!(n, 132);
    assert_eq!(
        (&buf[..4], &buf[4..6], &buf[36..38], &buf[68..70]),
        (&le(0)[..], &b"ch"[..], &b"us"[..], &b"tx"[..])
    );

    let channels: Vec<Name> = vec!["a".into(), "b".into(), "c".into()];
    let n = encode_txt_list(&mut buf, channels.iter()).unwrap();
    assert_eq!(n, 8 + 3 * 32);
    assert_eq!(
        (&buf[..4], &buf[4..8]),
        (&le(1)[..], &3i32.to_le_bytes()[..])
    );
    assert_eq!((buf[8], buf[40], buf[72]), (b'a', b'b', b'c'));

    let n = encode_txt_who(&mut buf, &"room".into(), channels[..2].iter()).unwrap();
    assert_eq!(n, 40 + 2 * 32);
    assert_eq!(&buf[4..8], &2i32.to_le_bytes());
    assert_eq!(&buf[8..12], b"room");
    assert_eq!((buf[40], buf[72]), (b'a', b'b'));
    match decode_outbound(&buf[..n]).unwrap() {
        Outbound::Who { channel, users } => {
            assert_eq!(channel, b"room");
            assert_eq!(users.iter().collect::<Vec<_>>(), vec![&b"a"[..], b"b"]);
        }
        other => panic!("{other:?}"),
    }

    let n = encode_txt_error(&mut buf, &[b'e'; 100]).unwrap();
    assert_eq!(n, 68);
    assert_eq!(&buf[4..67], &[b'e'; 63][..]);
    assert_eq!(buf[67], 0, "63 bytes and a NUL");
}

#[test]
fn strings_end_at_nul_or_field_end_and_longer_datagrams_are_accepted() {
    let mut buf = [0u8; 50];
    buf[..4].copy_from_slice(&le(JOIN));
    buf[4..36].fill(b'x'); // no NUL inside the field
    buf[36..].fill(b'y');
    assert_eq!(
        decode_inbound(&buf, SayLayout::UserFirst),
        Ok(Inbound::Join {
            channel: &[b'x'; 32]
        })
    );
    buf[6] = 0;
    buf[7] = b'z'; // garbage after the NUL
    assert_eq!(
        decode_inbound(&buf, SayLayout::UserFirst),
        Ok(Inbound::Join { channel: b"xx" })
    );
}

#[test]
fn short_and_unknown_datagrams_are_errors() {
    assert_eq!(
        decode_inbound(&[1, 0], SayLayout::UserFirst),
        Err(DecodeError::NoType(2))
    );
    let mut say = [0u8; 99];
    say[..4].copy_from_slice(&le(SAY));
    assert_eq!(
        decode_inbound(&say, SayLayout::UserFirst),
        Err(DecodeError::Short {
            kind: 4,
            need: 100,
            got: 99
        })
    );
    assert_eq!(
        decode_inbound(&le(11), SayLayout::UserFirst),
        Err(DecodeError::UnknownType(11))
    );
    assert_eq!(
        decode_inbound(&le(-1), SayLayout::UserFirst),
        Err(DecodeError::UnknownType(-1))
    );
    assert_eq!(
        decode_outbound(&le(TXT_SAY)).unwrap_err(),
        DecodeError::Short {
            kind: 0,
            need: 132,
            got: 4
        }
    );
}

#[test]
fn list_count_is_clamped_to_the_datagram() {
    let mut buf = vec![0u8; 8 + 2 * 32 + 5];
    buf[..4].copy_from_slice(&le(TXT_LIST));
    buf[4..8].copy_from_slice(&1000i32.to_le_bytes());
    match decode_outbound(&buf).unwrap() {
        Outbound::List(l) => assert_eq!(l.len(), 2),
        other => panic!("{other:?}"),
    }
    buf[4..8].copy_from_slice(&(-5i32).to_le_bytes());
    match decode_outbound(&buf).unwrap() {
        Outbound::List(l) => assert!(l.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn encoding_into_a_short_buffer_is_an_error() {
    let mut small = [0u8; 10];
    assert_eq!(
        Inbound::Login { user: b"a" }.encode(&mut small, SayLayout::UserFirst),
        Err(BufferTooSmall { need: 36, got: 10 })
    );
}

#[test]
fn split_size_keeps_datagrams_under_the_limit() {
    let per = names_per_datagram(TXT_WHO_HEAD, SPLIT_LIMIT);
    assert!(TXT_WHO_HEAD + per * NAME_FIELD <= SPLIT_LIMIT);
    assert!(TXT_WHO_HEAD + (per + 1) * NAME_FIELD > SPLIT_LIMIT);
    assert_eq!(names_per_datagram(40, 10), 1);
}

fn random_bytes(rng: &mut Rng, buf: &mut Vec<u8>) {
    buf.clear();
    let len = rng.below(160) as usize;
    buf.extend((0..len).map(|_| rng.next_u64() as u8));
    if len >= 4 && rng.chance(0.7) {
        // Mostly valid type codes, so decoding gets past the first check.
        let kind = rng.below(13) as i32 - 1;
        buf[..4].copy_from_slice(&kind.to_le_bytes());
    }
}

#[test]
fn property_random_bytes_never_panic_and_decoded_fields_stay_in_bounds() {
    let mut rng = Rng::new(1);
    let mut buf = Vec::new();
    let mut decoded = 0;
    for _ in 0..200_000 {
        random_bytes(&mut rng, &mut buf);
        for layout in [SayLayout::UserFirst, SayLayout::ChannelFirst] {
            if let Ok(d) = decode_inbound(&buf, layout) {
                decoded += 1;
                if let Inbound::S2sSay(s) = d {
                    assert!(s.user.len() <= 32 && s.channel.len() <= 32 && s.text.len() <= 64);
                }
            }
        }
        if let Ok(Outbound::List(l) | Outbound::Who { users: l, .. }) = decode_outbound(&buf) {
            assert!(l.len() * NAME_FIELD <= buf.len());
        }
    }
    assert!(
        decoded > 10_000,
        "generator reaches the decoders: {decoded}"
    );
}

fn random_name(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = rng.below(max as u64 + 1) as usize;
    (0..len).map(|_| 1 + rng.below(255) as u8).collect()
}

#[test]
fn property_encode_decode_round_trips_and_mutations_never_panic() {
    let mut rng = Rng::new(2);
    let mut buf = [0u8; 256];
    for _ in 0..50_000 {
        let (a, b, t) = (
            random_name(&mut rng, 31),
            random_name(&mut rng, 31),
            random_name(&mut rng, 63),
        );
        let layout = if rng.chance(0.5) {
            SayLayout::UserFirst
        } else {
            SayLayout::ChannelFirst
        };
        let reqs = [
            Inbound::Login { user: &a },
            Inbound::Logout,
            Inbound::Join { channel: &a },
            Inbound::Leave { channel: &a },
            Inbound::Say {
                channel: &a,
                text: &t,
            },
            Inbound::List,
            Inbound::Who { channel: &b },
            Inbound::KeepAlive,
            Inbound::S2sJoin { channel: &a },
            Inbound::S2sLeave { channel: &b },
            Inbound::S2sSay(S2sSay {
                id: rng.next_u64(),
                user: &a,
                channel: &b,
                text: &t,
            }),
        ];
        let req = reqs[rng.below(reqs.len() as u64) as usize];
        let n = req.encode(&mut buf, layout).unwrap();
        assert_eq!(decode_inbound(&buf[..n], layout), Ok(req));

        // Mutate: flip bytes, truncate or extend, then decode again.
        let mut m = buf[..n].to_vec();
        for _ in 0..rng.below(4) {
            let i = rng.below(m.len() as u64) as usize;
            m[i] = rng.next_u64() as u8;
        }
        m.truncate(rng.below(n as u64 + 20) as usize);
        let _ = decode_inbound(&m, layout);
        let _ = decode_outbound(&m);
    }
}

#[test]
fn big_endian_type_codes_are_read_and_written() {
    let mut join = [0u8; CHANNEL_REQ_LEN];
    let n = Inbound::Join { channel: b"Common" }
        .encode(&mut join, SayLayout::UserFirst)
        .unwrap();
    assert_eq!(type_code_order(&join[..n]), Some((JOIN, Endian::Little)));
    to_big_endian(&mut join[..n]);
    assert_eq!(&join[..4], &[0, 0, 0, 2]);
    assert_eq!(&join[4..10], b"Common", "a JOIN's channel is not a count");
    assert_eq!(type_code_order(&join[..n]), Some((JOIN, Endian::Big)));
    assert_eq!(
        decode_inbound(&join[..n], SayLayout::UserFirst),
        Ok(Inbound::Join { channel: b"Common" })
    );
    // LOGIN is 0 either way: little-endian until something else shows.
    assert_eq!(
        type_code_order(&[0, 0, 0, 0]),
        Some((LOGIN, Endian::Little))
    );
    // A WHO answer: the count turns too, and reads back.
    let users = [Name::from("amy"), Name::from("bob")];
    let mut who = [0u8; 256];
    let n = encode_txt_who(&mut who, &Name::from("Common"), users.iter()).unwrap();
    to_big_endian(&mut who[..n]);
    assert_eq!(&who[..8], &[0, 0, 0, 2, 0, 0, 0, 2]);
    match decode_outbound(&who[..n]) {
        Ok(Outbound::Who { channel, users }) => {
            assert_eq!(channel, b"Common");
            assert_eq!(users.iter().collect::<Vec<_>>(), [&b"amy"[..], b"bob"]);
        }
        other => panic!("{other:?}"),
    }
    // Garbage stays little-endian (and unknown).
    assert_eq!(
        type_code_order(&[9, 9, 9, 9]).map(|t| t.1),
        Some(Endian::Little)
    );
}
