//! `etcdserverpb.Watch`: many watchers on one bidirectional stream, fed by
//! the member's applied events. A watcher starting in the past is first
//! replayed from the store's history, then follows live events; each watcher
//! delivers every revision once, in order. A slow stream never slows writes
//! or other streams: the applied-events channel drops what a stream has not
//! read, and the stream catches up from history instead.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use nines_raft::{AppliedEvents, RaftNode};
use nines_store::{Event, EventKind};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::event_to_pb;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::watch_server::Watch;

/// Watchers on one stream, at most.
pub const WATCHERS_PER_STREAM_MAX: usize = 10_000;
/// Responses queued for a stream's client before it counts as slow.
const STREAM_QUEUE_MAX: usize = 256;
/// Applied batches taken together into one delivery, at most.
const COALESCE_BATCHES_MAX: usize = 256;
/// Events read from history in one step of a replay.
const REPLAY_EVENTS_MAX: usize = 1000;
/// Bytes of events in one response before it is split (with `fragment`) or
/// sent on its own.
const RESPONSE_BYTES_SOFT_MAX: usize = 1024 * 1024;

/// The Watch service.
#[derive(Clone)]
pub struct WatchService {
    node: RaftNode,
    progress_interval: Duration,
    watchers: Arc<AtomicI64>,
}

impl WatchService {
    /// A watch service over `node`; watchers that ask for progress
    /// notifications get one every `progress_interval` (etcd: 10 minutes).
    pub fn new(node: RaftNode, progress_interval: Duration) -> WatchService {
        WatchService {
            node,
            progress_interval,
            watchers: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Keeps the number of active watchers (over all streams) in `gauge`.
    pub fn with_watchers_gauge(mut self, gauge: Arc<AtomicI64>) -> WatchService {
        self.watchers = gauge;
        self
    }
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    progress_notify: bool,
    fragment: bool,
    /// The next revision this watcher has to deliver.
    next_rev: i64,
}

impl Watcher {
    fn matches(&self, e: &Event) -> bool {
        match e.kind {
            EventKind::Put if self.no_put => return false,
            EventKind::Delete if self.no_delete => return false,
            _ => {}
        }
        in_range(&e.kv.key, &self.key, &self.range_end)
    }
}

/// etcd's range conventions: empty end = the key alone; `\0` = every key
/// from `key` on; otherwise `[key, end)`.
fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        return k == key;
    }
    if end == [0] {
        return k >= key;
    }
    k >= key && k < end
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE_MAX);
        let session = Session {
            node: self.node.clone(),
            events: self.node.subscribe_events(),
            watchers: BTreeMap::new(),
            next_id: 0,
            tx,
            gauge: Arc::clone(&self.watchers),
        };
        tokio::spawn(session.run(inbound, self.progress_interval));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One client stream: its watchers and the task that serves them.
struct Session {
    node: RaftNode,
    events: broadcast::Receiver<AppliedEvents>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// Active watchers over all streams; this session's share leaves with it.
    gauge: Arc<AtomicI64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.gauge
            .fetch_sub(self.watchers.len() as i64, Ordering::Relaxed);
    }
}

/// Why a session ends.
enum End {
    ClientGone,
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>, progress_interval: Duration) {
        let mut progress = tokio::time::interval(progress_interval);
        progress.tick().await;
        loop {
            let step: Result<(), End> = tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => self.on_request(req).await,
                    Some(Err(_)) | None => Err(End::ClientGone),
                },
                ev = self.events.recv() => match ev {
                    Ok(batch) => {
                        // Everything else already applied goes out with it:
                        // one response per watcher for many revisions, not
                        // one per revision.
                        let mut batches = vec![batch];
                        let mut lagged = false;
                        while batches.len() < COALESCE_BATCHES_MAX {
                            match self.events.try_recv() {
                                Ok(b) => batches.push(b),
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                                    lagged = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let sent = self.on_events(&batches).await;
                        if sent.is_ok() && lagged {
                            self.catch_up().await
                        } else {
                            sent
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => Err(End::ClientGone),
                },
                _ = progress.tick() => self.on_progress_tick().await,
            };
            if step.is_err() {
                return;
            }
        }
    }

    fn header(&self, revision: i64) -> pb::ResponseHeader {
        crate::header(&self.node, revision)
    }

    async fn send(&self, resp: pb::WatchResponse) -> Result<(), End> {
        self.tx.send(Ok(resp)).await.map_err(|_| End::ClientGone)
    }

    async fn on_request(&mut self, req: pb::WatchRequest) -> Result<(), End> {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                let existed = self.watchers.remove(&c.watch_id).is_some();
                if existed {
                    self.gauge.fetch_sub(1, Ordering::Relaxed);
                }
                let rev = self.node.store().revision();
                let mut resp = pb::WatchResponse {
                    header: Some(self.header(rev)),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                if !existed {
                    resp.cancel_reason = "watch id not found".into();
                }
                self.send(resp).await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Everything up to the current revision has been delivered
                // (this task handles events before requests it reads later).
                let rev = self.node.store().revision();
                self.send(pb::WatchResponse {
                    header: Some(self.header(rev)),
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), End> {
        let current = self.node.store().revision();
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let refuse = |reason: &str| pb::WatchResponse {
            header: Some(crate::header(&self.node, current)),
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        if c.key.is_empty() {
            return self.send(refuse("etcdserver: key is not provided")).await;
        }
        if self.watchers.contains_key(&id) {
            return self.send(refuse("etcdserver: duplicate watch ID")).await;
        }
        if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            return self
                .send(refuse("etcdserver: too many watchers on this stream"))
                .await;
        }
        let filters = &c.filters;
        let noput = pb::watch_create_request::FilterType::Noput as i32;
        let nodelete = pb::watch_create_request::FilterType::Nodelete as i32;
        let w = Watcher {
            no_put: filters.contains(&noput),
            no_delete: filters.contains(&nodelete),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            next_rev: if c.start_revision > 0 {
                c.start_revision
            } else {
                current + 1
            },
            key: c.key,
            range_end: c.range_end,
        };
        self.send(pb::WatchResponse {
            header: Some(self.header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        if id == self.next_id {
            self.next_id += 1;
        }
        let replay_needed = w.next_rev <= current;
        if self.watchers.insert(id, w).is_none() {
            self.gauge.fetch_add(1, Ordering::Relaxed);
        }
        if replay_needed {
            self.replay(id).await?;
        }
        Ok(())
    }

    /// Delivers the history a watcher is behind on, up to the store's
    /// current revision; cancels it if that history was compacted.
    async fn replay(&mut self, id: i64) -> Result<(), End> {
        for _ in 0..1_000_000 {
            let Some(w) = self.watchers.get(&id) else {
                return Ok(());
            };
            let res = {
                let store = self.node.store();
                store
                    .changes(&w.key, &w.range_end, w.next_rev, REPLAY_EVENTS_MAX)
                    .map(|evs| (evs, store.revision()))
                    .map_err(|_| store.compact_revision())
            };
            match res {
                Err(compacted) => {
                    if self.watchers.remove(&id).is_some() {
                        self.gauge.fetch_sub(1, Ordering::Relaxed);
                    }
                    let rev = self.node.store().revision();
                    return self
                        .send(pb::WatchResponse {
                            header: Some(self.header(rev)),
                            watch_id: id,
                            canceled: true,
                            compact_revision: compacted,
                            cancel_reason: "etcdserver: mvcc: required revision has been compacted"
                                .into(),
                            ..Default::default()
                        })
                        .await;
                }
                Ok((events, current)) => {
                    let done = events.len() < REPLAY_EVENTS_MAX;
                    let last = events.last().map(|e| e.kv.mod_revision);
                    self.deliver(
                        id,
                        events.iter(),
                        if done {
                            current
                        } else {
                            last.unwrap_or(current)
                        },
                    )
                    .await?;
                    let w = self.watchers.get_mut(&id).expect("watcher present");
                    w.next_rev = if done {
                        current + 1
                    } else {
                        last.unwrap_or(current) + 1
                    };
                    if done {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a watcher the events of `events` that match it, in responses
    /// whose header revision is `revision`.
    async fn deliver<'a>(
        &self,
        id: i64,
        events: impl Iterator<Item = &'a Event>,
        revision: i64,
    ) -> Result<(), End> {
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in events.filter(|e| e.kv.mod_revision >= w.next_rev && w.matches(e)) {
            // The previous value is copied only for watchers that asked.
            let e = Event {
                kind: e.kind,
                kv: e.kv.clone(),
                prev_kv: if w.prev_kv { e.prev_kv.clone() } else { None },
            };
            bytes += e.kv.key.len() + e.kv.value.len() + 64;
            out.push(event_to_pb(e));
            if w.fragment && bytes >= RESPONSE_BYTES_SOFT_MAX {
                self.send(pb::WatchResponse {
                    header: Some(self.header(revision)),
                    watch_id: id,
                    fragment: true,
                    events: std::mem::take(&mut out),
                    ..Default::default()
                })
                .await?;
                bytes = 0;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        self.send(pb::WatchResponse {
            header: Some(self.header(revision)),
            watch_id: id,
            events: out,
            ..Default::default()
        })
        .await
    }

    /// Delivers consecutive applied batches (in revision order) to every
    /// watcher, in one response per watcher.
    async fn on_events(&mut self, batches: &[AppliedEvents]) -> Result<(), End> {
        let Some(revision) = batches.last().map(|b| b.revision) else {
            return Ok(());
        };
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            let behind = self
                .watchers
                .get(&id)
                .is_some_and(|w| revision >= w.next_rev);
            if !behind {
                continue;
            }
            let events = batches.iter().flat_map(|b| b.events.iter());
            self.deliver(id, events, revision).await?;
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next_rev = revision + 1;
            }
        }
        Ok(())
    }

    /// The applied-events channel moved on without this stream: replay every
    /// watcher from history up to the current revision.
    async fn catch_up(&mut self) -> Result<(), End> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.replay(id).await?;
        }
        Ok(())
    }

    async fn on_progress_tick(&mut self) -> Result<(), End> {
        let rev = self.node.store().revision();
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.next_rev > rev)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.send(pb::WatchResponse {
                header: Some(self.header(rev)),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
