//! End-to-end tests: the real gateway (in process, or the binary itself) between real
//! HTTP clients and capturing receivers on loopback, over a real SQLite file.

mod attacks;
mod calls;
mod cli;
mod cluster;
mod console;
mod control;
mod crash;
mod delivery;
mod deploy;
mod downstream;
mod errors;
mod health;
mod hostile;
mod isolation;
mod operate;
mod ordering_model;
mod outage;
mod providers;
mod respond;
mod seeds;
mod soak;
mod store;
mod support;
mod templates;
mod tls;
mod trust;
