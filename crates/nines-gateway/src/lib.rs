//! nines-gateway: an HTTP and TCP load balancer. It spreads requests over
//! healthy backends, hides a backend's death from clients with health checks,
//! passive ejection and retries, and reloads its config without dropping
//! connections. It knows nothing of Raft: backends come from its config or,
//! later, from the registry through [`source::BackendSource`].

pub mod backend;
pub mod balance;
pub mod body;
pub mod config;
pub mod hash;
