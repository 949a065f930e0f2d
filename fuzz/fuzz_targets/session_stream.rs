//! A whole session over an in-memory stream whose reads and writes the
//! fuzz input splits (chunk sizes), pauses (`Pending` then an immediate
//! wake, or a real timer of a few milliseconds) and fails (I/O errors,
//! zero-length writes), with either side (dialer or acceptor), a valid
//! hello or none, short keepalive, handshake and close timeouts, and the
//! same scripted peer and local program as `session_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netchan_fuzz::harness;
use netchan_fuzz::script::StreamInput;

fuzz_target!(|input: StreamInput| {
    harness::block_on(harness::run(&input.0, true));
});
