//! Transports: byte streams a session runs over. The protocol and the
//! driver take any `AsyncRead + AsyncWrite`; this module only holds what is
//! specific to each kind of stream.

pub(crate) mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
