//! The decoder: a serde `Deserializer` reading one message from a slice.
//!
//! It accepts exactly what `bincode::serde` accepts with the standard
//! configuration (varints in a wider form than needed, such as `251, 5, 0`
//! for 5, included; a marker wider than the type, such as 253 for a `u32`,
//! refused), and refuses more only where a bound of its own is reached: a
//! value nested deeper than [`MAX_DEPTH`](crate::codec::hint::MAX_DEPTH)
//! levels.

use serde::de::{self, IntoDeserializer};

use super::Error;
use super::ser::{SINGLE_BYTE_MAX, U16_MARK, U32_MARK, U64_MARK, U128_MARK};
use crate::codec::hint::{Bounds, draw};

/// Decodes a whole message, borrowing strings and byte strings from it
/// (each is copied once, straight into its value); refuses trailing bytes.
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, String> {
    let bounds = Bounds::new(bytes.len());
    let mut d = Decoder {
        input: bytes,
        pos: 0,
        bounds: &bounds,
    };
    let v = T::deserialize(&mut d).map_err(|e| e.to_string())?;
    match d.rest().len() {
        0 => Ok(v),
        n => Err(format!(
            "{n} trailing bytes after the value ({} of {} used)",
            d.pos,
            bytes.len()
        )),
    }
}

/// What is left of the message, and what its decode may still spend.
struct Decoder<'de, 'b> {
    /// The whole message.
    input: &'de [u8],
    /// Bytes of it decoded, at most its length. One index rather than the
    /// slice left: a byte read stores one word, not two.
    pos: usize,
    bounds: &'b Bounds,
}

/// The message ended inside a value.
#[cold]
#[inline(never)]
fn truncated() -> Error {
    Error::new(format_args!("the message ends inside a value"))
}

impl<'de> Decoder<'de, '_> {
    /// The next byte.
    #[inline]
    fn byte(&mut self) -> Result<u8, Error> {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(truncated()),
        }
    }

    /// What is left of the message.
    #[inline]
    fn rest(&self) -> &'de [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    /// The next `N` bytes.
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        match self.rest().first_chunk::<N>() {
            Some(a) => {
                self.pos += N;
                Ok(*a)
            }
            None => Err(truncated()),
        }
    }

    /// The next `len` bytes, refused before anything is done with them if
    /// the message is shorter: a length prefix cannot make the decoder
    /// allocate more than arrived.
    #[inline]
    fn take(&mut self, len: usize) -> Result<&'de [u8], Error> {
        let rest = self.rest();
        match rest.get(..len) {
            Some(taken) => {
                self.pos += len;
                Ok(taken)
            }
            None => Err(Error::new(format_args!(
                "a length of {len} bytes where {} are left in the message",
                rest.len()
            ))),
        }
    }

    /// A varint for a type whose widest form is marked `widest` (251 for
    /// 16 bits, 252 for 32, 253 for 64): a wider marker is refused even if
    /// the number would fit, as bincode does.
    #[inline]
    fn varint(&mut self, widest: u8, ty: &'static str) -> Result<u64, Error> {
        let b = self.byte()?;
        if b <= SINGLE_BYTE_MAX {
            return Ok(b.into());
        }
        self.varint_wide(b, widest, ty)
    }

    /// The rest of a varint after a marker.
    fn varint_wide(&mut self, marker: u8, widest: u8, ty: &'static str) -> Result<u64, Error> {
        if marker > widest {
            return Err(bad_marker(marker, ty));
        }
        match marker {
            U16_MARK => Ok(u16::from_le_bytes(self.array()?).into()),
            U32_MARK => Ok(u32::from_le_bytes(self.array()?).into()),
            _ => Ok(u64::from_le_bytes(self.array()?)),
        }
    }

    /// A varint of up to 128 bits.
    fn varint128(&mut self, ty: &'static str) -> Result<u128, Error> {
        match self.byte()? {
            U128_MARK => Ok(u128::from_le_bytes(self.array()?)),
            b if b <= SINGLE_BYTE_MAX => Ok(b.into()),
            b => self.varint_wide(b, U64_MARK, ty).map(u128::from),
        }
    }

    /// A zigzagged varint.
    #[inline]
    fn signed(&mut self, widest: u8, ty: &'static str) -> Result<i64, Error> {
        let n = self.varint(widest, ty)?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// A length: a `u64` varint that must fit a `usize`.
    #[inline]
    fn len(&mut self) -> Result<usize, Error> {
        let n = self.varint(U64_MARK, "length")?;
        usize::try_from(n)
            .map_err(|_| Error::new(format_args!("a length of {n} does not fit in memory")))
    }

    /// Runs `f` one level deeper ([`Bounds::nested`]).
    #[inline]
    fn nested<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, Error>) -> Result<R, Error> {
        let bounds = self.bounds;
        bounds.nested(|| f(self))
    }

    /// `len` elements, each a value of its own; the size hint draws on
    /// the message's budget.
    #[inline]
    fn seq<V: de::Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.elements(len, |e| visitor.visit_seq(e))
    }

    /// Runs `f` one level deeper on `len` elements (or entries), with the
    /// size hint drawn from the budget.
    #[inline]
    fn elements<R>(
        &mut self,
        len: usize,
        f: impl FnOnce(Elements<'_, 'de, '_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let hint = draw(self.bounds, Some(len)).unwrap_or(0);
        self.nested(|d| {
            f(Elements {
                d: Decoder {
                    input: d.input,
                    pos: d.pos,
                    bounds: d.bounds,
                },
                left: len,
                short: len.saturating_sub(hint),
                done: &mut d.pos,
            })
        })
    }
}

/// A varint marker the type cannot take.
#[cold]
#[inline(never)]
fn bad_marker(marker: u8, ty: &'static str) -> Error {
    Error::new(format_args!("varint marker {marker} is invalid for a {ty}"))
}

/// What bincode's serde decoder refuses because the format cannot say it.
#[cold]
#[inline(never)]
fn unsupported(what: &str) -> Error {
    Error::new(format_args!(
        "bincode cannot decode {what}: the format carries no type information"
    ))
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(unsupported("a self-describing value (deserialize_any)"))
    }

    #[inline]
    fn deserialize_bool<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(Error::new(format_args!("invalid bool byte {b}"))),
        }
    }

    #[inline]
    fn deserialize_i8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i8(self.byte()? as i8)
    }

    #[inline]
    fn deserialize_i16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A varint of at most 16 bits zigzags back into an i16.
        visitor.visit_i16(self.signed(U16_MARK, "i16")? as i16)
    }

    #[inline]
    fn deserialize_i32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i32(self.signed(U32_MARK, "i32")? as i32)
    }

    #[inline]
    fn deserialize_i64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_i64(self.signed(U64_MARK, "i64")?)
    }

    fn deserialize_i128<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let n = self.varint128("i128")?;
        visitor.visit_i128((n >> 1) as i128 ^ -((n & 1) as i128))
    }

    #[inline]
    fn deserialize_u8<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u8(self.byte()?)
    }

    #[inline]
    fn deserialize_u16<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u16(self.varint(U16_MARK, "u16")? as u16)
    }

    #[inline]
    fn deserialize_u32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u32(self.varint(U32_MARK, "u32")? as u32)
    }

    #[inline]
    fn deserialize_u64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(self.varint(U64_MARK, "u64")?)
    }

    fn deserialize_u128<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u128(self.varint128("u128")?)
    }

    #[inline]
    fn deserialize_f32<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }

    #[inline]
    fn deserialize_f64<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }

    /// One to four UTF-8 bytes, as many as the first says.
    fn deserialize_char<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let first = self.byte()?;
        let width = match first {
            0x00..=0x7f => return visitor.visit_char(char::from(first)),
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => {
                return Err(Error::new(format_args!(
                    "invalid char lead byte {first:#x}"
                )));
            }
        };
        let more = self.rest().get(..width - 1).ok_or_else(truncated)?;
        self.pos += width - 1;
        let mut utf8 = [first, 0, 0, 0];
        utf8[1..width].copy_from_slice(more);
        match std::str::from_utf8(&utf8[..width])
            .ok()
            .and_then(|s| s.chars().next())
        {
            Some(c) => visitor.visit_char(c),
            None => Err(Error::new(format_args!(
                "invalid char encoding {:x?}",
                &utf8[..width]
            ))),
        }
    }

    #[inline]
    fn deserialize_str<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let len = self.len()?;
        match std::str::from_utf8(self.take(len)?) {
            Ok(s) => visitor.visit_borrowed_str(s),
            Err(e) => Err(Error::new(format_args!("a string is not UTF-8: {e}"))),
        }
    }

    /// Borrowed too: the visitor copies the string once into its value,
    /// instead of the decoder filling a buffer of its own first.
    #[inline]
    fn deserialize_string<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    #[inline]
    fn deserialize_bytes<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let len = self.len()?;
        visitor.visit_borrowed_bytes(self.take(len)?)
    }

    /// Borrowed too, as `deserialize_string`.
    #[inline]
    fn deserialize_byte_buf<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => self.nested(|d| visitor.visit_some(d)),
            b => Err(Error::new(format_args!("invalid Option tag {b}"))),
        }
    }

    #[inline]
    fn deserialize_unit<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    #[inline]
    fn deserialize_unit_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.nested(|d| visitor.visit_newtype_struct(d))
    }

    #[inline]
    fn deserialize_seq<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let len = self.len()?;
        self.seq(len, visitor)
    }

    #[inline]
    fn deserialize_tuple<V: de::Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(len, visitor)
    }

    #[inline]
    fn deserialize_tuple_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(len, visitor)
    }

    fn deserialize_map<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let len = self.len()?;
        self.elements(len, |e| visitor.visit_map(e))
    }

    #[inline]
    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(fields.len(), visitor)
    }

    fn deserialize_enum<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.nested(|d| visitor.visit_enum(d))
    }

    fn deserialize_identifier<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(unsupported("an identifier (deserialize_identifier)"))
    }

    fn deserialize_ignored_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(unsupported(
            "a value it is to skip (deserialize_ignored_any)",
        ))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map.
///
/// It decodes them with a decoder of its own, a copy of the one it came
/// from, and hands the position back when it is dropped: a visitor owns
/// its `SeqAccess`, so the compiler knows that nothing the visitor calls
/// (a `Vec`'s growth, say) can change the copy, and keeps its position in
/// a register across the elements of a `Vec<u8>`, instead of storing it
/// after every byte.
struct Elements<'a, 'de, 'b> {
    d: Decoder<'de, 'b>,
    /// Elements (or entries) still to come.
    left: usize,
    /// How much less than `left` the size hint is: what the collection's
    /// claim could not draw from the budget.
    short: usize,
    /// The position of the decoder this one was copied from.
    done: &'a mut usize,
}

impl Drop for Elements<'_, '_, '_> {
    fn drop(&mut self) {
        *self.done = self.d.pos;
    }
}

impl Elements<'_, '_, '_> {
    /// Counts one more element off, or says there are none left.
    #[inline]
    fn took_one(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// What is left of the size hint drawn from the budget: it counts
    /// down with the elements, and is all of them unless the claim was
    /// more than the budget had left.
    #[inline]
    fn hint(&self) -> Option<usize> {
        Some(self.left.saturating_sub(self.short))
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de, '_> {
    type Error = Error;

    #[inline]
    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if !self.took_one() {
            return Ok(None);
        }
        seed.deserialize(&mut self.d).map(Some)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.hint()
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de, '_> {
    type Error = Error;

    #[inline]
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if !self.took_one() {
            return Ok(None);
        }
        seed.deserialize(&mut self.d).map(Some)
    }

    #[inline]
    fn next_value_seed<V: de::DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut self.d)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.hint()
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de, '_> {
    type Error = Error;
    type Variant = Self;

    /// The variant index is a `u32` varint; the enum's own visitor refuses
    /// an index past its last variant.
    fn variant_seed<V: de::DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let index = self.varint(U32_MARK, "variant index")? as u32;
        let v = seed.deserialize(IntoDeserializer::<Error>::into_deserializer(index))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: de::Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        self.seq(len, visitor)
    }

    fn struct_variant<V: de::Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.seq(fields.len(), visitor)
    }
}
