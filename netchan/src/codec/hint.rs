//! Size hints bounded by the message.
//!
//! A sequence or map in a message starts with its claimed length, and
//! serde's collection visitors reserve room for that many elements up front
//! (capped at 1 MiB per collection). A lying length prefix would make a
//! nine-byte message allocate that megabyte before the decoder finds the
//! elements missing, and a recursive value could do it once per level.
//!
//! [`Bounds`] holds one message's budget: the size hints of all the
//! collections in it together never exceed the message's length in bytes.
//! The bincode decoder draws on it directly; for postcard, `Hinted` wraps
//! the deserializer and everything it hands out to do the same. Every
//! element of a value that takes memory takes at least one byte on the
//! wire, so an honest message never loses a hint, and a lying one can make
//! the decoder reserve room for at most as many elements as it has bytes.
//! [`Bounds`] also counts how deep the value being decoded is nested.

use std::cell::Cell;
#[cfg(feature = "postcard")]
use std::fmt;

use serde::de;

#[cfg(feature = "postcard")]
/// A deserializer whose collections' size hints draw on a shared budget.
pub(crate) struct Hinted<'b, D> {
    inner: D,
    budget: &'b Bounds,
}

#[cfg(feature = "postcard")]
impl<'b, D> Hinted<'b, D> {
    /// Wraps `inner`; `budget` starts at the message's length in bytes.
    pub(crate) fn new(inner: D, budget: &'b Bounds) -> Self {
        Hinted { inner, budget }
    }
}

/// How deep values may nest in one message. A deeper value is refused
/// while it is decoded: dropping it would recurse once per level, and a
/// peer could make that overflow the stack of the task that drops it.
pub(crate) const MAX_DEPTH: usize = 1024;

/// Stack a level needs at least: with less left, the level continues on
/// a new stack of [`STACK_GROWTH`] bytes.
const RED_ZONE: usize = 64 << 10;
/// Size of each stack grown on the heap for deep values.
const STACK_GROWTH: usize = 2 << 20;
/// Levels between two looks at the stack left: a level takes far less
/// than `RED_ZONE / STACK_EVERY` of it (a few hundred bytes in a release
/// build, a few KiB in a debug one).
const STACK_EVERY: usize = 8;

/// What one message's decode may still spend.
pub(crate) struct Bounds {
    /// Elements all collections together may still be hinted.
    budget: Cell<usize>,
    /// Levels the value currently being decoded is nested.
    depth: Cell<usize>,
}

impl Bounds {
    /// The bounds of a message of `len` bytes.
    pub(crate) fn new(len: usize) -> Bounds {
        Bounds {
            budget: Cell::new(len),
            depth: Cell::new(0),
        }
    }

    /// Runs `f` one level deeper, or refuses if that is too deep. Every
    /// [`STACK_EVERY`] levels, the next ones may continue on a stack grown
    /// on the heap: a thousand levels of a recursive value would overflow
    /// a small thread stack (a blocking-pool thread's, a test's) before
    /// the depth limit refused them. The first levels run on the caller's
    /// stack without a look at it, so a flat message (a struct of plain
    /// fields) pays for no look, and its value is not moved through
    /// `stacker`'s closure. Only compound values (sequences, maps, enums,
    /// options, newtypes) come here, so the elements of a `Vec<u8>` pay
    /// for none of it.
    #[inline]
    pub(super) fn nested<R, E: de::Error>(&self, f: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
        let d = self.depth.get();
        if d >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "value nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.depth.set(d + 1);
        let r = if d % STACK_EVERY == STACK_EVERY - 1 {
            stacker::maybe_grow(RED_ZONE, STACK_GROWTH, f)
        } else {
            f()
        };
        self.depth.set(d);
        r
    }
}

/// Takes up to `claimed` from the budget.
pub(super) fn draw(bounds: &Bounds, claimed: Option<usize>) -> Option<usize> {
    let budget = &bounds.budget;
    let n = claimed?.min(budget.get());
    budget.set(budget.get() - n);
    Some(n)
}

#[cfg(feature = "postcard")]
macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: de::Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* Visit { inner: visitor, budget: self.budget })
        }
    )*};
}

#[cfg(feature = "postcard")]
impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for Hinted<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_bytes();
        deserialize_option(); deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq(); deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
    }

    /// Asked for as borrowed bytes, which both codecs hand out straight
    /// from the message: the visitor copies them once into its value,
    /// instead of the codec filling a buffer of its own first.
    fn deserialize_byte_buf<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_bytes(visitor)
    }

    /// As [`deserialize_byte_buf`](Self::deserialize_byte_buf), for strings.
    fn deserialize_string<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.deserialize_str(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

#[cfg(feature = "postcard")]
/// A visitor that wraps what it is given to visit.
struct Visit<'b, V> {
    inner: V,
    budget: &'b Bounds,
}

#[cfg(feature = "postcard")]
macro_rules! forward_visit {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

#[cfg(feature = "postcard")]
impl<'de, V: de::Visitor<'de>> de::Visitor<'de> for Visit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
        visit_str(&str); visit_borrowed_str(&'de str); visit_string(String);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.budget
            .nested(|| self.inner.visit_some(Hinted::new(d, self.budget)))
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.budget
            .nested(|| self.inner.visit_newtype_struct(Hinted::new(d, self.budget)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let hint = draw(self.budget, seq.size_hint());
        self.budget.nested(|| {
            self.inner.visit_seq(Access {
                inner: seq,
                hint,
                budget: self.budget,
            })
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let hint = draw(self.budget, map.size_hint());
        self.budget.nested(|| {
            self.inner.visit_map(Access {
                inner: map,
                hint,
                budget: self.budget,
            })
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.budget.nested(|| {
            self.inner.visit_enum(Access {
                inner: data,
                hint: None,
                budget: self.budget,
            })
        })
    }
}

#[cfg(feature = "postcard")]
/// A seed that wraps the deserializer it is given. An element is not a
/// level of its own: the compound value it may be counts one when it is
/// visited, so a plain element (a byte of a `Vec<u8>`) costs nothing more
/// than the wrapping.
struct Seed<'b, S> {
    inner: S,
    budget: &'b Bounds,
}

#[cfg(feature = "postcard")]
impl<'de, S: de::DeserializeSeed<'de>> de::DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Hinted::new(d, self.budget))
    }
}

#[cfg(feature = "postcard")]
/// A sequence, map, enum or variant access whose nested values are wrapped
/// too; `hint` is what is left of the size hint drawn from the budget.
struct Access<'b, A> {
    inner: A,
    hint: Option<usize>,
    budget: &'b Bounds,
}

#[cfg(feature = "postcard")]
impl<'b, A> Access<'b, A> {
    fn seed<S>(&self, inner: S) -> Seed<'b, S> {
        Seed {
            inner,
            budget: self.budget,
        }
    }

    fn visit<V>(&self, inner: V) -> Visit<'b, V> {
        Visit {
            inner,
            budget: self.budget,
        }
    }

    fn took_one(&mut self) {
        self.hint = self.hint.map(|n| n.saturating_sub(1));
    }
}

#[cfg(feature = "postcard")]
impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let next = self.inner.next_element_seed(self.seed(seed))?;
        self.took_one();
        Ok(next)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint
    }
}

#[cfg(feature = "postcard")]
impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let next = self.inner.next_key_seed(self.seed(seed))?;
        self.took_one();
        Ok(next)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(self.seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint
    }
}

#[cfg(feature = "postcard")]
impl<'de, 'b, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<'b, A> {
    type Error = A::Error;
    type Variant = Access<'b, A::Variant>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), A::Error> {
        let seed = self.seed(seed);
        let (v, variant) = self.inner.variant_seed(seed)?;
        Ok((
            v,
            Access {
                inner: variant,
                hint: None,
                budget: self.budget,
            },
        ))
    }
}

#[cfg(feature = "postcard")]
impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, A::Error> {
        let seed = self.seed(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: de::Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, A::Error> {
        let v = self.visit(v);
        self.inner.tuple_variant(len, v)
    }

    fn struct_variant<V: de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, A::Error> {
        let v = self.visit(v);
        self.inner.struct_variant(fields, v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::BytesMut;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::super::{decode, encode};
    use crate::proto::CodecId;

    /// A sequence that records the size hint it was given.
    #[derive(Debug)]
    struct Hints(Vec<Option<usize>>);

    impl<'de> Deserialize<'de> for Hints {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hints, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Hints;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a sequence of u8")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Hints, A::Error> {
                    let mut hints = vec![seq.size_hint()];
                    while seq.next_element::<u8>()?.is_some() {
                        hints.push(seq.size_hint());
                    }
                    Ok(Hints(hints))
                }
            }
            d.deserialize_seq(V)
        }
    }

    fn codecs() -> Vec<CodecId> {
        let mut v = vec![CodecId::Bincode];
        if cfg!(feature = "postcard") {
            v.push(CodecId::Postcard);
        }
        v
    }

    #[test]
    fn an_honest_length_is_hinted_in_full_and_counts_down() {
        for codec in codecs() {
            let mut buf = BytesMut::new();
            encode(codec, &vec![1u8, 2, 3], &mut buf).unwrap();
            let h: Hints = decode(codec, &buf).unwrap();
            assert_eq!(h.0, [Some(3), Some(2), Some(1), Some(0)], "{codec:?}");
        }
    }

    thread_local! {
        /// The first size hint the last [`FirstHint`] saw.
        static FIRST_HINT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    }

    /// A sequence of `u8` that records its first size hint where a failed
    /// decode leaves it visible.
    struct FirstHint;

    impl<'de> Deserialize<'de> for FirstHint {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FirstHint, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = FirstHint;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a sequence of u8")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<FirstHint, A::Error> {
                    FIRST_HINT.with(|h| h.set(seq.size_hint()));
                    while seq.next_element::<u8>()?.is_some() {}
                    Ok(FirstHint)
                }
            }
            d.deserialize_seq(V)
        }
    }

    #[test]
    fn a_lying_length_is_hinted_no_more_than_the_message_length() {
        // bincode: a varint claiming 2^40 elements, then two of them.
        let bytes = [0xfd, 0, 0, 0, 0, 0, 1, 0, 0, 7, 7];
        FIRST_HINT.with(|h| h.set(None));
        assert!(decode::<FirstHint>(CodecId::Bincode, &bytes).is_err());
        let hint = FIRST_HINT.with(|h| h.get());
        assert!(matches!(hint, Some(n) if n <= bytes.len()), "{hint:?}");
        // Two honest sequences share one budget: an honest message is
        // never short of it.
        let mut buf = BytesMut::new();
        encode(CodecId::Bincode, &(vec![1u8; 5], vec![2u8; 7]), &mut buf).unwrap();
        let (a, b): (Hints, Hints) = decode(CodecId::Bincode, &buf).unwrap();
        assert_eq!(a.0[0], Some(5));
        assert_eq!(b.0[0], Some(7));
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Tree {
        Leaf(u64),
        Node(Vec<Tree>),
        Named { kids: BTreeMap<String, Tree> },
        Maybe(Option<Box<Tree>>),
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![any::<u64>().prop_map(Tree::Leaf)];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::Node),
                prop::collection::btree_map("[a-z]{0,4}", inner.clone(), 0..4)
                    .prop_map(|kids| Tree::Named { kids }),
                prop::option::of(inner.prop_map(Box::new)).prop_map(Tree::Maybe),
            ]
        })
    }

    proptest! {
        /// The wrapper changes no decoded value: sequences, maps, enums,
        /// options and newtypes nested in each other round-trip.
        #[test]
        fn nested_values_round_trip_through_the_bounded_hints(t in tree(), xs in prop::collection::vec(any::<u32>(), 0..50)) {
            for codec in codecs() {
                let v = (t.clone(), xs.clone(), Some(String::from("x")));
                let mut buf = BytesMut::new();
                encode(codec, &v, &mut buf).unwrap();
                let back: (Tree, Vec<u32>, Option<String>) = decode(codec, &buf).unwrap();
                prop_assert_eq!(back, v);
            }
        }
    }
}
