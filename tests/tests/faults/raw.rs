//! A scripted raw-frame peer, in the manner of h2's test support: the test
//! writes the protocol frame by frame (`send_frame`) and reads what the
//! library answers (`recv_frame`, `expect_goodbye`), every read bounded by
//! a timeout. Frames are encoded and decoded with netchan's own
//! [`Frame`] / [`FrameCodec`], so a transcript reads like the wire.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use netchan::proto::frame::{FLAG_END, HEADER_LEN};
use netchan::proto::hello::HELLO_LEN;
use netchan::proto::{ChanId, CodecId, Dir, Frame, FrameCodec, Hello, Kind, PROTOCOL_VERSION};
use netchan::{Config, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

/// The longest any single read or write of the raw peer may take.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// The hello a raw peer sends: default limits, bincode.
pub(crate) fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        codec: CodecId::Bincode,
        max_message_len: 16 << 20,
        max_channels: 1024,
        max_handles: 128,
    }
}

/// The bytes of `frames`, back to back.
pub(crate) fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

/// A bare frame header announcing `len` payload bytes.
pub(crate) fn header(len: u32, kind: Kind, flags: u8, chan: ChanId) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(HEADER_LEN);
    b.put_u32_le(len);
    b.put_u8(kind as u8);
    b.put_u8(flags);
    b.put_u32_le(chan);
    b.to_vec()
}

/// `OPEN` of export `name` carrying `u32`.
pub(crate) fn open(chan: ChanId, dir: Dir, capacity: u32, name: &str) -> Frame {
    Frame::Open {
        chan,
        dir,
        capacity,
        name: name.into(),
        type_name: "u32".into(),
    }
}

/// A whole one-chunk message.
pub(crate) fn data(chan: ChanId, payload: &[u8]) -> Frame {
    Frame::Data {
        chan,
        flags: FLAG_END,
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A raw peer on a loopback TCP connection.
#[derive(Debug)]
pub(crate) struct RawPeer {
    io: TcpStream,
    rd: BytesMut,
    codec: FrameCodec,
    hello_seen: bool,
}

impl RawPeer {
    /// Connects to `addr` (an exporter, a listener).
    pub(crate) async fn connect(addr: SocketAddr) -> RawPeer {
        let io = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("raw connect timed out")
            .expect("raw connect");
        io.set_nodelay(true).expect("nodelay");
        RawPeer::new(io)
    }

    fn new(io: TcpStream) -> RawPeer {
        RawPeer {
            io,
            rd: BytesMut::with_capacity(64 << 10),
            codec: FrameCodec::new(16 << 20),
            hello_seen: false,
        }
    }

    /// A session accepting, over loopback TCP, a connection from a new raw
    /// peer (the raw peer is the dialer: it allocates odd channel ids).
    pub(crate) async fn against(cfg: Config) -> (Session, RawPeer) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (dial, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let dial = dial.expect("connect");
        dial.set_nodelay(true).expect("nodelay");
        let (acc, _) = accepted.expect("accept");
        acc.set_nodelay(true).expect("nodelay");
        (Session::accept_stream(acc, cfg), RawPeer::new(dial))
    }

    /// Exchanges hellos: sends ours, reads and returns the library's.
    pub(crate) async fn handshake(&mut self) -> Hello {
        self.send_raw(&{
            let mut b = BytesMut::new();
            hello().encode(&mut b);
            b.to_vec()
        })
        .await
        .expect("send hello");
        self.recv_hello().await
    }

    /// Reads the library's hello.
    pub(crate) async fn recv_hello(&mut self) -> Hello {
        while self.rd.len() < HELLO_LEN {
            let n = self.fill(STEP).await.expect("read hello");
            assert!(n > 0, "connection ended before the library's hello");
        }
        self.hello_seen = true;
        Hello::decode(&mut self.rd, &hello())
            .expect("the library's hello is valid")
            .expect("a whole hello")
    }

    /// Writes raw bytes. An error is returned, not fatal: the library may
    /// have closed the connection already.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(STEP, self.io.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "raw write timed out (the library stopped reading)",
            )),
        }
    }

    /// Writes one frame; panics if the write fails.
    pub(crate) async fn send_frame(&mut self, f: Frame) {
        self.send_raw(&wire(&[f])).await.expect("send frame");
    }

    /// Writes frames back to back; panics if the write fails.
    pub(crate) async fn send_frames(&mut self, frames: &[Frame]) {
        self.send_raw(&wire(frames)).await.expect("send frames");
    }

    async fn fill(&mut self, limit: Duration) -> std::io::Result<usize> {
        if self.rd.capacity() - self.rd.len() < 4096 {
            self.rd.reserve(64 << 10);
        }
        match tokio::time::timeout(limit, self.io.read_buf(&mut self.rd)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "nothing arrived in time",
            )),
        }
    }

    /// The next frame, `Ok(None)` at end of stream (or a reset), or an
    /// error if nothing arrives within `limit`.
    pub(crate) async fn next_frame_within(
        &mut self,
        limit: Duration,
    ) -> std::io::Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + limit;
        if !self.hello_seen {
            while self.rd.len() < HELLO_LEN {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.fill(left).await {
                    Ok(0) => return Ok(None),
                    Ok(_) => {}
                    Err(e) if is_reset(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            let _ = self.rd.split_to(HELLO_LEN);
            self.hello_seen = true;
        }
        loop {
            match self.codec.decode(&mut self.rd) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => panic!("the library sent a malformed frame: {e}"),
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.fill(left).await {
                Ok(0) => {
                    assert!(
                        self.rd.is_empty(),
                        "the stream ended inside a frame ({} bytes left)",
                        self.rd.len()
                    );
                    return Ok(None);
                }
                Ok(_) => {}
                Err(e) if is_reset(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame, keepalive included; panics at end of stream or
    /// after [`STEP`].
    pub(crate) async fn recv_frame(&mut self) -> Frame {
        match self.next_frame_within(STEP).await {
            Ok(Some(f)) => f,
            Ok(None) => panic!("the connection ended while a frame was expected"),
            Err(e) => panic!("no frame within {STEP:?}: {e}"),
        }
    }

    /// The next frame that is not a PING or PONG.
    pub(crate) async fn recv_non_keepalive(&mut self) -> Frame {
        loop {
            match self.recv_frame().await {
                Frame::Ping(_) | Frame::Pong(_) => {}
                f => return f,
            }
        }
    }

    /// Sends PING `n` and reads until its PONG: proof that the library
    /// read and handled everything sent before. Returns the other frames
    /// read meanwhile (keepalive left out).
    pub(crate) async fn ping_pong(&mut self, n: u64) -> Vec<Frame> {
        self.send_frame(Frame::Ping(n)).await;
        let mut other = Vec::new();
        loop {
            match self.recv_frame().await {
                Frame::Pong(m) if m == n => return other,
                Frame::Ping(_) | Frame::Pong(_) => {}
                f => other.push(f),
            }
        }
    }

    /// Reads (skipping keepalive and any other frames) until a GOODBYE,
    /// then expects the end of stream; returns the goodbye's reason. Fails
    /// if the library closes without a goodbye or takes longer than
    /// `limit`.
    pub(crate) async fn expect_goodbye(&mut self, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        let reason = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_frame_within(left).await {
                Ok(Some(Frame::Goodbye { reason })) => break reason,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the library closed the connection without a goodbye"),
                Err(e) => panic!("no goodbye within {limit:?}: {e}"),
            }
        };
        self.expect_eof(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
        reason
    }

    /// Expects the end of stream within `limit`, nothing but keepalive
    /// frames before it.
    pub(crate) async fn expect_eof(&mut self, limit: Duration) {
        loop {
            match self.next_frame_within(limit).await {
                Ok(None) => return,
                Ok(Some(Frame::Ping(_) | Frame::Pong(_))) => {}
                Ok(Some(f)) => panic!("expected the end of stream, got {f:?}"),
                Err(e) => panic!("the connection was not closed within {limit:?}: {e}"),
            }
        }
    }

    /// Ends our writing side (end of stream, no goodbye).
    pub(crate) async fn shutdown_write(&mut self) {
        let _ = tokio::time::timeout(STEP, self.io.shutdown()).await;
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}
