//! cargo-fuzz target: `checks::redact` on every input (see `daemon/fuzz/checks.rs`).

#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)] // each target uses one of the checks
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::redact(data));
