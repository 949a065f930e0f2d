//! The encoder writes what the `bincode` crate writes, byte for byte; the
//! decoder accepts what it accepts, and gives the same values.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{decode, encode};

fn cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// What the `bincode` crate writes for `v`.
fn reference<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, cfg()).expect("bincode encodes it")
}

/// What the encoder here writes for `v`.
fn ours<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(v, &mut buf).expect("encodes");
    buf.to_vec()
}

/// `v` encodes as bincode encodes it and decodes back to itself.
fn same<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: &T) {
    let bytes = ours(v);
    assert_eq!(bytes, reference(v), "encoding of {v:?}");
    let back: T = decode(&bytes).unwrap_or_else(|e| panic!("decoding {v:?}: {e}"));
    assert_eq!(&back, v);
}

/// What the `bincode` crate decodes from `bytes` as a whole message. The
/// limit only keeps it from filling a buffer for a lying length before
/// reading (its owned strings and byte strings do): no value decoded from
/// the small messages of these tests claims anywhere near a mebibyte.
fn reference_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let cfg = cfg().with_limit::<{ 1 << 20 }>();
    match bincode::serde::borrow_decode_from_slice::<T, _>(bytes, cfg) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(format!("{} trailing bytes", bytes.len() - used)),
        Err(e) => Err(e.to_string()),
    }
}

/// Both decoders accept `bytes` as a `T` or both refuse it; when both
/// accept, they agree on the value (compared by encoding, so that a NaN
/// equals itself).
fn agree<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) {
    let here = decode::<T>(bytes);
    let there = reference_decode::<T>(bytes);
    match (&here, &there) {
        (Ok(a), Ok(b)) => assert_eq!(reference(a), reference(b), "{bytes:?}: {a:?} {b:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "{bytes:?} as {}: here {here:?}, bincode {there:?}",
            std::any::type_name::<T>()
        ),
    }
}

macro_rules! boundaries {
    ($($ty:ty: [$($v:expr),* $(,)?];)*) => {$(
        for v in [$($v as $ty),*] {
            same(&v);
        }
    )*};
}

#[test]
fn integers_at_every_varint_boundary_encode_as_bincode_does() {
    boundaries! {
        u8: [0, 1, 127, 128, 250, 251, 255];
        u16: [0, 250, 251, 255, 256, 65535];
        u32: [0, 250, 251, 255, 256, 65535, 65536, u32::MAX];
        u64: [0, 250, 251, 65535, 65536, u32::MAX, 1u64 << 32, u64::MAX];
        usize: [0, 250, 251, 65536, usize::MAX];
        u128: [0, 250, 251, 65536, u64::MAX, (u64::MAX as u128) + 1, u128::MAX];
        i8: [0, 1, -1, 127, -128];
        i16: [0, 1, -1, 125, -125, 126, -126, 127, -128, 32767, -32768];
        i32: [0, -1, 125, -126, 32767, -32768, 32768, -32769, i32::MAX, i32::MIN];
        i64: [0, -1, -126, i32::MAX, i32::MIN, i64::MAX, i64::MIN];
        isize: [0, -1, isize::MAX, isize::MIN];
        i128: [0, -1, -126, i64::MAX, i64::MIN, (i64::MAX as i128) + 1, (i64::MIN as i128) - 1, i128::MAX, i128::MIN];
    }
}

#[test]
fn floats_keep_their_bits() {
    let f32s = [
        0.0f32,
        -0.0,
        1.5,
        f32::MIN_POSITIVE,
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7fc0_0001),
    ];
    for v in f32s {
        assert_eq!(ours(&v), reference(&v));
        assert_eq!(decode::<f32>(&ours(&v)).unwrap().to_bits(), v.to_bits());
    }
    let f64s = [
        0.0f64,
        -0.0,
        -2.25,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
        f64::from_bits(0xfff8_0000_0000_0123),
    ];
    for v in f64s {
        assert_eq!(ours(&v), reference(&v));
        assert_eq!(decode::<f64>(&ours(&v)).unwrap().to_bits(), v.to_bits());
    }
}

#[test]
fn chars_are_their_utf8_bytes() {
    for c in [
        '\0',
        'a',
        '\u{7f}',
        '\u{80}',
        'é',
        '\u{7ff}',
        '\u{800}',
        '€',
        '\u{ffff}',
        '\u{10000}',
        '😀',
        char::MAX,
    ] {
        same(&c);
        assert_eq!(ours(&c), c.to_string().into_bytes());
    }
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Newtype(u32);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Pair(i16, String);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
    flag: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Empty,
    Circle(u32),
    Rect(u16, u16),
    Named { name: String, sides: u8 },
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Tree {
    Leaf(i64),
    Node(Vec<Tree>),
    Named { kids: BTreeMap<String, Tree> },
    Maybe(Option<Box<Tree>>),
}

fn tree() -> Tree {
    let mut kids = BTreeMap::new();
    kids.insert("a".to_string(), Tree::Leaf(-7));
    kids.insert(
        "bb".to_string(),
        Tree::Maybe(Some(Box::new(Tree::Node(vec![Tree::Leaf(300)])))),
    );
    Tree::Node(vec![
        Tree::Leaf(1),
        Tree::Named { kids },
        Tree::Maybe(None),
        Tree::Node(vec![]),
    ])
}

#[test]
fn values_of_every_shape_encode_as_bincode_does() {
    same(&true);
    same(&false);
    same(&String::new());
    same(&"héllo".to_string());
    same(&"x".repeat(300));
    assert_eq!(ours("a str"), reference("a str"));
    same(&Vec::<u8>::new());
    same(&(0..=255).collect::<Vec<u8>>());
    same(&vec![7u8; 70_000]);
    same(&serde_bytes::ByteBuf::from(vec![1, 2, 3, 255]));
    same(&serde_bytes::ByteBuf::from(vec![9; 300]));
    // Strings and byte strings that fit in what is left of the encoder's
    // stage, that do not, and ones larger than all of it.
    same(&(
        vec![1u8; 500],
        "y".repeat(100),
        serde_bytes::ByteBuf::from(vec![2; 5000]),
        vec![3u8; 1500],
        "z".to_string(),
        u64::MAX,
    ));
    same(&vec!["a".to_string(), String::new(), "ccc".into()]);
    same(&vec![vec![1u32, 70_000], vec![], vec![u32::MAX]]);
    same(&vec![vec![vec![1i8]]]);
    same(&BTreeMap::from([
        (1u16, "one".to_string()),
        (300, "many".into()),
    ]));
    same(&HashMap::from([
        ("k".to_string(), vec![1u64, 2]),
        ("l".into(), vec![]),
    ]));
    same(&Some(5u8));
    same(&None::<u8>);
    same(&Some(Some(())));
    same(&Some(None::<String>));
    same(&(1u8, -2i32, "three".to_string(), 4.0f32));
    same(&());
    same(&Unit);
    same(&Newtype(70_000));
    same(&Pair(-300, "p".into()));
    same(&Record {
        id: 1 << 40,
        name: "r".into(),
        tags: vec!["x".into(), "y".into()],
        score: Some(0.5),
        flag: true,
    });
    for s in [
        Shape::Empty,
        Shape::Circle(251),
        Shape::Rect(1, 65535),
        Shape::Named {
            name: "tri".into(),
            sides: 3,
        },
    ] {
        same(&s);
    }
    same(&tree());
    same(&[0xabu8; 32]);
    same(&[1u64, u64::MAX, 3]);
    same(&Box::new(Shape::Circle(9)));
    same(&Duration::new(u64::MAX, 999_999_999));
    same(&Duration::from_millis(1500));
    same(&std::net::Ipv4Addr::new(10, 0, 0, 1));
    same(&std::net::SocketAddr::from((
        [0u16, 0, 0, 0, 0, 0, 0, 1],
        8080,
    )));
}

/// A sequence whose length is not known up front: bincode refuses to
/// encode it, and so does the encoder here.
struct Unsized;

impl Serialize for Unsized {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        seq.serialize_element(&1u8)?;
        seq.end()
    }
}

/// A map whose length is not known up front.
struct UnsizedMap;

impl Serialize for UnsizedMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry(&1u8, &2u8)?;
        map.end()
    }
}

/// A value serialized through `collect_str`.
struct Displayed;

impl Serialize for Displayed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}-{}", 12, "ab"))
    }
}

#[test]
fn sequences_of_unknown_length_are_refused_and_collect_str_writes_a_string() {
    assert!(bincode::serde::encode_to_vec(Unsized, cfg()).is_err());
    let mut buf = BytesMut::new();
    let e = encode(&Unsized, &mut buf).unwrap_err();
    assert!(e.to_string().contains("length"), "{e}");
    assert!(bincode::serde::encode_to_vec(UnsizedMap, cfg()).is_err());
    assert!(encode(&UnsizedMap, &mut BytesMut::new()).is_err());
    assert_eq!(ours(&Displayed), reference(&Displayed));
    assert_eq!(decode::<String>(&ours(&Displayed)).unwrap(), "12-ab");
}

#[test]
fn strings_and_byte_strings_are_borrowed_from_the_message() {
    let bytes = ours(&("borrowed", serde_bytes::Bytes::new(b"raw")));
    let (s, b): (&str, &serde_bytes::Bytes) = decode(&bytes).unwrap();
    assert_eq!((s, &b[..]), ("borrowed", &b"raw"[..]));
    assert!(std::ptr::eq(s.as_ptr(), bytes[1..].as_ptr()));
}

#[test]
fn a_length_longer_than_the_rest_of_the_message_is_refused() {
    // Five bytes claimed, one there.
    for e in [
        decode::<String>(&[5, b'a']).unwrap_err(),
        decode::<serde_bytes::ByteBuf>(&[5, b'a']).unwrap_err(),
        decode::<&str>(&[5, b'a']).unwrap_err(),
    ] {
        assert!(e.contains("length of 5 bytes where 1 are left"), "{e}");
    }
    // 2^64 - 1 bytes claimed.
    let mut huge = vec![253];
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode::<String>(&huge).is_err());
    assert!(decode::<Vec<u8>>(&huge).is_err());
    assert!(decode::<BTreeMap<u8, u8>>(&huge).is_err());
}

#[test]
fn malformed_values_are_refused_as_bincode_refuses_them() {
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        ("bool 2", vec![2], both::<bool>),
        ("Option tag 2", vec![2, 0], both::<Option<u8>>),
        ("invalid UTF-8", vec![2, 0xff, 0xfe], both::<String>),
        ("u16 with a u32 marker", vec![252, 1, 0, 0, 0], both::<u16>),
        (
            "u32 with a u64 marker",
            vec![253, 1, 0, 0, 0, 0, 0, 0, 0],
            both::<u32>,
        ),
        (
            "u64 with a u128 marker",
            [vec![254], vec![0; 16]].concat(),
            both::<u64>,
        ),
        (
            "i32 with a u64 marker",
            vec![253, 1, 0, 0, 0, 0, 0, 0, 0],
            both::<i32>,
        ),
        (
            "u128 with marker 255",
            [vec![255], vec![0; 16]].concat(),
            both::<u128>,
        ),
        (
            "length with a u128 marker",
            [vec![254], vec![0; 16]].concat(),
            both::<Vec<u8>>,
        ),
        ("variant 4 of 4", vec![4], both::<Shape>),
        (
            "variant 2^32 - 1",
            vec![252, 255, 255, 255, 255],
            both::<Shape>,
        ),
        (
            "variant index with a u64 marker",
            vec![253, 0, 0, 0, 0, 0, 0, 0, 0],
            both::<Shape>,
        ),
        ("char lead byte 0xff", vec![0xff], both::<char>),
        ("char continuation byte first", vec![0x80], both::<char>),
        ("overlong char", vec![0xc0, 0x80], both::<char>),
        ("surrogate char", vec![0xed, 0xa0, 0x80], both::<char>),
        (
            "char past U+10FFFF",
            vec![0xf4, 0x90, 0x80, 0x80],
            both::<char>,
        ),
        (
            "char with a bad continuation",
            vec![0xe2, 0x28, 0xa1],
            both::<char>,
        ),
        ("truncated char", vec![0xe2, 0x82], both::<char>),
        ("truncated u32", vec![252, 1, 2], both::<u32>),
        ("truncated f64", vec![0; 7], both::<f64>),
        ("empty u8", vec![], both::<u8>),
        (
            "Duration overflowing when its nanoseconds carry",
            [vec![253], vec![255; 8], vec![252, 0, 148, 53, 119]].concat(),
            both::<Duration>,
        ),
    ];
    for (what, bytes, check) in cases {
        let (here, there) = check(&bytes);
        assert!(!here, "{what}: accepted here");
        assert!(!there, "{what}: accepted by bincode");
    }
}

/// Whether the decoder here and bincode accept some bytes as a value.
type Check = fn(&[u8]) -> (bool, bool);

/// Whether the decoder here and bincode accept `bytes` as a `T`.
fn both<T: Serialize + DeserializeOwned + Debug>(bytes: &[u8]) -> (bool, bool) {
    agree::<T>(bytes);
    (
        decode::<T>(bytes).is_ok(),
        reference_decode::<T>(bytes).is_ok(),
    )
}

#[test]
fn a_wider_varint_than_needed_is_accepted_as_bincode_accepts_it() {
    assert_eq!(decode::<u32>(&[251, 5, 0]), Ok(5));
    assert_eq!(decode::<u64>(&[252, 5, 0, 0, 0]), Ok(5));
    assert_eq!(decode::<u16>(&[251, 5, 0]), Ok(5));
    assert_eq!(decode::<i32>(&[251, 3, 0]), Ok(-2));
    assert_eq!(
        decode::<u128>(&[254, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Ok(5)
    );
    assert_eq!(decode::<Vec<u8>>(&[251, 1, 0, 9]), Ok(vec![9]));
    for bytes in [
        &[251, 5, 0][..],
        &[252, 5, 0, 0, 0],
        &[253, 5, 0, 0, 0, 0, 0, 0, 0],
    ] {
        agree::<u64>(bytes);
        agree::<u32>(bytes);
        agree::<Shape>(bytes);
    }
}

#[test]
fn trailing_bytes_are_refused_with_the_count() {
    let e = decode::<u16>(&[1, 2, 3]).unwrap_err();
    assert_eq!(e, "2 trailing bytes after the value (1 of 3 used)");
}

/// Asks for what bincode cannot give without type information.
#[derive(Debug, PartialEq)]
struct Asks(&'static str);

impl<'de> Deserialize<'de> for Asks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Asks, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Asks;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("anything")
            }
        }
        // Which method is asked for is read from a thread-local, so that one
        // type covers the three.
        match ASK.with(|a| a.get()) {
            0 => d.deserialize_any(V),
            1 => d.deserialize_identifier(V),
            _ => d.deserialize_ignored_any(V),
        }
    }
}

thread_local! {
    static ASK: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

#[test]
fn self_describing_requests_are_refused_as_bincode_refuses_them() {
    for ask in 0..3 {
        ASK.with(|a| a.set(ask));
        let e = decode::<Asks>(&[0]).unwrap_err();
        assert!(e.contains("no type information"), "{e}");
        assert!(reference_decode::<Asks>(&[0]).is_err());
    }
}

#[test]
fn size_hints_are_bounded_by_the_message_across_nested_collections() {
    /// A sequence of u8 sequences that records each one's first hint.
    #[derive(Debug)]
    struct Hints(Vec<Option<usize>>);
    impl<'de> Deserialize<'de> for Hints {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hints, D::Error> {
            struct Inner(Option<usize>);
            impl<'de> Deserialize<'de> for Inner {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Inner, D::Error> {
                    struct V;
                    impl<'de> serde::de::Visitor<'de> for V {
                        type Value = Inner;
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str("bytes")
                        }
                        fn visit_seq<A: serde::de::SeqAccess<'de>>(
                            self,
                            mut seq: A,
                        ) -> Result<Inner, A::Error> {
                            let hint = seq.size_hint();
                            while seq.next_element::<u8>()?.is_some() {}
                            Ok(Inner(hint))
                        }
                    }
                    d.deserialize_seq(V)
                }
            }
            let v: Vec<Inner> = Deserialize::deserialize(d)?;
            Ok(Hints(v.into_iter().map(|i| i.0).collect()))
        }
    }
    // Three inner sequences of four bytes each: 1 + 3 * 5 = 16 bytes, of
    // which the outer hint takes 3 and the inner ones 4 each.
    let bytes = ours(&vec![vec![1u8; 4]; 3]);
    let h: Hints = decode(&bytes).unwrap();
    assert_eq!(h.0, [Some(4), Some(4), Some(4)]);
    // Inner sequences claiming 200 elements each with none there: the
    // claims together get no more than the message's length.
    let mut lying = vec![3];
    lying.extend([200, 200, 200]);
    let total = lying.len();
    // The decode fails, so each claim's hint is recorded as it is made.
    struct Claims;
    impl<'de> Deserialize<'de> for Claims {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Claims, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Claims;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("claims")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Claims, A::Error> {
                    CLAIMED.with(|c| c.set(c.get() + seq.size_hint().unwrap_or(0)));
                    while seq.next_element::<Claims>()?.is_some() {}
                    Ok(Claims)
                }
                fn visit_u8<E>(self, _: u8) -> Result<Claims, E> {
                    Ok(Claims)
                }
            }
            d.deserialize_seq(V)
        }
    }
    thread_local! {
        static CLAIMED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    CLAIMED.with(|c| c.set(0));
    assert!(decode::<Claims>(&lying).is_err());
    let claimed = CLAIMED.with(|c| c.get());
    assert!(claimed <= total, "{claimed} > {total}");
}

#[test]
fn nesting_of_every_compound_kind_is_limited() {
    // Options in options: each `Some` is a level.
    fn options(depth: usize) -> Vec<u8> {
        let mut b = vec![1u8; depth];
        b.push(0);
        b
    }
    #[derive(Deserialize, Debug)]
    struct Opt(#[allow(dead_code)] Option<Box<Opt>>);
    let run = |bytes: Vec<u8>| {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || decode::<Opt>(&bytes).map(|_| ()))
            .unwrap()
            .join()
            .unwrap()
    };
    // Each level is a newtype and an option: two levels per byte.
    assert!(run(options(super::super::hint::MAX_DEPTH / 2 - 1)).is_ok());
    let e = run(options(super::super::hint::MAX_DEPTH)).unwrap_err();
    assert!(e.contains("nested deeper than 1024 levels"), "{e}");
    // Sequences in sequences: each length byte is a level.
    #[derive(Deserialize, Debug)]
    struct Seqs(#[allow(dead_code)] Vec<Seqs>);
    let mut bytes = vec![1u8; 5000];
    bytes.push(0);
    let e = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || decode::<Seqs>(&bytes).map(|_| ()))
        .unwrap()
        .join()
        .unwrap()
        .unwrap_err();
    assert!(e.contains("nested deeper than 1024 levels"), "{e}");
}

/// Encodings of several types, each mutated byte by byte, cut short and
/// extended: the decoder here and bincode agree on every one.
#[test]
fn mutated_encodings_are_judged_as_bincode_judges_them() {
    fn mutations(valid: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for i in 0..valid.len() {
            let b = valid[i];
            for x in [
                0,
                1,
                2,
                3,
                127,
                128,
                250,
                251,
                252,
                253,
                254,
                255,
                b ^ 0x80,
                b.wrapping_add(1),
                b.wrapping_sub(1),
            ] {
                let mut m = valid.to_vec();
                m[i] = x;
                out.push(m);
            }
            out.push(valid[..i].to_vec());
            let mut cut = valid.to_vec();
            cut.remove(i);
            out.push(cut);
        }
        for tail in [&[0u8][..], &[1], &[251, 0, 1], &[255; 9]] {
            out.push([valid, tail].concat());
        }
        out
    }
    fn check<T: Serialize + DeserializeOwned + Debug>(values: &[T]) {
        for v in values {
            let valid = ours(v);
            agree::<T>(&valid);
            for m in mutations(&valid) {
                agree::<T>(&m);
            }
        }
    }
    check(&[(
        7u32,
        "hi".to_string(),
        vec![1u16, 300, 70],
        Some(-5i64),
        true,
        'é',
    )]);
    check(&[tree(), Tree::Leaf(i64::MIN)]);
    check(&[
        Shape::Empty,
        Shape::Circle(70_000),
        Shape::Rect(3, 300),
        Shape::Named {
            name: "sq".into(),
            sides: 4,
        },
    ]);
    check(&[BTreeMap::from([
        ("k".to_string(), vec![1u8, 2]),
        ("m".into(), vec![]),
    ])]);
    check(&[(u128::MAX, i128::MIN, 1.5f64, -0.25f32)]);
    check(&[Duration::new(5, 7), Duration::new(1 << 40, 999_999_999)]);
    check(&[serde_bytes::ByteBuf::from(vec![0, 1, 254, 255])]);
    check(&[Record {
        id: 3,
        name: "n".into(),
        tags: vec!["t".into()],
        score: None,
        flag: false,
    }]);
    check(&[(
        Some(Some(3u8)),
        None::<String>,
        Unit,
        Newtype(251),
        Pair(-1, "x".into()),
    )]);
    check(&[[9u8; 32]]);
    check(&['\u{10000}', char::MAX, '\u{7ff}']);
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Mixed {
    a: u8,
    b: i16,
    c: u32,
    d: i64,
    e: u128,
    f: i128,
    g: bool,
    h: char,
    i: String,
    j: Vec<u8>,
    k: Option<u64>,
    l: (u16, i32),
    m: Vec<String>,
    n: BTreeMap<u32, i8>,
}

fn mixed() -> impl Strategy<Value = Mixed> {
    (
        (any::<u8>(), any::<i16>(), any::<u32>(), any::<i64>()),
        (any::<u128>(), any::<i128>(), any::<bool>(), any::<char>()),
        (
            ".{0,20}",
            prop::collection::vec(any::<u8>(), 0..300),
            any::<Option<u64>>(),
        ),
        (
            any::<(u16, i32)>(),
            prop::collection::vec(".{0,5}", 0..5),
            prop::collection::btree_map(any::<u32>(), any::<i8>(), 0..5),
        ),
    )
        .prop_map(|((a, b, c, d), (e, f, g, h), (i, j, k), (l, m, n))| Mixed {
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
            j,
            k,
            l,
            m,
            n,
        })
}

proptest! {
    /// Arbitrary values encode as bincode encodes them and round-trip.
    #[test]
    fn arbitrary_values_encode_as_bincode_does(v in mixed(), x in any::<u64>(), y in any::<i32>(), z in any::<f64>()) {
        same(&v);
        same(&(x, y));
        prop_assert_eq!(ours(&z), reference(&z));
    }

    /// Arbitrary bytes: the decoder here and bincode agree on them.
    #[test]
    fn arbitrary_bytes_are_judged_as_bincode_judges_them(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        agree::<(u32, String, Option<char>)>(&bytes);
        agree::<Shape>(&bytes);
        agree::<Vec<i64>>(&bytes);
        agree::<(u128, bool, f32)>(&bytes);
        agree::<Record>(&bytes);
    }
}
