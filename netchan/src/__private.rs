//! Paths used by code that `#[netchan::service]` generates. Not public API:
//! anything here may change in any release.

pub use crate::codec::type_name;
pub use crate::rpc::{BoxFuture, CallPath, CallTarget, Client, RemoteCalls, Service};
pub use crate::{Message, RpcError, Session};
pub use serde;
