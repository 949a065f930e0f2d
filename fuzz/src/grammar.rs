//! A tiny byte grammar shared by the structured targets.
//!
//! The structured inputs implement [`arbitrary::Arbitrary`] by hand on top
//! of [`Reader`], which only ever takes whole bytes from the front of the
//! input (integers little-endian, missing bytes read as zero). [`Writer`]
//! is its exact inverse, so `examples/gen_corpus.rs` can write seeds that
//! decode to the scripts it means, and the fuzzer's mutations stay local:
//! flipping one byte changes one field or one opcode.

use arbitrary::Unstructured;

/// Reads grammar fields from the front of a fuzz input.
pub struct Reader<'a, 'b> {
    u: &'b mut Unstructured<'a>,
}

impl<'a, 'b> Reader<'a, 'b> {
    /// Reads from `u`.
    pub fn new(u: &'b mut Unstructured<'a>) -> Self {
        Reader { u }
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.u.len()
    }

    /// One byte (0 once the input is used up).
    pub fn u8(&mut self) -> u8 {
        self.u.bytes(1).map_or(0, |b| b[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.u.len());
        self.u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Bytes prefixed by a one-byte length.
    pub fn bytes8(&mut self) -> Vec<u8> {
        let n = self.u8() as usize;
        self.bytes(n)
    }

    /// Bytes prefixed by a two-byte length.
    pub fn bytes16(&mut self) -> Vec<u8> {
        let n = self.u16() as usize;
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> Vec<u8> {
        let n = self.u.len();
        self.bytes(n)
    }
}

/// Writes grammar fields; the inverse of [`Reader`].
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// One byte.
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.out.push(b);
        self
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Raw bytes (no length).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// Bytes prefixed by a one-byte length (at most 255 bytes).
    pub fn bytes8(&mut self, b: &[u8]) -> &mut Self {
        let b = &b[..b.len().min(255)];
        self.u8(b.len() as u8).bytes(b)
    }

    /// Bytes prefixed by a two-byte length (at most 65,535 bytes).
    pub fn bytes16(&mut self, b: &[u8]) -> &mut Self {
        let b = &b[..b.len().min(65535)];
        self.u16(b.len() as u16).bytes(b)
    }
}
