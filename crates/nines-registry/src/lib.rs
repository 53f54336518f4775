//! nines-registry: the service registry. Instances register with a TTL
//! heartbeat or an active HTTP/TCP check; the members check them (each
//! check on one live member, chosen by rendezvous hashing); discovery is
//! served over HTTP (with blocking queries), DNS and a gateway backend
//! source. Everything is kept in the replicated store under
//! `/nines/registry/` and reached only through the etcd v3 API (KV, lease,
//! watch), so the registry is replicated, watched and backed up like any other
//! data, and the same code runs in a member, the CLI and a standalone gateway.

pub mod availability;
pub mod catalog;
pub mod checker;
pub mod dns;
pub mod gateway_report;
pub mod http;
pub mod limits;
pub mod member;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod probe;
pub mod request_buckets;
pub mod resolver;
pub mod store;

pub use catalog::{Catalog, InstanceView};
pub use gateway_report::GatewayReporter;
pub use member::{MemberRegistry, MemberRegistryConfig};
pub use mirror::Mirror;
pub use model::{Instance, Registration, ValidationError};
pub use resolver::RegistryResolver;
pub use store::Registry;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store could not be reached or refused the request.
    #[error("store: {0}")]
    Store(#[from] etcd_client::Error),
    /// The request was invalid; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The instance is not registered.
    #[error("instance {id:?} of service {service:?} is not registered")]
    NotFound {
        /// Service name.
        service: String,
        /// Instance id.
        id: String,
    },
    /// A heartbeat for an instance whose check is not `ttl`.
    #[error("instance {id:?} of service {service:?} has no ttl check")]
    NotTtl {
        /// Service name.
        service: String,
        /// Instance id.
        id: String,
    },
    /// The instance changed while the operation ran; retry.
    #[error("instance {id:?} of service {service:?} changed concurrently; retry")]
    Conflict {
        /// Service name.
        service: String,
        /// Instance id.
        id: String,
    },
    /// A stored record does not parse.
    #[error("stored record {key} is unreadable: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The store did not answer in time.
    #[error("{what} timed out")]
    Timeout {
        /// What timed out.
        what: &'static str,
    },
    /// A socket could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}
