//! Message types shared by netchan, tarpc and remoc, so every contender
//! moves the same values.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A one-way message: 32 bytes, the first 8 its sequence number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Small32 {
    #[serde(with = "serde_bytes")]
    pub(crate) data: [u8; 32],
}

impl Small32 {
    pub(crate) fn new(seq: u64) -> Small32 {
        let mut data = [0x5a; 32];
        data[..8].copy_from_slice(&seq.to_le_bytes());
        Small32 { data }
    }

    pub(crate) fn seq(&self) -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.data[..8]);
        u64::from_le_bytes(b)
    }
}

/// A large one-way message. The payload is shared (`Bytes`) on the
/// sending side, so no contender pays for filling it per message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Big {
    pub(crate) seq: u64,
    pub(crate) data: Bytes,
}

/// A large one-way message as users write it: a plain `Vec<u8>`, no
/// `serde_bytes` (serde sees a sequence of `u8`). Each contender clones
/// one prepared vector per message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BigVec {
    pub(crate) seq: u64,
    pub(crate) data: Vec<u8>,
}

/// A timestamped small message for the head-of-line workload.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub(crate) seq: u64,
    /// `Ctl::now_ns` when sent.
    pub(crate) sent_ns: u64,
}

/// Requests of the hand-written netchan service.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Req {
    Small(u64),
    Echo(Bytes),
    /// A plain `Vec<u8>` (the file-share `read` shape).
    EchoVec(Vec<u8>),
}

/// Responses of the hand-written netchan service.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Resp {
    Small(u64),
    Echo(Bytes),
    EchoVec(Vec<u8>),
}
