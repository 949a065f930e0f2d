//! The names most programs need, in one import: `use netchan::prelude::*;`.
//!
//! Besides netchan's common types, it brings the `futures` traits that work
//! on a [`Receiver`], which is a [`Stream`] of `Result<T, RecvError>`:
//! [`StreamExt`] (`next`, `map`, `filter`, `for_each`, …) and
//! [`TryStreamExt`] (`try_next`, `try_collect`, …); and those that work on a
//! [`Sender`], which is a [`Sink`]: [`SinkExt`] (`feed`, `send_all`,
//! `flush`). A program needs no `futures` dependency of its own to use them.
//!
//! `Error` and `Config` are left out, as names a program often has already:
//! write `netchan::Error` and `netchan::Config`.
//!
//! ```
//! use netchan::prelude::*;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let (tx, mut rx) = channel::<u32>(4);
//!     tokio::spawn(async move {
//!         for i in 1..=3 {
//!             if tx.send(i).await.is_err() {
//!                 break;
//!             }
//!         }
//!     }); // the sender is dropped here: the channel closes cleanly
//!
//!     let mut sum = 0;
//!     while let Some(value) = rx.next().await {
//!         sum += value?;
//!     }
//!     assert_eq!(sum, 6);
//!     Ok(())
//! }
//! ```

pub use crate::{
    Exporter, Message, Pipe, Receiver, RecvError, RpcError, SendError, Sender, Session,
    TryRecvError, TrySendError, channel, pipe,
};
pub use futures::{Sink, SinkExt, Stream, StreamExt, TryStreamExt};
