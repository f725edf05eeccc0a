pub mod gateway;
pub mod oracle;
pub mod postgres;
pub mod process;
pub mod receiver;

pub use gateway::Gateway;
pub use receiver::{Receiver, Reply};

pub const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seeds");

pub fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SEEDS}/{name}")).unwrap()
}
