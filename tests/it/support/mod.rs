pub mod gateway;
pub mod oracle;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod skip;

pub use gateway::Gateway;
pub use receiver::{Receiver, Reply};

/// A long-form knob: the number in environment variable `name`, else the CI form's `default`.
pub fn long_form(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seeds");

pub fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SEEDS}/{name}")).unwrap()
}
