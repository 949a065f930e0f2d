//! What a resumable session keeps to replay after a broken link: the
//! bytes of its own frame stream that the peer has not acknowledged.
//!
//! The frame stream (every frame after the hello, except `ACK`s) is
//! numbered by byte offset from 0, across every link the session ran
//! over. Each side counts the bytes of whole frames it received and tells
//! the peer with `ACK` (and in the resume hello); the sender drops what
//! was acknowledged and, on resume, writes again from the peer's position.
//!
//! The log holds the segments exactly as they were handed to the
//! transport (`Bytes` shared with the transmit buffer and with large
//! messages, so keeping them copies nothing). Knows nothing of frames or
//! channels.

use std::collections::VecDeque;

use bytes::Bytes;

/// The unacknowledged tail of this side's frame stream.
#[derive(Debug, Default)]
pub(super) struct Replay {
    segs: VecDeque<Bytes>,
    /// Stream offset of the first byte of `segs[0]`.
    base: u64,
    /// Stream offset just after the last byte handed out.
    end: u64,
}

impl Replay {
    /// Records a segment handed to the transport.
    pub(super) fn push(&mut self, seg: Bytes) {
        if seg.is_empty() {
            return;
        }
        self.end += seg.len() as u64;
        self.segs.push_back(seg);
    }

    /// Bytes held for replay.
    pub(super) fn held(&self) -> u64 {
        self.end - self.base
    }

    /// The peer received everything before `upto`: drop it. False if
    /// `upto` lies beyond what was sent (the peer is confused or lying).
    pub(super) fn ack(&mut self, upto: u64) -> bool {
        if upto > self.end {
            return false;
        }
        while self.base < upto {
            let Some(front) = self.segs.front_mut() else {
                break;
            };
            let n = front.len() as u64;
            if self.base + n <= upto {
                self.base += n;
                self.segs.pop_front();
            } else {
                let cut = (upto - self.base) as usize;
                let _ = front.split_to(cut);
                self.base = upto;
            }
        }
        true
    }

    /// The segments from offset `from` to the end, to write again after a
    /// resume; `None` if `from` is outside what is held.
    pub(super) fn since(&self, from: u64) -> Option<Vec<Bytes>> {
        if from < self.base || from > self.end {
            return None;
        }
        let mut out = Vec::new();
        let mut at = self.base;
        for s in &self.segs {
            let n = s.len() as u64;
            if at + n > from {
                let skip = from.saturating_sub(at) as usize;
                out.push(s.slice(skip..));
            }
            at += n;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(v: Vec<Bytes>) -> Vec<u8> {
        v.into_iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn acknowledged_bytes_are_dropped_and_the_rest_replays_from_any_offset() {
        let mut r = Replay::default();
        r.push(Bytes::from_static(b"abc"));
        r.push(Bytes::from_static(b"defg"));
        assert_eq!(r.held(), 7);
        assert!(r.ack(2));
        assert_eq!(r.held(), 5);
        assert_eq!(joined(r.since(4).unwrap()), b"efg");
        assert_eq!(joined(r.since(2).unwrap()), b"cdefg");
        assert_eq!(r.since(1), None, "already dropped");
        assert_eq!(joined(r.since(7).unwrap()), b"");
        assert_eq!(r.since(8), None, "never sent");
        assert!(!r.ack(8), "an ack beyond the end is refused");
        assert!(r.ack(7));
        assert_eq!(r.held(), 0);
        assert!(r.ack(3), "an old ack is harmless");
    }
}
