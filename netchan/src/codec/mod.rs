//! Message encoding: bincode 2's standard format by default (encoded and
//! decoded here, straight through serde: [`bin`]), postcard as an option.
//! Every decode is bounded by the message's own length, limits how deep
//! values nest and rejects trailing bytes; nothing here allocates more
//! than a small multiple of the bytes that actually arrived.

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::proto::CodecId;

mod bin;
mod hint;

/// Appends the encoding of `value` to `dst`.
pub(crate) fn encode<T: Serialize + ?Sized>(
    codec: CodecId,
    value: &T,
    dst: &mut BytesMut,
) -> Result<(), String> {
    match codec {
        CodecId::Bincode => bin::encode(value, dst).map_err(|e| e.to_string()),
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

/// Decodes a whole message. Neither codec allocates more than a small
/// multiple of the message's length: strings and byte strings are read
/// from the message (a length prefix larger than what is left is refused),
/// and collections' size hints draw on a budget of the message's length.
pub(crate) fn decode<T: DeserializeOwned>(codec: CodecId, bytes: &[u8]) -> Result<T, String> {
    match codec {
        CodecId::Bincode => bin::decode(bytes),
        #[cfg(feature = "postcard")]
        CodecId::Postcard => {
            // postcard reads strings and byte strings from the slice, so
            // it cannot allocate past what arrived; collections' size
            // hints and nesting are bounded by wrapping its deserializer.
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
