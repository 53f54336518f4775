//! [`MemberRegistry`]: the registry as a member runs it: a mirror of the
//! registry over the member's own client URL, the checker, the DNS server
//! and the HTTP routes (merged into the member's HTTP API by the caller).
//! Everything stops when it is dropped.

use std::net::SocketAddr;

use axum::Router;

use crate::checker::Checker;
use crate::dns::{DnsHandler, DnsServer};
use crate::mirror::Mirror;
use crate::store::Registry;
use crate::RegistryError;

/// How a member runs its registry.
#[derive(Debug, Clone)]
pub struct MemberRegistryConfig {
    /// The member's name (its checker's name).
    pub name: String,
    /// The member's client (gRPC) address, which the registry talks to.
    pub client_addr: SocketAddr,
    /// Where DNS is served; `None` for no DNS.
    pub dns_addr: Option<SocketAddr>,
    /// Whether failing to bind DNS is an error (an explicit `--dns-addr`)
    /// or only a warning (the default address, which several members on
    /// one machine cannot all have).
    pub dns_required: bool,
    /// TTL of DNS answers, in seconds.
    pub dns_ttl_secs: u32,
}

/// The registry parts of a running member.
pub struct MemberRegistry {
    router: Router,
    registry: Registry,
    mirror: Mirror,
    dns: Option<DnsServer>,
    _checker: Checker,
    _availability: crate::availability::Recorder,
}

impl MemberRegistry {
    /// Binds DNS and starts following the registry. The store connection is
    /// lazy, so this may run before the member's client listener serves.
    pub async fn start(config: MemberRegistryConfig) -> Result<MemberRegistry, RegistryError> {
        let registry = Registry::connect(&[format!("http://{}", config.client_addr)]).await?;
        let mirror = Mirror::spawn(registry.clone());
        let dns = match config.dns_addr {
            None => None,
            Some(addr) => {
                let handler = DnsHandler::new(mirror.subscribe(), config.dns_ttl_secs);
                match crate::dns::serve(addr, handler).await {
                    Ok(server) => Some(server),
                    Err(error) if !config.dns_required => {
                        tracing::warn!(%error, "registry DNS not served");
                        None
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let dns_addr = dns.as_ref().map(|d| d.addr);
        if let Some(addr) = dns_addr {
            tracing::info!(%addr, "registry DNS serving");
        }
        let checker = Checker::spawn(config.name.clone(), registry.clone(), mirror.subscribe());
        let availability =
            crate::availability::Recorder::spawn(registry.clone(), mirror.subscribe());
        let availability_routes = crate::availability::router(registry.clone())
            .merge(crate::gateway_report::router(registry.clone()));
        let api =
            crate::http::Api::new(registry.clone(), mirror.subscribe(), config.name, dns_addr);
        Ok(MemberRegistry {
            router: crate::http::router(api).merge(availability_routes),
            registry,
            mirror,
            dns,
            _checker: checker,
            _availability: availability,
        })
    }

    /// The HTTP routes to merge into the member's API.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The address DNS serves on, if it does.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().map(|d| d.addr)
    }

    /// The registry handle over the member's own client URL.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    /// The local mirror of the registry.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// The registry's figures for the member's `/metrics`.
    pub fn metrics_collector(&self) -> crate::metrics::RegistryCollector {
        crate::metrics::RegistryCollector::new(self.mirror.subscribe())
    }
}
