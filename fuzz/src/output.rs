//! Checks what a netchan side wrote: one valid hello, then well-formed
//! frames, none of them after its own `GOODBYE`.

use bytes::BytesMut;
use netchan::proto::{CodecId, Frame, Hello, PROTOCOL_VERSION};

/// What a side's output held.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Frames written.
    pub frames: usize,
    /// Whether a `GOODBYE` was among them.
    pub goodbye: bool,
}

/// What the checked side promised.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Its codec.
    pub codec: CodecId,
    /// Its `max_message_len`, as announced.
    pub max_message_len: u32,
    /// Its `max_channels`, as announced.
    pub max_channels: u32,
    /// Its `max_handles`, as announced.
    pub max_handles: u32,
    /// Its chunk size: no `DATA` payload may be larger.
    pub chunk_size: usize,
    /// Parity of the ids it allocates (1: odd, dialer; 0: even, acceptor).
    pub parity: u32,
}

/// Checks `out`, everything a side wrote (or the first
/// [`crate::stream::OUT_CAP`] bytes of it). `cut`: the stream failed a
/// write, so the output may end inside a frame (or hold no hello at all).
/// With `hello = false` the output starts after the hello.
pub fn check(out: &[u8], expect: &Expect, cut: bool, hello: bool) -> Result<Summary, String> {
    let mut buf = BytesMut::from(out);
    let mut sum = Summary::default();
    if hello {
        let ours = Hello {
            version: PROTOCOL_VERSION,
            codec: expect.codec,
            max_message_len: expect.max_message_len,
            max_channels: expect.max_channels,
            max_handles: expect.max_handles,
        };
        match Hello::decode(&mut buf, &ours) {
            Ok(Some(h)) if h == ours => {}
            Ok(Some(h)) => return Err(format!("hello {h:?}, expected {ours:?}")),
            Ok(None) if cut || out.len() >= crate::stream::OUT_CAP => return Ok(sum),
            Ok(None) => {
                return Err(format!(
                    "output of {} bytes holds no whole hello",
                    out.len()
                ));
            }
            Err(e) => return Err(format!("own hello does not decode: {e}")),
        }
    }
    loop {
        let at = out.len() - buf.len();
        match Frame::decode(&mut buf, usize::MAX) {
            Ok(None) => {
                if buf.is_empty() || cut || out.len() >= crate::stream::OUT_CAP {
                    return Ok(sum);
                }
                return Err(format!(
                    "output ends inside a frame at byte {at} ({} bytes left)",
                    buf.len()
                ));
            }
            Err(e) => return Err(format!("wrote a malformed frame at byte {at}: {e}")),
            Ok(Some(f)) => {
                if sum.goodbye {
                    return Err(format!("wrote {f:?} at byte {at}, after its own GOODBYE"));
                }
                sum.frames += 1;
                match &f {
                    Frame::Data { payload, .. } if payload.len() > expect.chunk_size => {
                        return Err(format!(
                            "DATA chunk of {} bytes above the chunk size {}",
                            payload.len(),
                            expect.chunk_size
                        ));
                    }
                    Frame::Open { chan, .. } if chan % 2 != expect.parity => {
                        return Err(format!("OPEN with an id {chan} of the peer's parity"));
                    }
                    Frame::Goodbye { .. } => sum.goodbye = true,
                    _ => {}
                }
            }
        }
    }
}
