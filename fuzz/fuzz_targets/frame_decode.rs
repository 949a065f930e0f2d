//! `Frame::decode` on arbitrary bytes.
//!
//! The first byte picks the `DATA` limit; the rest is decoded frame by
//! frame until more bytes are needed or an error. Checked:
//! * `Ok(None)` consumes nothing, and only happens on an incomplete frame;
//! * a decoded frame consumed exactly its header and payload, and
//!   `encode` gives those bytes back (strings within the encoder's limits;
//!   longer ones are cut as documented, and then decode to the cut frame);
//! * `DATA` payloads respect the limit; errors never panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use netchan::proto::Frame;

const HEADER_LEN: usize = 10;
const MAX_CONTROL_PAYLOAD: usize = 4096;
const MAX_NAME_LEN: usize = 1024;
const MAX_REASON_LEN: usize = 1024;
const MAX_TYPE_NAME: usize = MAX_CONTROL_PAYLOAD - MAX_NAME_LEN - 16;

fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The frame as `encode` writes it (strings cut to the wire limits).
fn clipped(f: &Frame) -> Frame {
    match f.clone() {
        Frame::Open {
            chan,
            dir,
            capacity,
            name,
            type_name,
        } => Frame::Open {
            chan,
            dir,
            capacity,
            name: clip(&name, MAX_NAME_LEN),
            type_name: clip(&type_name, MAX_TYPE_NAME),
        },
        Frame::Reject { chan, code, reason } => Frame::Reject {
            chan,
            code,
            reason: clip(&reason, MAX_REASON_LEN),
        },
        Frame::Close { chan, code, reason } => Frame::Close {
            chan,
            code,
            reason: clip(&reason, MAX_REASON_LEN),
        },
        Frame::Goodbye { reason } => Frame::Goodbye {
            reason: clip(&reason, MAX_REASON_LEN),
        },
        other => other,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max_data = match sel % 4 {
        0 => 0,
        1 => 16,
        2 => 4096,
        _ => 64 << 10,
    };
    let mut buf = BytesMut::from(rest);
    let mut at = 0; // bytes of `rest` consumed so far
    for _ in 0..10_000 {
        let before = &rest[at..];
        match Frame::decode(&mut buf, max_data) {
            Ok(None) => {
                assert_eq!(&buf[..], before, "Ok(None) consumed bytes");
                if before.len() >= HEADER_LEN {
                    let len = u32::from_le_bytes([before[0], before[1], before[2], before[3]]);
                    assert!(
                        before.len() < HEADER_LEN + len as usize,
                        "Ok(None) on a complete frame"
                    );
                }
                return;
            }
            Err(_) => return,
            Ok(Some(f)) => {
                let used = before.len() - buf.len();
                let len = u32::from_le_bytes([before[0], before[1], before[2], before[3]]) as usize;
                assert_eq!(used, HEADER_LEN + len, "consumed bytes != header + len");
                if let Frame::Data { payload, .. } = &f {
                    assert!(payload.len() <= max_data, "DATA payload above the limit");
                }
                let mut enc = BytesMut::new();
                f.encode(&mut enc);
                let cut = clipped(&f);
                if cut == f {
                    assert_eq!(
                        &enc[..],
                        &before[..used],
                        "encode(decode(x)) != x for {f:?}"
                    );
                } else {
                    let mut again = enc.clone();
                    let g = Frame::decode(&mut again, usize::MAX)
                        .expect("an encoded frame decodes")
                        .expect("an encoded frame is complete");
                    assert_eq!(g, cut, "a cut frame does not decode to its cut form");
                    assert!(again.is_empty());
                }
                at += used;
            }
        }
    }
});
