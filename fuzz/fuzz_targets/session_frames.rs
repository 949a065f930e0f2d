//! A whole session against a peer that speaks frame by frame: the input
//! is a script (see `netchan_fuzz::script`) of peer frames with mostly
//! valid fields (OPEN of the real export names and type names, DATA with
//! real encodings of the representative types and matching handle tables,
//! CREDIT, CLOSE, ...), pauses, and actions of the local program (imports,
//! sends, hang-ups, close, drain), so that the fuzzer reaches deep channel
//! states. The stream moves bytes whole; timers stay idle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netchan_fuzz::harness;
use netchan_fuzz::script::{CfgSel, FramesInput};

fuzz_target!(|input: FramesInput| {
    let mut script = input.0;
    script.cfg = CfgSel(script.cfg.0 & !(CfgSel::KEEPALIVE | CfgSel::HANDSHAKE));
    harness::block_on(harness::run(&script, false));
});
