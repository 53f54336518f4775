//! [`Registry`]: every registry write and full read, through the store's
//! etcd v3 API (KV, Txn, Lease) with the etcd-client crate. The same code
//! runs inside a member (talking to its own client URL), in the CLI and in a
//! standalone gateway. Writes that depend on what a checker saw are
//! transactions guarded by the instance's `mod_revision`, so a stale checker
//! never resurrects or overwrites a newer registration.

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use crate::catalog::Catalog;
use crate::model::{
    health_key, instance_key, ttl_key, Check, HealthRecord, Instance, Status, PREFIX,
};
use crate::RegistryError;

/// Keys per page when the whole registry is read.
const PAGE_KEYS: i64 = 1000;

/// A handle on the registry in the store; cheap to clone.
#[derive(Clone)]
pub struct Registry {
    client: Client,
}

/// Milliseconds since the Unix epoch (wall clock; health `since` times).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("registry records always serialize")
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

impl Registry {
    /// A registry over an existing etcd client.
    pub fn new(client: Client) -> Registry {
        Registry { client }
    }

    /// Connects to `endpoints` (host:port or URLs).
    pub async fn connect(endpoints: &[String]) -> Result<Registry, RegistryError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(2))
            .with_timeout(std::time::Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Registry { client })
    }

    /// The underlying client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    async fn get_instance(
        &self,
        service: &str,
        id: &str,
    ) -> Result<Option<(Instance, i64)>, RegistryError> {
        let response = self
            .client
            .clone()
            .get(instance_key(service, id), None)
            .await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let instance =
            serde_json::from_slice(kv.value()).map_err(|source| RegistryError::Corrupt {
                key: instance_key(service, id),
                source,
            })?;
        Ok(Some((instance, kv.mod_revision())))
    }

    /// Registers (or replaces) `instance`; returns the store revision of the
    /// write. A TTL instance gets a fresh lease and starts passing (the
    /// registration counts as a heartbeat); an active check starts critical
    /// until `rise` probes pass, unless the same check was already running.
    pub async fn register(&self, mut instance: Instance) -> Result<i64, RegistryError> {
        let (service, id) = (instance.service.clone(), instance.id.clone());
        let previous = self.get_instance(&service, &id).await?;
        let mut ops = Vec::new();
        if let Some(ttl_secs) = instance.check.lease_ttl_secs() {
            let lease = self.client.clone().lease_grant(ttl_secs, None).await?;
            instance.lease = lease.id();
            ops.push(TxnOp::put(
                ttl_key(&service, &id),
                "",
                Some(PutOptions::new().with_lease(lease.id())),
            ));
        } else {
            ops.push(TxnOp::delete(ttl_key(&service, &id), None));
        }
        let same_check = previous.as_ref().is_some_and(|(p, _)| {
            p.check == instance.check && !matches!(p.check, Check::Ttl { .. })
        });
        if !same_check {
            let (status, output) = match instance.check {
                Check::None => (Status::Passing, "no check"),
                Check::Ttl { .. } => (Status::Passing, "registered"),
                Check::Http { .. } | Check::Tcp { .. } => {
                    (Status::Critical, "awaiting the first checks")
                }
            };
            let record = HealthRecord {
                status,
                output: output.to_string(),
                since_ms: now_ms(),
                checker: String::new(),
            };
            ops.push(TxnOp::put(
                health_key(&service, &id),
                to_json(&record),
                None,
            ));
        }
        ops.push(TxnOp::put(
            instance_key(&service, &id),
            to_json(&instance),
            None,
        ));
        let response = self.client.clone().txn(Txn::new().and_then(ops)).await?;
        if let Some((p, _)) = previous {
            if p.lease != 0 && p.lease != instance.lease {
                // The TTL key moved to the new lease; the old one holds nothing.
                let _ = self.client.clone().lease_revoke(p.lease).await;
            }
        }
        Ok(revision_of(response.header()))
    }

    /// Removes an instance with its health and TTL keys; `None` when it was
    /// not registered, else the revision of the delete.
    pub async fn deregister(&self, service: &str, id: &str) -> Result<Option<i64>, RegistryError> {
        let Some((previous, _)) = self.get_instance(service, id).await? else {
            return Ok(None);
        };
        let response = self
            .client
            .clone()
            .txn(Txn::new().and_then(vec![
                TxnOp::delete(instance_key(service, id), None),
                TxnOp::delete(health_key(service, id), None),
                TxnOp::delete(ttl_key(service, id), None),
            ]))
            .await?;
        if previous.lease != 0 {
            let _ = self.client.clone().lease_revoke(previous.lease).await;
        }
        Ok(Some(revision_of(response.header())))
    }

    /// Deregisters an instance found critical for too long, only if its
    /// health record is still the one seen at `health_revision`.
    pub async fn deregister_if_unchanged(
        &self,
        instance: &Instance,
        health_revision: i64,
    ) -> Result<bool, RegistryError> {
        let (service, id) = (&instance.service, &instance.id);
        let response = self
            .client
            .clone()
            .txn(
                Txn::new()
                    .when(vec![Compare::mod_revision(
                        health_key(service, id),
                        CompareOp::Equal,
                        health_revision,
                    )])
                    .and_then(vec![
                        TxnOp::delete(instance_key(service, id), None),
                        TxnOp::delete(health_key(service, id), None),
                        TxnOp::delete(ttl_key(service, id), None),
                    ]),
            )
            .await?;
        if response.succeeded() && instance.lease != 0 {
            let _ = self.client.clone().lease_revoke(instance.lease).await;
        }
        Ok(response.succeeded())
    }

    /// Writes `record` for `instance` if its registration is still the one
    /// written at `instance_revision`; `false` when it changed or went away.
    pub async fn write_health(
        &self,
        instance: &Instance,
        instance_revision: i64,
        record: &HealthRecord,
    ) -> Result<bool, RegistryError> {
        let (service, id) = (&instance.service, &instance.id);
        let response = self
            .client
            .clone()
            .txn(
                Txn::new()
                    .when(vec![Compare::mod_revision(
                        instance_key(service, id),
                        CompareOp::Equal,
                        instance_revision,
                    )])
                    .and_then(vec![TxnOp::put(
                        health_key(service, id),
                        to_json(record),
                        None,
                    )]),
            )
            .await?;
        Ok(response.succeeded())
    }

    /// A heartbeat for a TTL instance: renews its lease, or, when the lease
    /// already expired, takes a new one and marks the instance passing again.
    pub async fn heartbeat(&self, service: &str, id: &str) -> Result<(), RegistryError> {
        let (instance, revision) =
            self.get_instance(service, id)
                .await?
                .ok_or_else(|| RegistryError::NotFound {
                    service: service.to_string(),
                    id: id.to_string(),
                })?;
        let Some(ttl_secs) = instance.check.lease_ttl_secs() else {
            return Err(RegistryError::NotTtl {
                service: service.to_string(),
                id: id.to_string(),
            });
        };
        if instance.lease != 0
            && self.keep_alive_once(instance.lease).await?
            && self.is_passing(service, id).await?
        {
            return Ok(());
        }
        self.revive(instance, revision, ttl_secs).await
    }

    /// Whether the stored health record of an instance says passing.
    async fn is_passing(&self, service: &str, id: &str) -> Result<bool, RegistryError> {
        let health = self
            .client
            .clone()
            .get(health_key(service, id), None)
            .await?;
        Ok(health.kvs().first().is_some_and(|kv| {
            serde_json::from_slice::<HealthRecord>(kv.value())
                .is_ok_and(|h| h.status == Status::Passing)
        }))
    }

    /// Gives a TTL instance whose lease expired (or whose record says
    /// critical) a new lease and marks it passing, if its registration is
    /// still the one read at `revision`.
    async fn revive(
        &self,
        mut instance: Instance,
        revision: i64,
        ttl_secs: i64,
    ) -> Result<(), RegistryError> {
        let (service, id) = (instance.service.clone(), instance.id.clone());
        let lease = self.client.clone().lease_grant(ttl_secs, None).await?;
        let old_lease = std::mem::replace(&mut instance.lease, lease.id());
        let record = HealthRecord {
            status: Status::Passing,
            output: "heartbeat".to_string(),
            since_ms: now_ms(),
            checker: String::new(),
        };
        let response = self
            .client
            .clone()
            .txn(
                Txn::new()
                    .when(vec![Compare::mod_revision(
                        instance_key(&service, &id),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then(vec![
                        TxnOp::put(
                            ttl_key(&service, &id),
                            "",
                            Some(PutOptions::new().with_lease(lease.id())),
                        ),
                        TxnOp::put(health_key(&service, &id), to_json(&record), None),
                        TxnOp::put(instance_key(&service, &id), to_json(&instance), None),
                    ]),
            )
            .await?;
        if !response.succeeded() {
            let _ = self.client.clone().lease_revoke(lease.id()).await;
            return Err(RegistryError::Conflict { service, id });
        }
        if old_lease != 0 {
            let _ = self.client.clone().lease_revoke(old_lease).await;
        }
        Ok(())
    }

    /// Renews `lease` once; `false` when it could not be renewed. An expired
    /// lease is answered with TTL 0 by etcd and with a "lease not found"
    /// error by some servers; either way (and on any other failure) the
    /// caller takes a new lease, which fails loudly if the store is down.
    async fn keep_alive_once(&self, lease: i64) -> Result<bool, RegistryError> {
        let renew = async {
            let (mut keeper, mut stream) = self.client.clone().lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), renew).await {
            Ok(Ok(answer)) => Ok(answer.is_some_and(|r| r.ttl() > 0)),
            Ok(Err(error)) => {
                tracing::debug!(%error, lease, "lease not renewed; taking a new one");
                Ok(false)
            }
            Err(_) => Err(RegistryError::Timeout {
                what: "lease keep-alive",
            }),
        }
    }

    /// Reads every registry key into a catalog, page by page at one revision.
    pub async fn load(&self) -> Result<Catalog, RegistryError> {
        let mut client = self.client.clone();
        let range_end = prefix_end(PREFIX);
        let mut from = PREFIX.as_bytes().to_vec();
        let mut revision = 0;
        let mut catalog = Catalog::new(0);
        loop {
            let mut options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(PAGE_KEYS);
            if revision != 0 {
                options = options.with_revision(revision);
            }
            let response = client.get(from.clone(), Some(options)).await?;
            if revision == 0 {
                revision = revision_of(response.header());
            }
            for kv in response.kvs() {
                catalog.apply_put(kv.key(), kv.value(), kv.mod_revision());
            }
            match response.kvs().last() {
                Some(last) if response.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        catalog.revision = revision;
        catalog.loaded = true;
        Ok(catalog)
    }
}

/// The range end of a prefix: its last byte plus one.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut().expect("non-empty prefix");
    *last += 1;
    end
}
