//! Message decoding through a whole session: an accepting session that
//! exports receivers of a recursive enum (`Tree`), nested `Vec`s
//! (`Nested`) and a struct carrying a `Sender<u32>` and a
//! `Receiver<String>` (`Carrier`) reads a valid hello and then the fuzz
//! input as raw bytes, and receives every message (ignoring errors).
//!
//! Input: byte 0 selects the settings (`CfgSel`: codec, small limits,
//! export capacity...), the rest is what the peer sends after its hello.
//! See `harness` for what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netchan_fuzz::harness;

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    // Timer settings are `session_stream`'s business.
    let cfg =
        cfg & !(netchan_fuzz::script::CfgSel::KEEPALIVE | netchan_fuzz::script::CfgSel::HANDSHAKE);
    let script = harness::raw_script(cfg, rest);
    harness::block_on(harness::run(&script, false));
});
