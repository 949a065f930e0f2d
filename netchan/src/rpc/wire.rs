//! Messages of the RPC channels.

use serde::{Deserialize, Serialize};

use crate::Sender;

/// Client to server, on the calls channel.
#[derive(Serialize, Deserialize)]
#[serde(bound = "Req: crate::Message, Resp: crate::Message")]
pub(crate) enum ToServer<Req, Resp> {
    /// First message: where replies go.
    Hello { replies: Sender<Reply<Resp>> },
    /// A call; `deadline_ms` is the time left when it was sent;
    /// `traceparent` the caller's W3C trace context, sent by peers built
    /// with the feature `trace-context` (the field is there in every
    /// build, so peers built with and without it understand each other).
    Call {
        id: u64,
        deadline_ms: Option<u64>,
        traceparent: Option<String>,
        request: Req,
    },
    /// The caller gave up on `id`.
    Cancel { id: u64 },
}

/// Server to client, on the replies channel.
#[derive(Serialize, Deserialize)]
#[serde(bound = "Resp: crate::Message")]
pub(crate) struct Reply<Resp> {
    pub(crate) id: u64,
    pub(crate) result: Result<Resp, Failure>,
}

/// Why a call failed on the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Failure {
    Timeout,
    Remote(String),
    Codec(String),
}
