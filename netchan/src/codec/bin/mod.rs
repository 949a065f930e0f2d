//! bincode 2's standard configuration, encoded and decoded straight
//! through serde.
//!
//! The wire format is byte for byte what `bincode::serde` writes with
//! `bincode::config::standard()` (little-endian, variable-length integers;
//! docs/PROTOCOL.md): unsigned integers below 251 take one byte, larger
//! ones a marker (251, 252, 253, 254) and 2, 4, 8 or 16 little-endian
//! bytes; signed ones are zigzagged first; `u8`, `i8` and `bool` are one
//! raw byte; floats are little-endian; a `char` is its UTF-8 bytes; strings,
//! byte strings, sequences and maps start with their length; an `Option`
//! with a tag byte; an enum with its variant index; structs and tuples are
//! their fields in order.
//!
//! Doing it here rather than through the `bincode` crate's serde layer
//! makes each element of a `Vec<u8>` one capacity check and one store when
//! encoding, one bounds check and one load when decoding, and builds the
//! decoder's guarantees in instead of wrapping every value: a string or
//! byte string longer than what is left of the message is refused before
//! anything is allocated, collections' size hints draw on one budget the
//! size of the message ([`super::hint::Bounds`]), values nest at most
//! [`super::hint::MAX_DEPTH`] levels (growing the stack on the heap as they
//! go), and trailing bytes are refused.

use std::fmt;

mod de;
mod ser;
#[cfg(test)]
mod tests;

/// Why a value could not be encoded or decoded. A boxed message keeps the
/// `Result` of every element small.
#[derive(Debug)]
pub(crate) struct Error(Box<str>);

impl Error {
    /// An error saying `msg`. Never on a path that succeeds, so kept out
    /// of line.
    #[cold]
    #[inline(never)]
    fn new(msg: fmt::Arguments<'_>) -> Error {
        Error(msg.to_string().into_boxed_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error::new(format_args!("{msg}"))
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error::new(format_args!("{msg}"))
    }
}

pub(crate) use de::decode;
pub(crate) use ser::encode;
