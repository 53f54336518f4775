//! The gateway's view of the registry: [`RegistryResolver`] implements
//! nines-gateway's `ServiceResolver`, so a cluster with `service = "NAME"`
//! follows the healthy instances of NAME. Each resolved service gets a task
//! that follows the catalog channel and publishes the backend list (address
//! and weight) whenever it changes, so instances appear, leave and change
//! weight as soon as the member's watch sees it, without a reload. The task
//! ends when the gateway drops every receiver of that list.

use std::sync::Arc;

use nines_gateway::source::{BackendSource, BackendSpec, ServiceResolver};
use tokio::sync::watch;

use crate::catalog::Catalog;

/// Resolves gateway clusters to registry services.
#[derive(Clone)]
pub struct RegistryResolver {
    catalog: watch::Receiver<Arc<Catalog>>,
}

impl RegistryResolver {
    /// A resolver following `catalog` (a [`crate::Mirror`]'s channel).
    pub fn new(catalog: watch::Receiver<Arc<Catalog>>) -> RegistryResolver {
        RegistryResolver { catalog }
    }
}

/// The healthy backends of `service` in `catalog`, in instance id order.
pub fn backends(catalog: &Catalog, service: &str) -> Vec<BackendSpec> {
    catalog.service(service).map_or_else(Vec::new, |s| {
        s.healthy(None)
            .map(|i| BackendSpec {
                addr: i.socket_addr(),
                weight: i.weight.max(1),
            })
            .collect()
    })
}

struct RegistrySource {
    receiver: watch::Receiver<Vec<BackendSpec>>,
}

impl BackendSource for RegistrySource {
    fn subscribe(&self) -> watch::Receiver<Vec<BackendSpec>> {
        self.receiver.clone()
    }
}

impl ServiceResolver for RegistryResolver {
    fn resolve(&self, name: &str) -> Option<Box<dyn BackendSource>> {
        let mut catalog = self.catalog.clone();
        let initial = backends(&catalog.borrow_and_update(), name);
        let (sender, receiver) = watch::channel(initial);
        let service = name.to_string();
        // Needs a runtime: the gateway resolves inside `Gateway::apply`.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = sender.closed() => return,
                    changed = catalog.changed() => if changed.is_err() { return },
                }
                let next = backends(&catalog.borrow_and_update(), &service);
                sender.send_if_modified(|current| {
                    if *current == next {
                        false
                    } else {
                        *current = next;
                        true
                    }
                });
            }
        });
        Some(Box::new(RegistrySource { receiver }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{instance_key, Check, Instance};

    fn put(catalog: &mut Catalog, id: &str, port: u16, weight: u32, revision: i64) {
        let instance = Instance {
            service: "web".into(),
            id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            port,
            weight,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            check: Check::None,
            deregister_after_ms: None,
            lease: 0,
        };
        catalog.apply_put(
            instance_key("web", id).as_bytes(),
            &serde_json::to_vec(&instance).unwrap(),
            revision,
        );
    }

    #[tokio::test]
    async fn a_resolved_service_follows_instances_and_weights() {
        let mut catalog = Catalog::new(1);
        put(&mut catalog, "a", 8001, 1, 2);
        let (sender, receiver) = watch::channel(Arc::new(catalog.clone()));
        let resolver = RegistryResolver::new(receiver);
        let source = resolver.resolve("web").expect("always resolves");
        let mut backends = source.subscribe();
        assert_eq!(backends.borrow_and_update().len(), 1);

        put(&mut catalog, "b", 8002, 3, 3);
        put(&mut catalog, "a", 8001, 5, 3);
        sender.send_replace(Arc::new(catalog.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(5), backends.changed())
            .await
            .expect("published")
            .expect("sender alive");
        let now: Vec<(u16, u32)> = backends
            .borrow_and_update()
            .iter()
            .map(|b| (b.addr.port(), b.weight))
            .collect();
        assert_eq!(now, [(8001, 5), (8002, 3)]);

        assert!(resolver.resolve("unknown").is_some(), "may appear later");
    }
}
