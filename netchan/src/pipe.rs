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
use crate::error::{RecvError, SendError};

/// Bytes carried by one message of a pipe: large writes are cut into
/// pieces of this size. The connection splits each into chunks of its own
/// (64 KiB by default), so a pipe still shares the connection fairly.
const PIPE_CHUNK: usize = 256 * 1024;
/// Messages buffered per direction.
const PIPE_CAPACITY: usize = 8;

/// One piece of a pipe's byte stream.
#[derive(Serialize, Deserialize)]
struct Chunk(#[serde(with = "serde_bytes")] Vec<u8>);

type WriteFuture = Pin<Box<dyn Future<Output = Result<(), SendError<Chunk>>> + Send>>;

/// One end of a byte pipe: what is written at one end is read at the
/// other. Each end is tokio `AsyncRead + AsyncWrite`, and may travel inside
/// a message to a peer (it arrives live, bound to the same connection).
///
/// `shutdown()` gives the other end end-of-file after every byte written
/// before it.
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
        }
    }

    fn poll_pending_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let slot = self.writing.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(fut) = slot.as_mut() {
            let r = fut.as_mut().poll(cx);
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    *slot = None;
                    if r.is_err() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "pipe closed by the other end",
                        )));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
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
        let n = buf.len().min(PIPE_CHUNK);
        let chunk = Chunk(buf[..n].to_vec());
        let mut fut: WriteFuture = Box::pin(async move { tx.send(chunk).await });
        // Most writes complete at once; otherwise the bytes are accepted
        // and the send finishes on the next write, flush or shutdown.
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            if r.is_err() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "pipe closed by the other end",
                )));
            }
        } else {
            *this.writing.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(fut);
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
