//! Compile tests of `#[netchan::service]`, run with `cargo test -p ui-tests`.
//!
//! * `tests/fail/*.rs`: one case per macro diagnostic, each with the
//!   reviewed `.stderr` beside it (regenerate with `TRYBUILD=overwrite` and
//!   review the diff);
//! * `tests/pass/*.rs`: expansions that must compile without warnings;
//! * `tests/service_lints.rs`: generated code under strict rustc and clippy
//!   lints, and a call over an in-memory session.
