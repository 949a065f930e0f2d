//! [`Pipe`]: a bidirectional byte stream over two channels, with tokio's
//! `AsyncRead` and `AsyncWrite`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::channel::{Receiver, Sender, channel};
use crate::error::{RecvError, SendError, SendErrorKind};

/// Bytes carried by one message of a pipe: large writes are cut into
/// pieces of this size, or smaller ones where the peer accepts less (a
/// `Pipe`'s `piece`). The connection splits each into chunks of its own
/// (64 KiB by default), so a pipe still shares the connection fairly.
const PIPE_CHUNK: usize = 1024 * 1024;
/// Messages buffered per direction.
const PIPE_CAPACITY: usize = 8;
/// What a piece's encoding adds to its bytes at most: the length prefix
/// (a varint of up to 9 bytes in bincode, 10 in postcard).
const PIECE_OVERHEAD: usize = 16;

/// One piece of a pipe's byte stream.
#[derive(Serialize, Deserialize)]
struct Chunk(#[serde(with = "serde_bytes")] Vec<u8>);

/// A write that did not complete at once: `Ok(Some(piece))` when the
/// peer's message limit made it cut its bytes into pieces of `piece`.
type WriteFuture = Pin<Box<dyn Future<Output = io::Result<Option<usize>>> + Send>>;

/// One end of a byte pipe: what is written at one end is read at the
/// other. Each end is tokio `AsyncRead + AsyncWrite`, and may travel inside
/// a message to a peer (it arrives live, bound to the same connection).
///
/// `shutdown()` gives the other end end-of-file after every byte written
/// before it.
///
/// Writes go out as messages of up to 1 MiB, fewer bytes where the peer's
/// [`Config::max_message_len`](crate::Config::max_message_len) is lower:
/// a write of any size succeeds, as on a socket. Each direction buffers
/// up to 8 such messages for a reader that is behind; a writer then waits.
///
/// ```
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let (mut a, mut b) = netchan::pipe();
/// a.write_all(b"hello").await?;
/// a.shutdown().await?;
/// let mut s = String::new();
/// b.read_to_string(&mut s).await?;
/// assert_eq!(s, "hello");
/// # Ok(())
/// # }
/// ```
pub struct Pipe {
    tx: Option<Sender<Chunk>>,
    rx: Receiver<Chunk>,
    unread: Bytes,
    eof: bool,
    writing: Mutex<Option<WriteFuture>>,
    /// The largest piece a write sends as one message: [`PIPE_CHUNK`],
    /// less once the peer refused a piece as larger than its
    /// [`Config::max_message_len`](crate::Config::max_message_len).
    piece: usize,
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("write_closed", &self.tx.is_none())
            .field("read_eof", &self.eof)
            .finish()
    }
}

/// Creates a pipe; both ends are local until one is sent in a message.
pub fn pipe() -> (Pipe, Pipe) {
    let (atx, arx) = channel::<Chunk>(PIPE_CAPACITY);
    let (btx, brx) = channel::<Chunk>(PIPE_CAPACITY);
    (Pipe::new(atx, brx), Pipe::new(btx, arx))
}

impl Pipe {
    fn new(tx: Sender<Chunk>, rx: Receiver<Chunk>) -> Pipe {
        Pipe {
            tx: Some(tx),
            rx,
            unread: Bytes::new(),
            eof: false,
            writing: Mutex::new(None),
            piece: PIPE_CHUNK,
        }
    }

    fn poll_pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let slot = self.writing.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(fut) = slot.as_mut() {
            let r = std::task::ready!(fut.as_mut().poll(cx));
            *slot = None;
            self.wrote(r)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes note of a finished write: the piece size the peer accepts.
    fn wrote(&mut self, r: io::Result<Option<usize>>) -> io::Result<()> {
        if let Some(piece) = r? {
            self.piece = piece;
        }
        Ok(())
    }
}

/// Sends `bytes` as one message; if the peer refuses it as larger than its
/// message limit, as pieces small enough for that limit, in order.
/// `Ok(Some(piece))` gives the size of those pieces.
async fn write_piece(tx: Sender<Chunk>, bytes: Vec<u8>) -> io::Result<Option<usize>> {
    let (bytes, limit) = match tx.send(Chunk(bytes)).await {
        Ok(()) => return Ok(None),
        Err(SendError(Chunk(bytes), SendErrorKind::TooLarge { limit, .. })) => (bytes, limit),
        Err(SendError(_, why)) => return Err(write_error(why)),
    };
    let piece = limit.saturating_sub(PIECE_OVERHEAD).max(1);
    for part in bytes.chunks(piece) {
        tx.send(Chunk(part.to_vec()))
            .await
            .map_err(|SendError(_, why)| write_error(why))?;
    }
    Ok(Some(piece))
}

/// The I/O error for a write the pipe's channel refused.
fn write_error(why: SendErrorKind) -> io::Error {
    match why {
        SendErrorKind::Closed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed by the other end")
        }
        SendErrorKind::ConnectionLost(e) => io::Error::new(io::ErrorKind::BrokenPipe, e),
        other => io::Error::other(other.to_string()),
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.unread.is_empty() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(Chunk(v)))) => this.unread = Bytes::from(v),
                Poll::Ready(Ok(None)) => this.eof = true,
                Poll::Ready(Err(RecvError::Decode(e))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)));
                }
            }
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_pending_write(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let Some(tx) = this.tx.clone() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(this.piece);
        let mut fut: WriteFuture = Box::pin(write_piece(tx, buf[..n].to_vec()));
        // Most writes complete at once; otherwise the bytes are accepted
        // and the send finishes on the next write, flush or shutdown.
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => this.wrote(r)?,
            Poll::Pending => {
                *this.writing.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(fut);
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_pending_write(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_pending_write(cx) {
            Poll::Ready(Ok(())) => {
                this.tx = None;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl Serialize for Pipe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| serde::ser::Error::custom("cannot send a pipe after shutdown"))?;
        (tx, &self.rx).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pipe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pipe, D::Error> {
        let (tx, rx) = <(Sender<Chunk>, Receiver<Chunk>)>::deserialize(d)?;
        Ok(Pipe::new(tx, rx))
    }
}
