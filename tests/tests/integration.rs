//! netchan's integration tests, one binary with a module per area.
//!
//! Every semantic promised in DESIGN.md ("Semantics users can rely on") is
//! a scenario written once, generic over a [`support::Transport`], and run
//! over both the in-memory pair and real TCP on 127.0.0.1. Every wait is
//! bounded, so a hang fails instead of blocking the suite.

#[macro_use]
#[path = "integration/support.rs"]
mod support;

#[path = "integration/batching.rs"]
mod batching;
#[path = "integration/channel_semantics.rs"]
mod channel_semantics;
#[path = "integration/cluster.rs"]
mod cluster;
#[path = "integration/errors.rs"]
mod errors;
#[path = "integration/export_import.rs"]
mod export_import;
#[path = "integration/go_semantics.rs"]
mod go_semantics;
#[path = "integration/handles.rs"]
mod handles;
#[path = "integration/hostile.rs"]
mod hostile;
#[path = "integration/lifecycle.rs"]
mod lifecycle;
#[path = "integration/logging.rs"]
mod logging;
#[path = "integration/pipe.rs"]
mod pipe;
#[path = "integration/stats.rs"]
mod stats;
