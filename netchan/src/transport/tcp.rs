//! TCP: no Nagle (the writer batches frames itself), and TCP keepalive as a
//! second line behind the protocol's own pings.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::Config;
use crate::error::Error;

pub(crate) fn tune(stream: &TcpStream, cfg: &Config) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    let ka =
        socket2::TcpKeepalive::new().with_time(cfg.limits.keepalive.max(Duration::from_secs(1)));
    sock.set_tcp_keepalive(&ka)?;
    Ok(())
}
