//! Tests that need something from the machine (PostgreSQL's binaries, systemd-analyze,
//! permission to mount a tmpfs) fail when it is missing, with what to install — unless
//! skipping it is asked for by name: `SWITCHBOARD_SKIP=postgres,systemd,mount cargo test`.
//! A green run therefore never hides a suite that did not run; each skip is printed and
//! counted in `target/tmp/skipped.txt`.

use std::io::Write;

/// Returns true (the caller returns: skipped) when `what` is listed in `SWITCHBOARD_SKIP`;
/// otherwise fails the test with `why` and `remedy`.
pub fn unavailable(what: &str, why: &str, remedy: &str) -> bool {
    let asked = std::env::var("SWITCHBOARD_SKIP").unwrap_or_default();
    if asked.split(',').any(|s| s.trim() == what) {
        eprintln!("\n*** SKIPPED ({what}, as SWITCHBOARD_SKIP asks): {why} ***\n");
        let path = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped.txt");
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{what}: {why}");
        }
        return true;
    }
    panic!("{why}. {remedy} — or skip these tests explicitly with SWITCHBOARD_SKIP={what}");
}
