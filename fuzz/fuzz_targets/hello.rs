//! `Hello::decode` on arbitrary bytes, whole and byte by byte.
//!
//! The first byte picks our codec. Checked: a hello decodes only from
//! `HELLO_LEN` (48) bytes, consumes exactly those, re-encodes to them (with its resume part) and carries non-zero
//! limits and our codec; `Ok(None)` consumes nothing; and the decision
//! is consistent as bytes arrive: every prefix gives "need more" or the
//! error the whole input gives (a receiver that checks "as bytes arrive"
//! never reports something different later).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netchan::proto::hello::HELLO_LEN;
use netchan::proto::{CodecId, Hello, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let codec = if sel & 1 == 0 {
        CodecId::Bincode
    } else {
        CodecId::Postcard
    };
    let ours = Hello {
        version: PROTOCOL_VERSION,
        codec,
        max_message_len: 16 << 20,
        max_channels: 1024,
        max_handles: 128,
    };
    let mut buf = BytesMut::from(rest);
    let whole = Hello::decode_with(&mut buf, &ours);
    match &whole {
        Ok(None) => {
            assert!(rest.len() < HELLO_LEN);
            assert_eq!(&buf[..], rest, "Ok(None) consumed bytes");
        }
        Ok(Some((h, info))) => {
            assert!(rest.len() >= HELLO_LEN);
            assert_eq!(
                buf.len(),
                rest.len() - HELLO_LEN,
                "a hello is HELLO_LEN bytes"
            );
            assert_eq!(h.codec, codec);
            assert_eq!(h.version, PROTOCOL_VERSION);
            assert!(h.max_message_len > 0 && h.max_channels > 0);
            let mut enc = BytesMut::new();
            h.encode_with(info, &mut enc);
            assert_eq!(&enc[..], &rest[..HELLO_LEN], "encode(decode(x)) != x");
        }
        Err(_) => {}
    }
    // Byte by byte: the first verdict is final.
    for n in 0..rest.len().min(HELLO_LEN) {
        let mut part = BytesMut::from(&rest[..n]);
        match Hello::decode_with(&mut part, &ours) {
            Ok(None) => assert_eq!(&part[..], &rest[..n]),
            Ok(Some(_)) => panic!("a hello decoded from {n} bytes"),
            Err(e) => {
                assert_eq!(
                    whole.as_ref().err(),
                    Some(&e),
                    "{n} bytes gave {e:?}, all {} bytes gave {whole:?}",
                    rest.len()
                );
                break;
            }
        }
    }
});
