//! Message encoding: bincode 2 (serde API) by default, postcard as an
//! option. Every decode is bounded by the message's own length and rejects
//! trailing bytes; nothing here allocates more than a small multiple of the
//! bytes that actually arrived.

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::proto::CodecId;

mod hint;

/// bincode writes straight into the transmit buffer.
struct BufWriter<'a>(&'a mut BytesMut);

impl bincode::enc::write::Writer for BufWriter<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends the encoding of `value` to `dst`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    codec: CodecId,
    value: &T,
    dst: &mut BytesMut,
) -> Result<(), String> {
    match codec {
        CodecId::Bincode => {
            bincode::serde::encode_into_writer(value, BufWriter(dst), bincode::config::standard())
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "postcard")]
        CodecId::Postcard => {
            use bytes::BufMut;
            let w = dst.writer();
            postcard::to_io(value, w)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "postcard"))]
        CodecId::Postcard => Err("postcard support is not compiled in".into()),
    }
}

macro_rules! bounded {
    ($bytes:expr, $($lim:literal)*) => {{
        let len = $bytes.len();
        let need = len.saturating_mul(CLAIM_FACTOR).saturating_add(CLAIM_SLACK);
        $(
            if need <= $lim {
                return bincode_decode($bytes, bincode::config::standard().with_limit::<$lim>());
            }
        )*
        Err(format!("message of {len} bytes is too large to decode"))
    }};
}

/// Decodes with bincode under `cfg`'s limit, borrowing from `bytes`: a
/// byte string or string is copied once, straight into the value. Deeply
/// nested values (a recursive enum a thousand levels down) grow the stack
/// on the heap as they go (`stacker`) instead of overflowing it and
/// aborting the process, up to [`hint::MAX_DEPTH`] levels. The room
/// collections reserve up front is bounded by the message's length
/// ([`hint::Hinted`]).
fn bincode_decode<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    cfg: C,
) -> Result<T, String> {
    let bounds = hint::Bounds::new(bytes.len());
    let seed = hint::Whole::<T>::new(&bounds);
    let (v, used) =
        bincode::serde::seed_decode_from_slice(seed, bytes, cfg).map_err(|e| e.to_string())?;
    match bytes.len() - used {
        0 => Ok(v),
        n => Err(format!(
            "{n} trailing bytes after the value ({used} of {} used)",
            bytes.len()
        )),
    }
}

/// bincode's limit counts decoded memory, not wire bytes (a one-byte
/// varint becomes an eight-byte integer), so a message may claim this many
/// times its own length before it is refused.
const CLAIM_FACTOR: usize = 16;
/// Plus this much, for small messages with a few large integers.
const CLAIM_SLACK: usize = 4096;

/// Decodes a whole message. bincode's limit is a const parameter, so the
/// smallest power of four at or above `CLAIM_FACTOR * len + CLAIM_SLACK` is
/// chosen: a lying length prefix inside a message of `len` bytes can make
/// the decoder allocate at most about `64 * len + 16 KiB` before it fails.
pub(crate) fn decode<T: DeserializeOwned>(codec: CodecId, bytes: &[u8]) -> Result<T, String> {
    match codec {
        CodecId::Bincode => bounded!(bytes,
            16384 65536 262144 1048576 4194304 16777216 67108864 268435456
            1073741824 4294967296 17179869184),
        #[cfg(feature = "postcard")]
        CodecId::Postcard => {
            // postcard reads strings and byte strings from the slice, so
            // it cannot allocate past what arrived; collections' size
            // hints are bounded as for bincode.
            let mut de = postcard::Deserializer::from_bytes(bytes);
            let bounds = hint::Bounds::new(bytes.len());
            let r = T::deserialize(hint::Hinted::new(&mut de, &bounds)).map(|v| (v, de.finalize()));
            match r.map(|(v, rest)| (v, rest.unwrap_or_default())) {
                Ok((v, [])) => Ok(v),
                Ok((_, rest)) => Err(format!("{} trailing bytes after the value", rest.len())),
                Err(e) => Err(e.to_string()),
            }
        }
        #[cfg(not(feature = "postcard"))]
        CodecId::Postcard => Err("postcard support is not compiled in".into()),
    }
}

/// The name a message type is compared by across programs: Rust's type
/// name with every module path removed (`alloc::vec::Vec<app::Job>`
/// becomes `Vec<Job>`), so programs that define the same type in different
/// modules, or share it from a crate, agree.
pub fn type_name<T: ?Sized>() -> String {
    strip_paths(std::any::type_name::<T>())
}

pub(crate) fn strip_paths(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut ident = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            ident.clear();
        } else if c.is_alphanumeric() || c == '_' {
            ident.push(c);
        } else {
            out.push_str(&ident);
            ident.clear();
            out.push(c);
        }
    }
    out.push_str(&ident);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn type_names_lose_their_module_paths() {
        assert_eq!(strip_paths("alloc::vec::Vec<app::Job>"), "Vec<Job>");
        assert_eq!(
            strip_paths("(u32, core::option::Option<a::b::C<d::E, f::G>>)"),
            "(u32, Option<C<E, G>>)"
        );
        assert_eq!(strip_paths("[u8; 4]"), "[u8; 4]");
        assert_eq!(type_name::<Vec<String>>(), "Vec<String>");
    }

    #[test]
    fn bincode_round_trips_and_rejects_trailing_bytes() {
        let mut buf = BytesMut::new();
        encode(CodecId::Bincode, &(7u32, "hi".to_string()), &mut buf).unwrap();
        let v: (u32, String) = decode(CodecId::Bincode, &buf).unwrap();
        assert_eq!(v, (7, "hi".to_string()));
        buf.put_u8(0);
        let e = decode::<(u32, String)>(CodecId::Bincode, &buf).unwrap_err();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn bincode_refuses_a_length_prefix_larger_than_the_message() {
        // A Vec<u8> claiming 2^40 bytes in a 9-byte message.
        let mut buf = BytesMut::new();
        encode(CodecId::Bincode, &(1u64 << 40), &mut buf).unwrap();
        let e = decode::<Vec<u8>>(CodecId::Bincode, &buf).unwrap_err();
        assert!(!e.is_empty());
        let e = decode::<String>(CodecId::Bincode, &buf).unwrap_err();
        assert!(!e.is_empty());
    }
}

#[cfg(all(test, feature = "postcard"))]
mod postcard_tests {
    use super::*;
    use crate::{Config, Session};

    #[test]
    fn postcard_round_trips_and_rejects_trailing_bytes() {
        let mut buf = BytesMut::new();
        encode(CodecId::Postcard, &(7u32, "hi".to_string()), &mut buf).unwrap();
        let v: (u32, String) = decode(CodecId::Postcard, &buf).unwrap();
        assert_eq!(v, (7, "hi".to_string()));
        buf.extend_from_slice(&[0]);
        assert!(decode::<(u32, String)>(CodecId::Postcard, &buf).is_err());
    }

    #[tokio::test]
    async fn sessions_agreeing_on_postcard_exchange_values_and_handles() {
        let (a, b) = Session::pair_with(Config::default().postcard());
        let tx = a
            .export_sender::<(String, crate::Sender<u32>)>("x")
            .unwrap();
        let mut rx = b
            .import_receiver::<(String, crate::Sender<u32>)>("x", 4)
            .await
            .unwrap();
        let (rtx, mut rrx) = crate::channel::<u32>(1);
        tx.send(("hello".into(), rtx)).await.unwrap();
        let (s, reply) = rx.recv().await.unwrap().unwrap();
        assert_eq!(s, "hello");
        reply.send(42).await.unwrap();
        assert_eq!(rrx.recv().await.unwrap(), Some(42));
    }

    #[tokio::test]
    async fn a_codec_mismatch_fails_the_handshake_clearly() {
        let (a, b) = crate::transport::test_pair(Config::default().postcard(), Config::default());
        let ea = a.ready().await.unwrap_err();
        let eb = b.ready().await.unwrap_err();
        for e in [ea, eb] {
            assert!(e.to_string().contains("codec mismatch"), "{e}");
        }
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Wrap(Box<Tree>),
    }

    /// Decodes `depth` levels of `Tree::Wrap` on a small stack, where an
    /// overflow is certain without help; returns the levels found.
    fn decode_deep(depth: usize) -> Result<usize, String> {
        let mut bytes = vec![1u8; depth];
        bytes.push(0);
        let t = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let tree: Tree = decode(CodecId::Bincode, &bytes)?;
                let mut n = 0;
                let mut t = &tree;
                while let Tree::Wrap(inner) = t {
                    n += 1;
                    t = inner;
                }
                Ok(n)
            })
            .unwrap();
        t.join().unwrap()
    }

    #[test]
    fn values_nested_up_to_the_limit_decode_and_drop_on_a_small_stack() {
        assert_eq!(decode_deep(hint::MAX_DEPTH - 1), Ok(hint::MAX_DEPTH - 1));
    }

    #[test]
    fn a_value_nested_deeper_than_the_limit_is_refused_not_a_stack_overflow() {
        // Dropping it would recurse once per level, so it must not be built.
        for depth in [hint::MAX_DEPTH, 50_000] {
            let e = decode_deep(depth).unwrap_err();
            assert!(e.contains("nested deeper than 1024 levels"), "{e}");
        }
    }
}
