//! Integration tests of the gateway with real backend processes on loopback.

mod bad_input;
mod common;
mod failover;
mod features;
mod metrics;
mod reload;
