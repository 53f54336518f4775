//! [`Mirror`]: a local, always-current [`Catalog`] of the registry. One task
//! reads the whole prefix, then follows it with a watch from the next
//! revision, folding each response into the catalog and publishing it on a
//! `tokio::sync::watch` channel. DNS, HTTP discovery, blocking queries, the
//! checker and the gateway source all read that channel; none of them talk
//! to the store to answer a query. When the watch breaks (member restart,
//! compaction) the task reads everything again, so the view never misses an
//! event silently.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::model::PREFIX;
use crate::store::Registry;
use crate::RegistryError;

/// Longest pause between two attempts to reach the store.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The local view of the registry, kept current by a watch.
pub struct Mirror {
    receiver: watch::Receiver<Arc<Catalog>>,
    task: JoinHandle<()>,
}

impl Mirror {
    /// Starts following the registry through `registry`.
    pub fn spawn(registry: Registry) -> Mirror {
        let (sender, receiver) = watch::channel(Arc::new(Catalog::default()));
        let task = tokio::spawn(follow(registry, sender));
        Mirror { receiver, task }
    }

    /// A receiver of every new catalog.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Catalog>> {
        self.receiver.clone()
    }

    /// The current catalog.
    pub fn current(&self) -> Arc<Catalog> {
        self.receiver.borrow().clone()
    }

    /// Waits until the catalog reflects at least store revision `revision`
    /// (read-your-writes after a registration); `false` on timeout.
    pub async fn wait_revision(&self, revision: i64, timeout: Duration) -> bool {
        wait_revision(self.receiver.clone(), revision, timeout).await
    }

    /// Stops following.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `receiver`'s catalog is loaded and at `revision` or later.
pub async fn wait_revision(
    mut receiver: watch::Receiver<Arc<Catalog>>,
    revision: i64,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(
        timeout,
        receiver.wait_for(|c| c.loaded && c.revision >= revision),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

async fn follow(registry: Registry, sender: watch::Sender<Arc<Catalog>>) {
    let mut pause = Duration::from_millis(50);
    loop {
        match follow_once(&registry, &sender).await {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, "registry watch broken; reading the registry again");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
        if sender.is_closed() {
            return;
        }
    }
}

/// Reads everything, then follows the watch until it breaks. `Ok` only when
/// nobody listens any more.
async fn follow_once(
    registry: &Registry,
    sender: &watch::Sender<Arc<Catalog>>,
) -> Result<(), RegistryError> {
    let mut catalog = registry.load().await?;
    let mut client = registry.client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(catalog.revision + 1)
        .with_progress_notify();
    let mut stream = client.watch(PREFIX, Some(options)).await?;
    sender.send_replace(Arc::new(catalog.clone()));
    tracing::debug!(revision = catalog.revision, "registry loaded");
    loop {
        let Some(response) = stream.message().await? else {
            return Err(RegistryError::Timeout {
                what: "registry watch (closed)",
            });
        };
        if response.canceled() {
            return Err(RegistryError::Timeout {
                what: "registry watch (cancelled)",
            });
        }
        let mut changed = false;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => catalog.apply_put(kv.key(), kv.value(), kv.mod_revision()),
                EventType::Delete => catalog.apply_delete(kv.key(), kv.mod_revision()),
            }
            catalog.revision = catalog.revision.max(kv.mod_revision());
            changed = true;
        }
        if let Some(header) = response.header() {
            if header.revision() > catalog.revision && response.events().is_empty() {
                // A progress notification: nothing under the prefix changed
                // up to this revision.
                catalog.revision = header.revision();
                changed = true;
            }
        }
        if changed {
            sender.send_replace(Arc::new(catalog.clone()));
        }
        if sender.is_closed() {
            return Ok(());
        }
    }
}
