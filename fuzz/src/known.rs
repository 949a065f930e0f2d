//! Findings reported to netchan and not fixed yet.
//!
//! A fuzz run that stops at the first crash finds nothing new while a
//! known bug is open, so the targets tolerate the findings listed here
//! (each check names its finding) unless `NETCHAN_FUZZ_STRICT` is set.
//! `fuzz/run.sh regress` sets it: the inputs in `fuzz/regressions/` fail
//! until netchan is fixed. Remove an entry (and its tolerance) once fixed.

use std::sync::OnceLock;

/// Whether known findings must fail too.
pub fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("NETCHAN_FUZZ_STRICT").is_some())
}

/// Whether the known finding `id` is tolerated in this run.
pub fn tolerate(id: &str) -> bool {
    !strict() && KNOWN.contains(&id)
}

/// The open findings (see `fuzz/regressions/README.md`).
///
/// F1 to F4 are fixed; their inputs stay in `fuzz/regressions/`.
pub const KNOWN: &[&str] = &[];
