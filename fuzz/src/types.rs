//! Representative message types, the names they are exported under, and
//! encoders that write their wire form without a session.

use netchan::proto::CodecId;
use serde::{Deserialize, Serialize};

/// A recursive enum. `Wrap` costs one byte per level on the wire (in both
/// codecs), so a message of `n` bytes can nest about `n` levels deep.
/// Decoding nests as deep as the input says (finding F3, fixed: it used to
/// overflow the receiving thread's stack); dropping a deep value recursed
/// as deep (finding F4, fixed: values nest at most 1,024 levels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    /// A leaf.
    Leaf(u32),
    /// One child.
    Wrap(Box<Tree>),
    /// Two children.
    Node(Box<Tree>, Box<Tree>),
    /// Any number of children.
    List(Vec<Tree>),
    /// Text.
    Text(String),
}

/// Nested `Vec`s, with tuples, options and strings inside.
pub type Nested = Vec<Vec<(u8, Vec<i64>, Option<String>)>>;

/// A message carrying channel handles.
#[derive(Debug, Serialize, Deserialize)]
pub struct Carrier {
    /// Any number.
    pub id: u64,
    /// Where to answer.
    pub reply: netchan::Sender<u32>,
    /// A stream of text from the peer.
    pub feed: netchan::Receiver<String>,
    /// Sometimes a second sender.
    pub extra: Option<netchan::Sender<u32>>,
}

/// [`Carrier`] as it is on the wire: each handle is its `u32` index in the
/// message's handle table (both codecs write a newtype struct as its
/// content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarrierWire {
    /// [`Carrier::id`].
    pub id: u64,
    /// Handle-table index of [`Carrier::reply`].
    pub reply: u32,
    /// Handle-table index of [`Carrier::feed`].
    pub feed: u32,
    /// Handle-table index of [`Carrier::extra`].
    pub extra: Option<u32>,
}

/// Exported receiver of [`Tree`]s.
pub const TREE: &str = "tree";
/// Exported receiver of [`Nested`].
pub const NESTED: &str = "nested";
/// Exported receiver of [`Carrier`]s.
pub const CARRIER: &str = "carrier";
/// Exported sender of `u32`s.
pub const OUT: &str = "out";
/// Names the local side imports from the peer.
pub const PEER_OUT: &str = "peer_out";
/// See [`PEER_OUT`].
pub const PEER_IN: &str = "peer_in";
/// See [`PEER_OUT`].
pub const PEER_TREE: &str = "peer_tree";
/// See [`PEER_OUT`].
pub const PEER_CARRIER: &str = "peer_carrier";

/// Export names the fuzz peer may ask for, by index.
pub const NAMES: &[&str] = &[
    TREE,
    NESTED,
    CARRIER,
    OUT,
    PEER_OUT,
    PEER_IN,
    PEER_TREE,
    PEER_CARRIER,
    "",
    "nope",
];

/// Type names (as netchan compares them), by index.
pub fn type_names() -> Vec<String> {
    vec![
        type_name::<Tree>(),
        type_name::<Nested>(),
        type_name::<Carrier>(),
        type_name::<u32>(),
        type_name::<String>(),
        "Vec<Tree>".to_string(),
    ]
}

/// netchan's type name for `T`: `std::any::type_name` without module
/// paths, as netchan compares it.
pub fn type_name<T: ?Sized>() -> String {
    netchan::__private::type_name::<T>()
}

/// Encodes `value` as netchan would with `codec`.
pub fn encode<T: Serialize>(codec: CodecId, value: &T) -> Vec<u8> {
    match codec {
        CodecId::Bincode => {
            bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
        }
        CodecId::Postcard => postcard::to_stdvec(value).unwrap_or_default(),
    }
}

/// The wire form of a [`Tree`] nested `depth` levels deep (`Wrap` around
/// `Wrap` … around `Leaf(0)`), written without recursion. Identical in
/// bincode and postcard: a one-byte variant index per level.
pub fn deep_tree(depth: usize) -> Vec<u8> {
    let mut v = vec![1u8; depth];
    v.extend_from_slice(&[0, 0]);
    v
}

/// A [`Nested`] value whose `Vec`s nest as deep as the type allows, with a
/// length prefix that claims `claim` elements of the innermost `Vec`.
pub fn nested_claiming(codec: CodecId, claim: u32) -> Vec<u8> {
    // outer len 1, inner len 1, u8, Vec<i64> len = claim (varint), no data.
    let mut v = vec![1u8, 1, 7];
    match codec {
        CodecId::Bincode => {
            // bincode varint: < 251 one byte, else 251 + u16 / 252 + u32.
            if claim < 251 {
                v.push(claim as u8);
            } else if claim <= u16::MAX as u32 {
                v.push(251);
                v.extend_from_slice(&(claim as u16).to_le_bytes());
            } else {
                v.push(252);
                v.extend_from_slice(&claim.to_le_bytes());
            }
        }
        CodecId::Postcard => {
            let mut c = claim;
            loop {
                let b = (c & 0x7f) as u8;
                c >>= 7;
                if c == 0 {
                    v.push(b);
                    break;
                }
                v.push(b | 0x80);
            }
        }
    }
    v
}
