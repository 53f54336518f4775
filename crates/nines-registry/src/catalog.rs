//! The registry as one member sees it: every key under the registry prefix
//! folded into services, instances, health and live checkers. A [`Catalog`]
//! is built from a range read and then kept current by watch events (see
//! `mirror.rs`); readers get an immutable `Arc<Catalog>` and never wait on
//! the store. Each service carries an `index`, the store revision of its last
//! change, which blocking queries wait on. Pure: no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::{Check, HealthRecord, Instance, Status, CHECKERS, HEALTH, SERVICES, TTL};

/// One instance with what is known of its health.
#[derive(Debug, Clone, Default)]
pub struct InstanceEntry {
    /// The registration (absent while only its health key is known).
    pub instance: Option<Arc<Instance>>,
    /// Revision at which the registration was last written.
    pub mod_revision: i64,
    /// The stored check state and the revision it was written at.
    pub health: Option<(HealthRecord, i64)>,
    /// Whether the TTL key (kept alive by heartbeats) exists.
    pub ttl_alive: bool,
}

impl InstanceEntry {
    /// Whether the instance should receive traffic: registered, and its
    /// check passing (a TTL instance also needs its heartbeat lease alive).
    pub fn is_healthy(&self) -> bool {
        let Some(instance) = &self.instance else {
            return false;
        };
        let passing = matches!(&self.health, Some((h, _)) if h.status == Status::Passing);
        match instance.check {
            Check::None => true,
            Check::Ttl { .. } => passing && self.ttl_alive,
            Check::Http { .. } | Check::Tcp { .. } => passing,
        }
    }

    fn is_empty(&self) -> bool {
        self.instance.is_none() && self.health.is_none() && !self.ttl_alive
    }
}

/// The instances of one service.
#[derive(Debug, Clone, Default)]
pub struct ServiceEntry {
    /// Store revision of the last change to this service.
    pub index: i64,
    /// Instances by id.
    pub instances: BTreeMap<String, InstanceEntry>,
}

impl ServiceEntry {
    /// Registered instances (not bare health keys), in id order.
    pub fn registered(&self) -> impl Iterator<Item = (&InstanceEntry, &Arc<Instance>)> {
        self.instances
            .values()
            .filter_map(|e| e.instance.as_ref().map(|i| (e, i)))
    }

    /// Registered, healthy instances carrying `tag` (any when `None`).
    pub fn healthy<'a>(&'a self, tag: Option<&'a str>) -> impl Iterator<Item = &'a Arc<Instance>> {
        self.registered()
            .filter(|(e, _)| e.is_healthy())
            .map(|(_, i)| i)
            .filter(move |i| tag.is_none_or(|t| i.tags.iter().any(|x| x == t)))
    }
}

/// Every service, instance and live checker, at one store revision.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Store revision this view reflects (at least).
    pub revision: i64,
    /// Revision of the last change to any service.
    pub index: i64,
    /// Whether the first full read has been loaded.
    pub loaded: bool,
    services: BTreeMap<String, Arc<ServiceEntry>>,
    checkers: BTreeMap<String, i64>,
}

/// What a registry key names.
#[derive(Debug, PartialEq, Eq)]
enum KeyKind<'a> {
    Instance(&'a str, &'a str),
    Health(&'a str, &'a str),
    Ttl(&'a str, &'a str),
    Checker(&'a str),
}

fn parse_key(key: &str) -> Option<KeyKind<'_>> {
    if let Some(rest) = key.strip_prefix(SERVICES) {
        let (service, id) = rest.split_once("/instances/")?;
        return Some(KeyKind::Instance(service, id));
    }
    if let Some(rest) = key.strip_prefix(HEALTH) {
        let (service, id) = rest.split_once('/')?;
        return Some(KeyKind::Health(service, id));
    }
    if let Some(rest) = key.strip_prefix(TTL) {
        let (service, id) = rest.split_once('/')?;
        return Some(KeyKind::Ttl(service, id));
    }
    key.strip_prefix(CHECKERS).map(KeyKind::Checker)
}

/// A serializable view of one instance, as the HTTP API and CLI show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct InstanceView {
    /// Service name.
    pub service: String,
    /// Instance id.
    pub id: String,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Tags.
    pub tags: Vec<String>,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Check kind: none, ttl, http or tcp.
    pub check: String,
    /// passing or critical.
    pub status: String,
    /// The last check output.
    pub output: String,
    /// When the current status began (ms since the Unix epoch; 0 unknown).
    pub since_ms: u64,
    /// The member that wrote the status (empty when written at registration).
    pub checker: String,
}

impl InstanceView {
    /// The view of `entry`'s instance.
    pub fn new(entry: &InstanceEntry, instance: &Instance) -> InstanceView {
        let (output, since_ms, checker) = match &entry.health {
            Some((h, _)) => (h.output.clone(), h.since_ms, h.checker.clone()),
            None => (String::new(), 0, String::new()),
        };
        let output = match (&instance.check, entry.ttl_alive) {
            (Check::Ttl { .. }, false)
                if entry
                    .health
                    .as_ref()
                    .is_some_and(|(h, _)| h.status == Status::Passing) =>
            {
                "ttl expired".to_string()
            }
            _ => output,
        };
        InstanceView {
            service: instance.service.clone(),
            id: instance.id.clone(),
            address: instance.address.to_string(),
            port: instance.port,
            weight: instance.weight,
            tags: instance.tags.clone(),
            meta: instance.meta.clone(),
            check: match instance.check {
                Check::None => "none",
                Check::Ttl { .. } => "ttl",
                Check::Http { .. } => "http",
                Check::Tcp { .. } => "tcp",
            }
            .to_string(),
            status: if entry.is_healthy() {
                Status::Passing
            } else {
                Status::Critical
            }
            .as_str()
            .to_string(),
            output,
            since_ms,
            checker,
        }
    }
}

impl Catalog {
    /// An empty catalog at `revision`.
    pub fn new(revision: i64) -> Catalog {
        Catalog {
            revision,
            ..Catalog::default()
        }
    }

    /// The service `name`, if it has any key.
    pub fn service(&self, name: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(name)
    }

    /// Services with at least one registered instance, in name order.
    pub fn services(&self) -> impl Iterator<Item = (&String, &Arc<ServiceEntry>)> {
        self.services
            .iter()
            .filter(|(_, s)| s.registered().next().is_some())
    }

    /// Names of the live checkers (members running checks).
    pub fn checkers(&self) -> impl Iterator<Item = &str> {
        self.checkers.keys().map(String::as_str)
    }

    /// Whether any instance needs a checker (an active or TTL check).
    pub fn needs_checkers(&self) -> bool {
        self.services.values().any(|s| {
            s.registered()
                .any(|(_, i)| !matches!(i.check, Check::None) || i.deregister_after_ms.is_some())
        })
    }

    /// The index a blocking query on `service` waits past: the revision of
    /// its last change, or of the last change anywhere when it never existed.
    pub fn service_index(&self, service: &str) -> i64 {
        self.services.get(service).map_or(self.index, |s| s.index)
    }

    /// Folds a put of `key` at `mod_revision` into the catalog. Values that
    /// do not parse are ignored (and reported), never trusted.
    pub fn apply_put(&mut self, key: &[u8], value: &[u8], mod_revision: i64) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        let Some(kind) = parse_key(key) else {
            return;
        };
        match kind {
            KeyKind::Checker(name) => {
                self.checkers.insert(name.to_string(), mod_revision);
            }
            KeyKind::Instance(service, id) => match serde_json::from_slice::<Instance>(value) {
                Ok(instance) => self.update(service, id, mod_revision, |e| {
                    e.instance = Some(Arc::new(instance));
                    e.mod_revision = mod_revision;
                }),
                Err(error) => tracing::warn!(key, %error, "unreadable instance record ignored"),
            },
            KeyKind::Health(service, id) => match serde_json::from_slice::<HealthRecord>(value) {
                Ok(record) => self.update(service, id, mod_revision, |e| {
                    e.health = Some((record, mod_revision));
                }),
                Err(error) => tracing::warn!(key, %error, "unreadable health record ignored"),
            },
            KeyKind::Ttl(service, id) => self.update(service, id, mod_revision, |e| {
                e.ttl_alive = true;
            }),
        }
    }

    /// Folds a delete of `key` at `revision` into the catalog.
    pub fn apply_delete(&mut self, key: &[u8], revision: i64) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        match parse_key(key) {
            None => {}
            Some(KeyKind::Checker(name)) => {
                self.checkers.remove(name);
            }
            Some(KeyKind::Instance(service, id)) => self.update(service, id, revision, |e| {
                e.instance = None;
            }),
            Some(KeyKind::Health(service, id)) => self.update(service, id, revision, |e| {
                e.health = None;
            }),
            Some(KeyKind::Ttl(service, id)) => self.update(service, id, revision, |e| {
                e.ttl_alive = false;
            }),
        }
    }

    fn update(
        &mut self,
        service: &str,
        id: &str,
        revision: i64,
        change: impl FnOnce(&mut InstanceEntry),
    ) {
        let entry = self.services.entry(service.to_string()).or_default();
        let entry = Arc::make_mut(entry);
        entry.index = entry.index.max(revision);
        let instance = entry.instances.entry(id.to_string()).or_default();
        change(instance);
        if instance.is_empty() {
            entry.instances.remove(id);
        }
        self.index = self.index.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{health_key, instance_key, ttl_key, Probe};

    fn instance(id: &str, check: Check) -> Vec<u8> {
        serde_json::to_vec(&Instance {
            service: "web".into(),
            id: id.into(),
            address: "127.0.0.1".parse().unwrap(),
            port: 80,
            weight: 1,
            tags: vec!["v1".into()],
            meta: BTreeMap::new(),
            check,
            deregister_after_ms: None,
            lease: 0,
        })
        .unwrap()
    }

    fn health(status: Status) -> Vec<u8> {
        serde_json::to_vec(&HealthRecord {
            status,
            output: String::new(),
            since_ms: 1,
            checker: "n1".into(),
        })
        .unwrap()
    }

    #[test]
    fn health_decides_which_instances_are_healthy() {
        let probe = Probe {
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
        };
        let http = Check::Http {
            url: "http://127.0.0.1:80/".into(),
            status: None,
            probe,
        };
        let mut c = Catalog::new(1);
        c.apply_put(
            instance_key("web", "a").as_bytes(),
            &instance("a", http.clone()),
            2,
        );
        c.apply_put(instance_key("web", "b").as_bytes(), &instance("b", http), 3);
        c.apply_put(
            health_key("web", "a").as_bytes(),
            &health(Status::Passing),
            4,
        );
        c.apply_put(
            health_key("web", "b").as_bytes(),
            &health(Status::Critical),
            4,
        );
        c.apply_put(
            instance_key("web", "c").as_bytes(),
            &instance("c", Check::None),
            5,
        );
        let web = c.service("web").unwrap();
        let healthy: Vec<_> = web.healthy(None).map(|i| i.id.as_str()).collect();
        assert_eq!(healthy, ["a", "c"]);
        assert_eq!(web.healthy(Some("v2")).count(), 0);
        assert_eq!(c.service_index("web"), 5);

        c.apply_delete(instance_key("web", "a").as_bytes(), 6);
        c.apply_delete(health_key("web", "a").as_bytes(), 6);
        let web = c.service("web").unwrap();
        assert!(!web.instances.contains_key("a"));
        assert_eq!(c.service_index("web"), 6);
    }

    #[test]
    fn ttl_instances_need_their_heartbeat_key() {
        let mut c = Catalog::new(1);
        c.apply_put(
            instance_key("api", "x").as_bytes(),
            &instance("x", Check::Ttl { ttl_ms: 3000 }),
            2,
        );
        c.apply_put(
            health_key("api", "x").as_bytes(),
            &health(Status::Passing),
            2,
        );
        assert_eq!(c.service("api").unwrap().healthy(None).count(), 0);
        c.apply_put(ttl_key("api", "x").as_bytes(), b"", 2);
        assert_eq!(c.service("api").unwrap().healthy(None).count(), 1);
        c.apply_delete(ttl_key("api", "x").as_bytes(), 3);
        assert_eq!(c.service("api").unwrap().healthy(None).count(), 0);
    }

    #[test]
    fn garbage_values_and_foreign_keys_are_ignored() {
        let mut c = Catalog::new(1);
        c.apply_put(instance_key("web", "a").as_bytes(), b"{not json", 2);
        c.apply_put(b"/nines/registry/other", b"x", 3);
        assert_eq!(c.services().count(), 0);
    }
}
