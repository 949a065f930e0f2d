//! The encoder: a serde `Serializer` appending to the transmit buffer.

use bytes::BytesMut;
use serde::Serialize;
use serde::ser;

use super::Error;

/// Largest varint that takes one byte; 251 to 254 mark the wider forms.
pub(super) const SINGLE_BYTE_MAX: u8 = 250;
/// Marks a varint of two more bytes.
pub(super) const U16_MARK: u8 = 251;
/// Marks a varint of four more bytes.
pub(super) const U32_MARK: u8 = 252;
/// Marks a varint of eight more bytes.
pub(super) const U64_MARK: u8 = 253;
/// Marks a varint of sixteen more bytes.
pub(super) const U128_MARK: u8 = 254;

/// Room a sequence or map reserves up front at most, in bytes: its
/// elements take at least a byte each in the common case (`Vec<u8>`), so
/// its length is a good guess, but a long sequence of empty values takes
/// none, and the guess must not become a huge allocation.
const RESERVE_MAX: usize = 1 << 20;

/// Bytes gathered on the stack before they go into the buffer together.
const STAGE: usize = 512;

thread_local! {
    /// The staging area, kept per thread: one on the stack would be
    /// zeroed for every message (`unsafe` code, which could leave it
    /// uninitialised, is not used here), a tenth of the cost of sending a
    /// small one.
    static STAGED: std::cell::RefCell<[u8; STAGE]> = const { std::cell::RefCell::new([0; STAGE]) };
}

/// Appends the encoding of `value` to `dst`. On an error, what was written
/// before it stays in `dst`.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, dst: &mut BytesMut) -> Result<(), Error> {
    STAGED.with(|s| match s.try_borrow_mut() {
        Ok(mut stage) => encode_staged(value, dst, &mut stage),
        // An encoding inside an encoding (a `Serialize` that encodes).
        Err(_) => encode_staged(value, dst, &mut [0; STAGE]),
    })
}

fn encode_staged<T: Serialize + ?Sized>(
    value: &T,
    dst: &mut BytesMut,
    stage: &mut [u8; STAGE],
) -> Result<(), Error> {
    let mut sink = Sink {
        dst,
        stage,
        used: 0,
    };
    let r = value.serialize(Encoder(&mut sink));
    sink.flush();
    r
}

/// The buffer written to, behind a small staging area: `BytesMut` copies
/// every slice it is given with a call to `memcpy`, which would be most of
/// the cost of a `Vec<u8>` written one element at a time. Here a byte is a
/// length check and a store.
struct Sink<'a> {
    dst: &'a mut BytesMut,
    stage: &'a mut [u8; STAGE],
    /// Bytes of `stage` in use, at most `STAGE`.
    used: usize,
}

impl Sink<'_> {
    /// Appends one byte.
    #[inline]
    fn byte(&mut self, b: u8) {
        if self.used >= STAGE {
            // Not `self.flush()`: see `spill`.
            spill(self.dst, self.stage, self.used);
            self.used = 0;
        }
        if let Some(slot) = self.stage.get_mut(self.used) {
            *slot = b;
            self.used += 1;
        }
    }

    /// Appends `bytes`: staged if they fit, else straight into the buffer.
    #[inline]
    fn bytes(&mut self, bytes: &[u8]) {
        let end = self.used + bytes.len();
        match self.stage.get_mut(self.used..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.used = end;
            }
            None => {
                spill(self.dst, self.stage, self.used);
                self.used = 0;
                self.dst.extend_from_slice(bytes);
            }
        }
    }

    /// Moves the staged bytes into the buffer.
    fn flush(&mut self) {
        spill(self.dst, self.stage, self.used);
        self.used = 0;
    }

    /// Makes room for `n` more bytes in the buffer.
    fn reserve(&mut self, n: usize) {
        self.dst.reserve(n.saturating_add(self.used));
    }
}

/// Moves the first `used` staged bytes into the buffer. A free function
/// given the two buffers, called as it is from [`Sink::byte`] and
/// [`Sink::bytes`]: there a call given the sink's address (even through an
/// inlined method) kept its `used` count in memory for the whole of a loop
/// that writes a `Vec<u8>` byte by byte, a store and a dependent load per
/// byte, where it can stay in a register (1.8 times as fast).
#[inline(never)]
fn spill(dst: &mut BytesMut, stage: &[u8; STAGE], used: usize) {
    if let Some(staged) = stage.get(..used) {
        dst.extend_from_slice(staged);
    }
}

/// Writes one value; the compound values hand out a new one per element,
/// writing to the same sink.
struct Encoder<'a, 'b>(&'a mut Sink<'b>);

impl<'b> Encoder<'_, 'b> {
    /// Writes `v` as a varint of at most eight bytes after its marker.
    #[inline]
    fn varint(&mut self, v: u64) {
        if v <= u64::from(SINGLE_BYTE_MAX) {
            self.0.byte(v as u8);
        } else if let Ok(v) = u16::try_from(v) {
            let [a, b] = v.to_le_bytes();
            self.0.bytes(&[U16_MARK, a, b]);
        } else if let Ok(v) = u32::try_from(v) {
            let [a, b, c, d] = v.to_le_bytes();
            self.0.bytes(&[U32_MARK, a, b, c, d]);
        } else {
            self.0.byte(U64_MARK);
            self.0.bytes(&v.to_le_bytes());
        }
    }

    /// Writes `v` as a varint, sixteen bytes after the marker if need be.
    fn varint128(&mut self, v: u128) {
        match u64::try_from(v) {
            Ok(v) => self.varint(v),
            Err(_) => {
                self.0.byte(U128_MARK);
                self.0.bytes(&v.to_le_bytes());
            }
        }
    }

    /// Writes a length: a `usize` is a `u64` on the wire.
    #[inline]
    fn len(&mut self, len: usize) {
        self.varint(len as u64);
    }

    /// The length of a sequence or map, which bincode cannot write without
    /// knowing it first; also reserves room for its elements.
    #[inline]
    fn collection(mut self, len: Option<usize>) -> Result<Self, Error> {
        let Some(len) = len else {
            return Err(Error::new(format_args!(
                "a sequence or map must know its length to be encoded"
            )));
        };
        self.len(len);
        self.0.reserve(len.min(RESERVE_MAX));
        Ok(self)
    }

    /// The encoder of the next element, writing to the same sink.
    #[inline]
    fn next(&mut self) -> Encoder<'_, 'b> {
        Encoder(&mut *self.0)
    }
}

/// Zigzag: 0, -1, 1, -2, … become 0, 1, 2, 3, …, so that small negative
/// numbers take small varints too.
#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

impl ser::Serializer for Encoder<'_, '_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0.byte(u8::from(v));
        Ok(())
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.0.byte(v as u8);
        Ok(())
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(v.into())
    }

    /// Zigzag gives the same number whatever the width it is taken at, and
    /// a varint's form depends only on the number, so `i16` and `i32`
    /// come here too.
    #[inline]
    fn serialize_i64(mut self, v: i64) -> Result<(), Error> {
        self.varint(zigzag(v));
        Ok(())
    }

    fn serialize_i128(mut self, v: i128) -> Result<(), Error> {
        self.varint128(((v << 1) ^ (v >> 127)) as u128);
        Ok(())
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.0.byte(v);
        Ok(())
    }

    #[inline]
    fn serialize_u16(mut self, v: u16) -> Result<(), Error> {
        self.varint(v.into());
        Ok(())
    }

    #[inline]
    fn serialize_u32(mut self, v: u32) -> Result<(), Error> {
        self.varint(v.into());
        Ok(())
    }

    #[inline]
    fn serialize_u64(mut self, v: u64) -> Result<(), Error> {
        self.varint(v);
        Ok(())
    }

    fn serialize_u128(mut self, v: u128) -> Result<(), Error> {
        self.varint128(v);
        Ok(())
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.0.bytes(&v.to_le_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.0.bytes(&v.to_le_bytes());
        Ok(())
    }

    /// Its UTF-8 bytes, one to four, with no length.
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), Error> {
        let mut utf8 = [0; 4];
        self.0.bytes(v.encode_utf8(&mut utf8).as_bytes());
        Ok(())
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.serialize_bytes(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(mut self, v: &[u8]) -> Result<(), Error> {
        self.len(v.len());
        self.0.bytes(v);
        Ok(())
    }

    #[inline]
    fn serialize_none(self) -> Result<(), Error> {
        self.0.byte(0);
        Ok(())
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.0.byte(1);
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(
        mut self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
    ) -> Result<(), Error> {
        self.varint(variant_index.into());
        Ok(())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.varint(variant_index.into());
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        self.collection(len)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.varint(variant_index.into());
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
        self.collection(len)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        variant_index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, Error> {
        self.varint(variant_index.into());
        Ok(self)
    }

    /// The format carries no field names or type tags, so types with a
    /// compact binary form use it (an IP address as its bytes, not text).
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The compound values: each element is written after the last, with
/// nothing between them.
macro_rules! compound {
    ($($trait:ident :: $method:ident ($($key:ident: $kty:ty)?);)*) => {$(
        impl ser::$trait for Encoder<'_, '_> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: $kty,)? value: &T) -> Result<(), Error> {
                $(let _ = $key;)?
                value.serialize(self.next())
            }

            #[inline]
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element();
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(key: &'static str);
    SerializeStructVariant::serialize_field(key: &'static str);
}

impl ser::SerializeMap for Encoder<'_, '_> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        key.serialize(self.next())
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(self.next())
    }

    #[inline]
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}
