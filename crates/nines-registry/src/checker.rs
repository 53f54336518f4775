//! The checker: runs the registry's checks inside the cluster. Every member
//! that runs one announces itself with a presence key on a short lease
//! (`/nines/registry/checkers/NAME`); the live checkers are the presence keys
//! in the catalog. Each instance is checked by exactly one of them, chosen by
//! rendezvous (highest random weight) hashing of the instance key, so when a
//! member dies only its instances move, and they move as soon as its lease
//! expires. The owner probes HTTP/TCP checks with rise/fall counting and
//! writes a health record through Raft only when the state changes; it also
//! marks TTL instances whose heartbeat lease expired critical, and removes
//! instances critical for longer than their `deregister_after`. A member
//! announces itself only once some instance needs a checker, so a cluster
//! that does not use the registry never sees a registry write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::catalog::{Catalog, InstanceEntry};
use crate::limits::{CHECKER_KEEPALIVE, CHECKER_LEASE_TTL_SECS, RECONCILE_PERIOD};
use crate::model::{checker_key, Check, HealthRecord, Instance, Status};
use crate::probe::probe;
use crate::store::{now_ms, Registry};

/// Least time between two attempts of the same side write (TTL expiry,
/// deregistration), so a failing store is not hammered.
const SIDE_WRITE_RETRY: Duration = Duration::from_secs(1);

/// The member, among `checkers`, that checks the instance `key`.
pub fn owner<'a>(checkers: impl IntoIterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    checkers.into_iter().max_by_key(|c| (score(c, key), *c))
}

fn score(checker: &str, key: &str) -> u64 {
    // FNV-1a over "checker\0key", then a splitmix64 finalizer for spread:
    // stable across processes and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in checker.bytes().chain(std::iter::once(0)).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A running checker; stops its tasks when dropped.
pub struct Checker {
    task: JoinHandle<()>,
}

impl Checker {
    /// Starts the checker of member `name`.
    pub fn spawn(
        name: String,
        registry: Registry,
        catalog: watch::Receiver<Arc<Catalog>>,
    ) -> Checker {
        let (wanted_tx, wanted_rx) = watch::channel(false);
        let presence = tokio::spawn(presence(name.clone(), registry.clone(), wanted_rx));
        let task = tokio::spawn(async move {
            let mut state = State {
                name,
                registry,
                checks: HashMap::new(),
                side_writes: JoinSet::new(),
                last_side_write: HashMap::new(),
            };
            state.run(catalog, wanted_tx).await;
            presence.abort();
            for (_, running) in state.checks.drain() {
                running.handle.abort();
            }
            state.side_writes.abort_all();
        });
        Checker { task }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct RunningCheck {
    mod_revision: i64,
    handle: JoinHandle<()>,
}

impl Drop for RunningCheck {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

struct State {
    name: String,
    registry: Registry,
    checks: HashMap<(String, String), RunningCheck>,
    side_writes: JoinSet<()>,
    last_side_write: HashMap<(String, String), Instant>,
}

impl State {
    async fn run(
        &mut self,
        mut catalog: watch::Receiver<Arc<Catalog>>,
        wanted: watch::Sender<bool>,
    ) {
        let mut tick = tokio::time::interval(RECONCILE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = catalog.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
            while self.side_writes.try_join_next().is_some() {}
            let current = catalog.borrow_and_update().clone();
            if !current.loaded {
                continue;
            }
            wanted.send_if_modified(|w| {
                let now = current.needs_checkers();
                std::mem::replace(w, now) != now
            });
            self.reconcile(&current);
        }
    }

    fn reconcile(&mut self, catalog: &Catalog) {
        let live: Vec<&str> = catalog.checkers().collect();
        let me_live = live.contains(&self.name.as_str());
        let mut owned = std::collections::HashSet::new();
        for (service, entry) in catalog.services() {
            for (id, instance_entry) in &entry.instances {
                let Some(instance) = &instance_entry.instance else {
                    continue;
                };
                // Instances without a check or a deregistration time need no
                // owner; skipping them keeps a large catalog cheap to scan.
                let needs_owner = !matches!(instance.check, Check::None)
                    || instance.deregister_after_ms.is_some();
                if !me_live || !needs_owner {
                    continue;
                }
                let key = format!("{service}/{id}");
                if owner(live.iter().copied(), &key) != Some(self.name.as_str()) {
                    continue;
                }
                let slot = (service.clone(), id.clone());
                owned.insert(slot.clone());
                self.own(slot, instance, instance_entry);
            }
        }
        self.checks.retain(|slot, _| owned.contains(slot));
        self.last_side_write.retain(|slot, _| owned.contains(slot));
    }

    fn own(&mut self, slot: (String, String), instance: &Arc<Instance>, entry: &InstanceEntry) {
        if instance.check.probe().is_some() {
            let current = self.checks.get(&slot).map(|r| r.mod_revision);
            if current != Some(entry.mod_revision) {
                let handle = tokio::spawn(run_check(
                    self.name.clone(),
                    self.registry.clone(),
                    Arc::clone(instance),
                    entry.mod_revision,
                    entry.health.as_ref().map(|(h, _)| h.status),
                ));
                self.checks.insert(
                    slot.clone(),
                    RunningCheck {
                        mod_revision: entry.mod_revision,
                        handle,
                    },
                );
            }
        }
        let health = entry.health.as_ref();
        if matches!(instance.check, Check::Ttl { .. })
            && !entry.ttl_alive
            && health.is_some_and(|(h, _)| h.status == Status::Passing)
        {
            let record = HealthRecord {
                status: Status::Critical,
                output: "ttl expired: no heartbeat in time".to_string(),
                since_ms: now_ms(),
                checker: self.name.clone(),
            };
            let (registry, instance, revision) = (
                self.registry.clone(),
                Arc::clone(instance),
                entry.mod_revision,
            );
            self.side_write(slot.clone(), async move {
                if let Err(error) = registry.write_health(&instance, revision, &record).await {
                    tracing::warn!(%error, service = %instance.service, id = %instance.id, "cannot mark an expired ttl instance critical");
                }
            });
        }
        if let (Some(after_ms), Some((h, health_revision))) = (instance.deregister_after_ms, health)
        {
            if h.status == Status::Critical && now_ms().saturating_sub(h.since_ms) >= after_ms {
                let (registry, instance, health_revision) = (
                    self.registry.clone(),
                    Arc::clone(instance),
                    *health_revision,
                );
                self.side_write(slot, async move {
                    match registry.deregister_if_unchanged(&instance, health_revision).await {
                        Ok(true) => tracing::info!(service = %instance.service, id = %instance.id, "deregistered after being critical too long"),
                        Ok(false) => {}
                        Err(error) => tracing::warn!(%error, service = %instance.service, id = %instance.id, "cannot deregister a critical instance"),
                    }
                });
            }
        }
    }

    fn side_write(
        &mut self,
        slot: (String, String),
        write: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let now = Instant::now();
        if self
            .last_side_write
            .get(&slot)
            .is_some_and(|t| now.duration_since(*t) < SIDE_WRITE_RETRY)
        {
            return;
        }
        self.last_side_write.insert(slot, now);
        self.side_writes.spawn(write);
    }
}

/// Probes one instance forever (until aborted), writing its health when the
/// rise/fall thresholds flip the state.
async fn run_check(
    checker: String,
    registry: Registry,
    instance: Arc<Instance>,
    instance_revision: i64,
    stored: Option<Status>,
) {
    let Some(settings) = instance.check.probe().copied() else {
        return;
    };
    // A record not yet written counts as critical: nothing is sent traffic
    // before it passed `rise` probes.
    let mut stored = stored.unwrap_or(Status::Critical);
    let mut unwritten: Option<HealthRecord> = None;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut tick = tokio::time::interval(settings.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(&instance.check).await;
        let output = match &result {
            Ok(o) | Err(o) => o.clone(),
        };
        if result.is_ok() {
            successes = successes.saturating_add(1);
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            successes = 0;
        }
        let next = match stored {
            Status::Critical if successes >= settings.rise => Status::Passing,
            Status::Passing if failures >= settings.fall => Status::Critical,
            same => same,
        };
        if next != stored {
            unwritten = Some(HealthRecord {
                status: next,
                output,
                since_ms: now_ms(),
                checker: checker.clone(),
            });
            stored = next;
        }
        if let Some(record) = &unwritten {
            match registry
                .write_health(&instance, instance_revision, record)
                .await
            {
                Ok(true) => {
                    tracing::info!(service = %instance.service, id = %instance.id, status = record.status.as_str(), output = %record.output, "health changed");
                    unwritten = None;
                }
                // The registration changed or went away: a new task (or none)
                // takes over.
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, service = %instance.service, id = %instance.id, "cannot write a health change; retrying");
                }
            }
        }
    }
}

/// Keeps this member's presence key alive while it is wanted.
async fn presence(name: String, registry: Registry, mut wanted: watch::Receiver<bool>) {
    loop {
        if wanted.wait_for(|w| *w).await.is_err() {
            return;
        }
        if let Err(error) = announce(&name, &registry, &mut wanted).await {
            tracing::debug!(%error, "checker presence lost; announcing again");
            tokio::time::sleep(CHECKER_KEEPALIVE).await;
        }
    }
}

async fn announce(
    name: &str,
    registry: &Registry,
    wanted: &mut watch::Receiver<bool>,
) -> Result<(), crate::RegistryError> {
    let mut client = registry.client();
    let lease = client.lease_grant(CHECKER_LEASE_TTL_SECS, None).await?.id();
    client
        .put(
            checker_key(name),
            "",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await?;
    tracing::info!(checker = name, "running registry checks");
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    loop {
        if !*wanted.borrow() {
            let _ = client.lease_revoke(lease).await;
            return Ok(());
        }
        keeper.keep_alive().await?;
        let answer = tokio::time::timeout(CHECKER_KEEPALIVE * 2, stream.message())
            .await
            .map_err(|_| crate::RegistryError::Timeout {
                what: "checker keep-alive",
            })??;
        if answer.is_none_or(|r| r.ttl() <= 0) {
            return Err(crate::RegistryError::Timeout {
                what: "checker lease expired",
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECKER_KEEPALIVE) => {}
            _ = wanted.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_spread_and_moves_only_from_a_lost_checker() {
        let three = ["n1", "n2", "n3"];
        let keys: Vec<String> = (0..300).map(|i| format!("web/w{i}")).collect();
        let mut counts = HashMap::new();
        for k in &keys {
            *counts.entry(owner(three, k).unwrap()).or_insert(0) += 1;
        }
        for n in three {
            assert!(counts[n] > 60, "{counts:?}");
        }
        for k in &keys {
            let before = owner(three, k).unwrap();
            let after = owner(["n1", "n3"], k).unwrap();
            if before != "n2" {
                assert_eq!(before, after, "{k} moved without need");
            }
        }
        assert_eq!(owner([], "web/x"), None);
    }
}
