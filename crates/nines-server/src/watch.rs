//! `etcdserverpb.Watch`: many watchers on one bidirectional stream, fed by
//! the member's applied events through the fan-out hub (`watch_hub.rs`),
//! which encodes every event once for all watchers. A watcher starting in
//! the past is first replayed from the store's history, then follows live
//! events; each watcher delivers every revision once, in order. A stream's
//! session runs inside its response body (`watch_grpc.rs`) and takes every
//! batch waiting for it into one response per watcher. A slow stream never
//! slows writes or other streams: the hub's channel drops what a stream has
//! not read, and the stream catches up from history instead.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nines_raft::RaftNode;
use nines_store::{Event, EventKind};
use prost::bytes::Bytes;
use tokio::sync::broadcast;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_stream::StreamExt;
use tonic::Streaming;

use crate::pb::etcdserverpb as pb;
use crate::watch_grpc::{Outbox, SessionStream};
use crate::watch_hub::{encode_event, EncodedBatch, Hub, ResponseHead, WireResponse};

/// Watchers on one stream, at most.
pub const WATCHERS_PER_STREAM_MAX: usize = 10_000;
/// Applied batches taken together into one delivery, at most.
const COALESCE_BATCHES_MAX: usize = 256;
/// Watchers served in a row before a delivery gives way to queued work.
const YIELD_EVERY_WATCHERS: usize = 64;
/// Events read from history in one step of a replay.
const REPLAY_EVENTS_MAX: usize = 1000;
/// Bytes of events in one response before it is split (with `fragment`) or
/// sent on its own.
const RESPONSE_BYTES_SOFT_MAX: usize = 1024 * 1024;

/// The Watch service (served by [`crate::watch_grpc::WatchServer`]).
#[derive(Clone)]
pub struct WatchService {
    node: RaftNode,
    hub: Arc<Hub>,
    progress_interval: Duration,
    watchers: Arc<AtomicI64>,
}

impl WatchService {
    /// A watch service over `node`; watchers that ask for progress
    /// notifications get one every `progress_interval` (etcd: 10 minutes).
    pub fn new(node: RaftNode, progress_interval: Duration) -> WatchService {
        WatchService {
            hub: Arc::new(Hub::new(node.clone())),
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

    /// Opens a session for one client stream; its responses are the returned
    /// body. Must be called inside the runtime.
    pub(crate) fn open(&self, inbound: Streaming<pb::WatchRequest>) -> SessionStream {
        let outbox = Arc::new(Outbox::default());
        let mut progress = tokio::time::interval(self.progress_interval);
        progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let session = Session {
            node: self.node.clone(),
            events: self.hub.subscribe(),
            watchers: BTreeMap::new(),
            progress_watchers: 0,
            progress,
            next_id: 0,
            outbox: Arc::clone(&outbox),
            gauge: Arc::clone(&self.watchers),
        };
        SessionStream::new(outbox, session.run(inbound))
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

/// What decides the events a watcher gets from a delivery; two watchers
/// with equal views get the same events.
struct WatcherView {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    next_rev: i64,
}

impl WatcherView {
    fn of(w: &Watcher) -> WatcherView {
        WatcherView {
            key: w.key.clone(),
            range_end: w.range_end.clone(),
            no_put: w.no_put,
            no_delete: w.no_delete,
            prev_kv: w.prev_kv,
            next_rev: w.next_rev,
        }
    }

    fn is_of(&self, w: &Watcher) -> bool {
        self.next_rev == w.next_rev
            && self.no_put == w.no_put
            && self.no_delete == w.no_delete
            && self.prev_kv == w.prev_kv
            && self.key == w.key
            && self.range_end == w.range_end
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

/// Where to end the first fragment of `events`: after the event that brings
/// it to [`RESPONSE_BYTES_SOFT_MAX`], if any event is left after it.
fn fragment_cut(events: &[Bytes]) -> Option<usize> {
    let mut bytes = 0usize;
    for (i, e) in events.iter().enumerate() {
        bytes += e.len();
        if bytes >= RESPONSE_BYTES_SOFT_MAX {
            return (i + 1 < events.len()).then_some(i + 1);
        }
    }
    None
}

/// One client stream: its watchers, run by the stream's response body.
struct Session {
    node: RaftNode,
    events: broadcast::Receiver<Arc<EncodedBatch>>,
    watchers: BTreeMap<i64, Watcher>,
    /// Watchers that asked for progress notifications; the timer runs only
    /// while there is one.
    progress_watchers: usize,
    progress: Interval,
    next_id: i64,
    outbox: Arc<Outbox>,
    /// Active watchers over all streams; this session's share leaves with it.
    gauge: Arc<AtomicI64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.gauge
            .fetch_sub(self.watchers.len() as i64, Ordering::Relaxed);
    }
}

impl Session {
    /// Serves the stream until the client's side ends (or the member stops).
    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        self.progress.tick().await;
        loop {
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => self.on_request(req).await,
                    Some(Err(_)) | None => return,
                },
                ev = self.events.recv() => match ev {
                    Ok(batch) => self.on_batches(batch).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = self.progress.tick(), if self.progress_watchers > 0 => {
                    self.on_progress_tick().await
                }
            }
        }
    }

    /// Delivers `first` and every batch already waiting behind it, in one
    /// response per watcher for many revisions (as etcd batches); a lag of
    /// the hub or of this stream turns into a replay from history.
    async fn on_batches(&mut self, first: Arc<EncodedBatch>) {
        // Fan-out gives way to the write path: tasks already queued on this
        // worker (Raft, client requests) run first, and the batches the hub
        // publishes meanwhile join this delivery, so a busy member sends
        // fewer, fuller responses.
        tokio::task::yield_now().await;
        let mut live = Vec::new();
        let mut lagged = false;
        let mut next = Some(first);
        while let Some(batch) = next.take() {
            if batch.lagged_before {
                // What follows the marker is covered by the replay, which
                // reaches the store's current revision.
                lagged = true;
                break;
            }
            live.push(batch);
            if live.len() >= COALESCE_BATCHES_MAX {
                break;
            }
            next = match self.events.try_recv() {
                Ok(b) => Some(b),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    lagged = true;
                    None
                }
                Err(_) => None,
            };
        }
        self.on_events(&live).await;
        if lagged {
            self.catch_up().await;
        }
    }

    fn header(&self, revision: i64) -> pb::ResponseHeader {
        crate::header(&self.node, revision)
    }

    async fn send(&self, resp: pb::WatchResponse) {
        self.outbox.push(WireResponse::new(&resp, Vec::new())).await
    }

    fn add_watcher(&mut self, id: i64, w: Watcher) {
        if w.progress_notify {
            if self.progress_watchers == 0 {
                self.progress.reset();
            }
            self.progress_watchers += 1;
        }
        if let Some(old) = self.watchers.insert(id, w) {
            self.progress_watchers -= usize::from(old.progress_notify);
        } else {
            self.gauge.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove_watcher(&mut self, id: i64) -> bool {
        let Some(w) = self.watchers.remove(&id) else {
            return false;
        };
        self.progress_watchers -= usize::from(w.progress_notify);
        self.gauge.fetch_sub(1, Ordering::Relaxed);
        true
    }

    async fn on_request(&mut self, req: pb::WatchRequest) {
        use pb::watch_request::RequestUnion;
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                let existed = self.remove_watcher(c.watch_id);
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
                // The notification promises every event up to its revision,
                // so watchers the hub has not brought there yet are first
                // brought there from history.
                let rev = self.node.store().revision();
                let behind: Vec<i64> = self
                    .watchers
                    .iter()
                    .filter(|(_, w)| w.next_rev <= rev)
                    .map(|(id, _)| *id)
                    .collect();
                for id in behind {
                    self.replay(id).await;
                }
                self.send(pb::WatchResponse {
                    header: Some(self.header(rev)),
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
            None => {}
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) {
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
        .await;
        if id == self.next_id {
            self.next_id += 1;
        }
        let replay_needed = w.next_rev <= current;
        self.add_watcher(id, w);
        if replay_needed {
            self.replay(id).await;
        }
    }

    /// Delivers the history a watcher is behind on, up to the store's
    /// current revision; cancels it if that history was compacted.
    async fn replay(&mut self, id: i64) {
        for _ in 0..1_000_000 {
            let Some(w) = self.watchers.get(&id) else {
                return;
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
                    self.remove_watcher(id);
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
                    let upto = if done {
                        current
                    } else {
                        last.unwrap_or(current)
                    };
                    let encoded: Vec<Bytes> = events
                        .iter()
                        .filter(|e| e.kv.mod_revision >= w.next_rev && w.matches(e))
                        .map(|e| encode_event(e, w.prev_kv))
                        .collect();
                    let fragment = w.fragment;
                    self.deliver(id, fragment, encoded, upto).await;
                    let w = self.watchers.get_mut(&id).expect("watcher present");
                    w.next_rev = upto + 1;
                    if done {
                        return;
                    }
                }
            }
        }
    }

    /// Sends watcher `id` the encoded `events` (already filtered for it) in
    /// responses whose header revision is `revision`: one response, or with
    /// `fragment` pieces of about [`RESPONSE_BYTES_SOFT_MAX`] bytes.
    async fn deliver(&self, id: i64, fragment: bool, events: Vec<Bytes>, revision: i64) {
        let heads = ResponseHead::new(&self.header(revision));
        self.deliver_with(&heads, id, fragment, events.into()).await
    }

    /// [`Session::deliver`] with the response heads of the delivery.
    async fn deliver_with(
        &self,
        heads: &ResponseHead,
        id: i64,
        fragment: bool,
        events: Arc<[Bytes]>,
    ) {
        if events.is_empty() {
            return;
        }
        let cut = if fragment {
            fragment_cut(&events)
        } else {
            None
        };
        let Some(mut at) = cut else {
            return self
                .outbox
                .push(WireResponse::from_parts(
                    heads.for_watcher(id, false),
                    events,
                ))
                .await;
        };
        // With `fragment`, pieces of about RESPONSE_BYTES_SOFT_MAX, each but
        // the last marked as followed by more.
        let mut rest: &[Bytes] = &events;
        loop {
            let (piece, after) = rest.split_at(at);
            let more = !after.is_empty();
            self.outbox
                .push(WireResponse::from_parts(
                    heads.for_watcher(id, more),
                    piece.into(),
                ))
                .await;
            rest = after;
            if !more {
                return;
            }
            at = fragment_cut(rest).unwrap_or(rest.len());
        }
    }

    /// Delivers consecutive live batches (in revision order) to every
    /// watcher, in one response per watcher. Watchers that want the same
    /// events (same range, filters and position, as when a client opens many
    /// watches on one prefix) share one list of them; the response header is
    /// encoded once.
    async fn on_events(&mut self, batches: &[Arc<EncodedBatch>]) {
        let Some(revision) = batches.last().map(|b| b.revision) else {
            return;
        };
        let heads = ResponseHead::new(&self.header(revision));
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        let mut shared: Option<(WatcherView, Arc<[Bytes]>)> = None;
        for (n, id) in ids.into_iter().enumerate() {
            if n > 0 && n % YIELD_EVERY_WATCHERS == 0 {
                // Let Raft and client requests queued on this worker run
                // between groups of watchers.
                tokio::task::yield_now().await;
            }
            let Some(w) = self.watchers.get(&id) else {
                continue;
            };
            if revision < w.next_rev {
                continue;
            }
            let events = match &shared {
                Some((view, events)) if view.is_of(w) => Arc::clone(events),
                _ => {
                    let events: Arc<[Bytes]> = batches
                        .iter()
                        .flat_map(|b| &b.events)
                        .filter(|e| {
                            let ev = e.event();
                            ev.kv.mod_revision >= w.next_rev && w.matches(ev)
                        })
                        .map(|e| e.bytes(w.prev_kv).clone())
                        .collect();
                    shared = Some((WatcherView::of(w), Arc::clone(&events)));
                    events
                }
            };
            let fragment = w.fragment;
            self.deliver_with(&heads, id, fragment, events).await;
            if let Some(w) = self.watchers.get_mut(&id) {
                w.next_rev = revision + 1;
            }
        }
    }

    /// The hub's channel moved on without this stream (or the hub missed
    /// applied events): replay every watcher from history up to the current
    /// revision.
    async fn catch_up(&mut self) {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.replay(id).await;
        }
    }

    async fn on_progress_tick(&mut self) {
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
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_cut_after_the_soft_max_only_with_events_left() {
        let big = Bytes::from(vec![0u8; RESPONSE_BYTES_SOFT_MAX / 2]);
        let small = Bytes::from_static(b"e");
        assert_eq!(fragment_cut(&[small.clone(), small.clone()]), None);
        assert_eq!(fragment_cut(&[big.clone(), big.clone()]), None);
        assert_eq!(
            fragment_cut(&[big.clone(), big.clone(), small.clone()]),
            Some(2)
        );
        assert_eq!(
            fragment_cut(&[big.clone(), small, big.clone(), big]),
            Some(3)
        );
    }

    #[test]
    fn ranges_follow_etcds_conventions() {
        assert!(in_range(b"a", b"a", b""));
        assert!(!in_range(b"ab", b"a", b""));
        assert!(in_range(b"zz", b"b", b"\0"));
        assert!(!in_range(b"a", b"b", b"\0"));
        assert!(in_range(b"a/x", b"a/", b"a0"));
        assert!(!in_range(b"a0", b"a/", b"a0"));
    }
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod fan_out_tests;
