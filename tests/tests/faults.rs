//! Fault injection: real sessions through a chaos proxy that cuts,
//! half-closes, stalls, throttles, flips and injects, and a scripted raw
//! peer that breaks the protocol frame by frame.
//!
//! Every scenario checks the same promises (DESIGN.md, "Semantics" and
//! "Bad input"): no panic; both sides fail with a typed error within the
//! configured timeout plus a margin; every pending send, receive and call
//! resolves; every unsent value comes back to its sender; what arrived is
//! a prefix of what was sent; and the test runtime's task count returns
//! to where it was. Heap growth under attack is measured separately, in
//! `memory.rs`, which needs a counting allocator of its own.
//!
//! Loopback only; every wait is bounded.

#[path = "faults/chaos.rs"]
mod chaos;
#[path = "faults/common.rs"]
mod common;
#[path = "faults/raw.rs"]
mod raw;

#[path = "faults/cut.rs"]
mod cut;
#[path = "faults/flow.rs"]
mod flow;
#[path = "faults/handshake.rs"]
mod handshake;
#[path = "faults/hostile.rs"]
mod hostile;
#[path = "faults/limits.rs"]
mod limits;
#[path = "faults/stall.rs"]
mod stall;
