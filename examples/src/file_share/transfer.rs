//! The reading end of a [`Download`]: bytes from the pipe to any writer,
//! a chunk at a time, checked against the size announced.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Download;

/// Bytes read from the pipe at a time.
const CHUNK: usize = 64 * 1024;

/// How long a transfer may go without a byte before it is given up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A transfer that went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written, equal to the size announced.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// The last byte, if any (whether a printed file ended its line).
    pub last: Option<u8>,
}

/// Copies the bytes of `download` to `out` (flushed at the end), calling
/// `progress` with the running total after each chunk. Fails, saying how
/// far it got, if the pipe fails, ends before the announced size, brings
/// more than it, stalls for 30 s, or `out` cannot take the bytes.
pub async fn receive<W: AsyncWrite + Unpin>(
    download: Download,
    out: &mut W,
    mut progress: impl FnMut(u64),
) -> Result<Received, String> {
    let Download { size, mut bytes } = download;
    let start = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut last = None;
    loop {
        let n = read_some(&mut bytes, &mut buf)
            .await
            .map_err(|e| format!("transfer failed after {total} of {size} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Err(format!(
                "the sender sent more than the {size} bytes it announced"
            ));
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| format!("cannot write what was received: {e}"))?;
        last = Some(buf[n - 1]);
        progress(total);
    }
    out.flush()
        .await
        .map_err(|e| format!("cannot write what was received: {e}"))?;
    if total < size {
        return Err(format!(
            "transfer cut short: {total} of {size} bytes arrived"
        ));
    }
    Ok(Received {
        bytes: total,
        elapsed: start.elapsed(),
        last,
    })
}

async fn read_some(from: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<usize, String> {
    match tokio::time::timeout(STALL_TIMEOUT, from.read(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no data for {STALL_TIMEOUT:?}")),
    }
}
