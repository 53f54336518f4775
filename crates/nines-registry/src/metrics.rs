//! The registry's Prometheus figures, read from the member's catalog mirror
//! when a scrape arrives (nothing is counted on the request path):
//! services, instances by service and state, and the live checkers. The
//! member serves them in its `/metrics` next to its own.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::sync::watch;

use crate::catalog::Catalog;

/// A collector over the catalog mirror.
#[derive(Debug)]
pub struct RegistryCollector {
    catalog: watch::Receiver<Arc<Catalog>>,
}

impl RegistryCollector {
    /// A collector reading `catalog` at each scrape.
    pub fn new(catalog: watch::Receiver<Arc<Catalog>>) -> RegistryCollector {
        RegistryCollector { catalog }
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    // A family without samples is left out, as Prometheus clients do.
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Clone the Arc and let the channel go at once.
        let catalog = self.catalog.borrow().clone();
        let mut instances = Vec::new();
        let mut services = 0;
        for (name, service) in catalog.services() {
            services += 1;
            let (mut passing, mut critical) = (0, 0);
            for (entry, _) in service.registered() {
                if entry.is_healthy() {
                    passing += 1;
                } else {
                    critical += 1;
                }
            }
            for (state, count) in [("passing", passing), ("critical", critical)] {
                instances.push((
                    vec![("service", name.clone()), ("state", state.to_owned())],
                    count,
                ));
            }
        }
        gauges(
            &mut encoder,
            "registry_services",
            "Services with at least one registered instance.",
            &[(Vec::new(), services)],
        )?;
        gauges(
            &mut encoder,
            "registry_instances",
            "Registered instances by service and health state.",
            &instances,
        )?;
        gauges(
            &mut encoder,
            "registry_checkers",
            "Members running checks now.",
            &[(Vec::new(), catalog.checkers().count() as i64)],
        )?;
        gauges(
            &mut encoder,
            "registry_catalog_revision",
            "Store revision this member's registry view reflects.",
            &[(Vec::new(), catalog.revision)],
        )
    }
}
