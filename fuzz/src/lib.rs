//! Shared parts of netchan's fuzz targets: a byte grammar for structured
//! inputs, a scripted peer, an in-memory stream the input splits and
//! pauses, representative message types, a whole-session harness, and an
//! oracle for what a netchan side writes.
//!
//! See `fuzz/README.md` for the targets and how to run them.

pub mod conn_script;
pub mod frames;
pub mod grammar;
pub mod harness;
pub mod known;
pub mod output;
pub mod script;
pub mod stream;
pub mod types;
