//! The watch fan-out hub and the wire form of watch responses. One hub task
//! per member takes Raft's applied-events broadcast, encodes each event once
//! into its `mvccpb.Event` bytes, and republishes the encoded batches to every
//! watch stream of the member. A stream then builds a watcher's
//! `WatchResponse` by copying those bytes behind a small head, so protobuf
//! encoding is paid once per event instead of once per event and watcher, and
//! the apply path wakes this one task instead of every stream. The hub keeps
//! no watcher state and never reads the store; a stream that misses batches
//! (the hub's channel or Raft's moved on without it) catches up from the
//! store's history itself.

use std::sync::{Arc, Once, OnceLock};

use nines_raft::{AppliedEvents, RaftNode};
use nines_store::Event;
use prost::bytes::{BufMut, Bytes};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tokio::sync::broadcast;

use crate::convert::event_to_pb;
use crate::pb::etcdserverpb as pb;

/// Encoded batches the hub keeps for streams that are behind; a stream
/// further behind is told it lagged and replays from history. A batch holds
/// at least one revision, so a stream has at least this many revisions of
/// slack, as it had on Raft's applied-events channel.
const HUB_CHANNEL_MAX: usize = 1024;

/// Applied batches (one per write) the hub merges into one, at most.
const MERGE_BATCHES_MAX: usize = 1024;

/// Events after which the hub stops merging: what slow streams can hold in
/// memory is bounded by this times [`HUB_CHANNEL_MAX`] (plus one batch's
/// worth each), about what 4096 revisions of large transactions held on
/// Raft's channel.
const MERGE_EVENTS_MAX: usize = 256;

const _: () = assert!(HUB_CHANNEL_MAX <= nines_raft::state_machine::EVENTS_CHANNEL_MAX);

/// Field number of `WatchResponse.header`.
const HEADER_FIELD: u32 = 1;
/// Field number of `WatchResponse.watch_id`.
const WATCH_ID_FIELD: u32 = 2;
/// Field number of `WatchResponse.fragment`.
const FRAGMENT_FIELD: u32 = 7;
/// Field number of `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;

/// One applied event, encoded once for every watcher.
#[derive(Debug)]
pub(crate) struct EncodedEvent {
    /// The batch of applied events this one belongs to.
    source: Arc<Vec<Event>>,
    /// Its place in `source`.
    index: usize,
    /// The event as an `mvccpb.Event` without its previous value.
    plain: Bytes,
    /// The event with its previous value, encoded on first use (only
    /// watchers with `prev_kv` need it).
    with_prev: OnceLock<Bytes>,
}

impl EncodedEvent {
    /// The event as applied, for filtering by key and kind.
    pub fn event(&self) -> &Event {
        &self.source[self.index]
    }

    /// The event's wire bytes, with its previous value if `prev_kv`.
    pub fn bytes(&self, prev_kv: bool) -> &Bytes {
        let event = self.event();
        if !prev_kv || event.prev_kv.is_none() {
            return &self.plain;
        }
        self.with_prev.get_or_init(|| encode_event(event, true))
    }
}

/// Consecutive applied revisions, every event encoded once for all watchers.
#[derive(Debug, Default)]
pub(crate) struct EncodedBatch {
    /// Store revision after these events (0 for a lag marker).
    pub revision: i64,
    /// The events, in revision order.
    pub events: Vec<EncodedEvent>,
    /// The hub missed applied events before this batch: every stream must
    /// replay its watchers from history.
    pub lagged_before: bool,
}

impl EncodedBatch {
    /// Adds the events of `applied`, the revision after the batch's last.
    pub fn push(&mut self, applied: &AppliedEvents) {
        debug_assert!(applied.revision > self.revision, "revisions go up");
        self.revision = applied.revision;
        self.events.extend(
            applied
                .events
                .iter()
                .enumerate()
                .map(|(index, e)| EncodedEvent {
                    source: Arc::clone(&applied.events),
                    index,
                    plain: encode_event(e, false),
                    with_prev: OnceLock::new(),
                }),
        );
    }

    /// A batch without events that tells every stream the hub lagged.
    pub fn lag_marker() -> EncodedBatch {
        EncodedBatch {
            lagged_before: true,
            ..Default::default()
        }
    }
}

/// Encodes one store event as an `mvccpb.Event`.
pub(crate) fn encode_event(e: &Event, prev_kv: bool) -> Bytes {
    let e = Event {
        kind: e.kind,
        kv: e.kv.clone(),
        prev_kv: if prev_kv { e.prev_kv.clone() } else { None },
    };
    Bytes::from(event_to_pb(e).encode_to_vec())
}

/// A `WatchResponse` ready for the wire: `head`, the message without its
/// events, encoded; then `events`, each an encoded `mvccpb.Event`, as field
/// 11. Written straight into the gRPC frame, so a watcher's copy of an event
/// is made there and nowhere else. The bytes are what prost writes for the
/// whole message, since `events` is its last field. Watchers that get the
/// same events in one delivery share one list of them.
#[derive(Debug)]
pub(crate) struct WireResponse {
    head: Bytes,
    events: Arc<[Bytes]>,
}

impl WireResponse {
    /// `head` (which carries no events itself) followed by `events`.
    pub fn new(head: &pb::WatchResponse, events: Vec<Bytes>) -> WireResponse {
        debug_assert!(head.events.is_empty(), "events are passed encoded");
        WireResponse {
            head: Bytes::from(head.encode_to_vec()),
            events: events.into(),
        }
    }

    /// The encoded `head` (see [`ResponseHead`]) followed by `events`.
    pub fn from_parts(head: Bytes, events: Arc<[Bytes]>) -> WireResponse {
        WireResponse { head, events }
    }

    /// Bytes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.head.len()
            + self
                .events
                .iter()
                .map(|e| 1 + encoded_len_varint(e.len() as u64) + e.len())
                .sum::<usize>()
    }

    /// Writes the message into `dst`.
    pub fn write_to(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.head);
        for e in self.events.iter() {
            encode_key(EVENTS_FIELD, WireType::LengthDelimited, dst);
            encode_varint(e.len() as u64, dst);
            dst.put_slice(e);
        }
    }
}

/// The head of the event responses of one delivery: the response header is
/// encoded once, and each watcher's head is that plus its watch id (and the
/// fragment flag), as prost would write `WatchResponse` fields 1, 2 and 7.
pub(crate) struct ResponseHead {
    header_field: Vec<u8>,
}

impl ResponseHead {
    /// Heads carrying `header`.
    pub fn new(header: &pb::ResponseHeader) -> ResponseHead {
        let mut header_field = Vec::with_capacity(header.encoded_len() + 2);
        prost::encoding::message::encode(HEADER_FIELD, header, &mut header_field);
        ResponseHead { header_field }
    }

    /// The encoded head of watcher `watch_id`'s response.
    pub fn for_watcher(&self, watch_id: i64, fragment: bool) -> Bytes {
        let mut head = Vec::with_capacity(self.header_field.len() + 14);
        head.extend_from_slice(&self.header_field);
        if watch_id != 0 {
            encode_key(WATCH_ID_FIELD, WireType::Varint, &mut head);
            encode_varint(watch_id as u64, &mut head);
        }
        if fragment {
            encode_key(FRAGMENT_FIELD, WireType::Varint, &mut head);
            encode_varint(1, &mut head);
        }
        Bytes::from(head)
    }
}

/// The member's fan-out hub: started by the first watch stream, it runs until
/// Raft's applied-events channel closes (the member stops).
pub(crate) struct Hub {
    node: RaftNode,
    tx: broadcast::Sender<Arc<EncodedBatch>>,
    started: Once,
}

impl Hub {
    /// A hub over `node`'s applied events (its task starts on first use).
    pub fn new(node: RaftNode) -> Hub {
        let (tx, _) = broadcast::channel(HUB_CHANNEL_MAX);
        Hub {
            node,
            tx,
            started: Once::new(),
        }
    }

    /// A receiver of every batch the hub publishes from now on. Must be
    /// called inside the runtime (the first call spawns the hub's task).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EncodedBatch>> {
        self.started.call_once(|| {
            // Subscribed here, before any stream's receiver exists, so every
            // batch applied after a stream subscribed reaches that stream.
            let applied = self.node.subscribe_events();
            tokio::spawn(run(self.node.clone(), applied, self.tx.clone()));
        });
        self.tx.subscribe()
    }
}

/// The hub's task: take every batch applied together, encode its events
/// once and publish them as one batch (so a stream sends a watcher one
/// response for a whole Raft entry of writes, not one per write); on a lag,
/// publish a marker at once so streams replay what the hub missed.
async fn run(
    node: RaftNode,
    mut applied: broadcast::Receiver<AppliedEvents>,
    tx: broadcast::Sender<Arc<EncodedBatch>>,
) {
    loop {
        let first = match applied.recv().await {
            Ok(b) => b,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let _ = tx.send(Arc::new(EncodedBatch::lag_marker()));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // The apply path sends its events while it holds the store's write
        // lock, so once the read lock is ours every batch of the entries
        // being applied with `first` is in the channel.
        drop(node.store());
        let mut batch = EncodedBatch::default();
        batch.push(&first);
        let mut lagged = false;
        for _ in 1..MERGE_BATCHES_MAX {
            if batch.events.len() >= MERGE_EVENTS_MAX {
                break;
            }
            match applied.try_recv() {
                Ok(b) => batch.push(&b),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    lagged = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // No stream is fine: nobody watches now.
        let _ = tx.send(Arc::new(batch));
        if lagged {
            let _ = tx.send(Arc::new(EncodedBatch::lag_marker()));
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use nines_store::{EventKind, KeyValue};

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: 2,
            mod_revision: rev,
            version: 3,
            value: value.as_bytes().to_vec(),
            lease: 7,
        }
    }

    #[test]
    fn encoded_response_is_what_prost_writes() {
        let events = [
            Event {
                kind: EventKind::Put,
                kv: kv("a", "1", 5),
                prev_kv: Some(kv("a", "0", 4)),
            },
            Event {
                kind: EventKind::Delete,
                kv: kv("b", "", 5),
                prev_kv: None,
            },
        ];
        for prev_kv in [false, true] {
            let head = pb::WatchResponse {
                header: Some(pb::ResponseHeader {
                    cluster_id: 1,
                    member_id: 2,
                    revision: 5,
                    raft_term: 3,
                }),
                watch_id: 9,
                fragment: true,
                ..Default::default()
            };
            let bytes: Vec<Bytes> = events.iter().map(|e| encode_event(e, prev_kv)).collect();
            let wire = WireResponse::new(&head, bytes);
            let mut ours = Vec::new();
            wire.write_to(&mut ours);
            assert_eq!(ours.len(), wire.encoded_len());
            let mut full = head.clone();
            full.events = events
                .iter()
                .map(|e| {
                    event_to_pb(Event {
                        kind: e.kind,
                        kv: e.kv.clone(),
                        prev_kv: if prev_kv { e.prev_kv.clone() } else { None },
                    })
                })
                .collect();
            assert_eq!(ours, full.encode_to_vec());
            assert_eq!(
                pb::WatchResponse::decode(ours.as_slice()).expect("decodes"),
                full
            );
        }
    }

    #[test]
    fn shared_heads_are_what_prost_writes() {
        let header = pb::ResponseHeader {
            cluster_id: 11,
            member_id: 12,
            revision: 300,
            raft_term: 4,
        };
        let heads = ResponseHead::new(&header);
        for (watch_id, fragment) in [(0, false), (7, false), (1 << 40, true), (-1, false)] {
            let full = pb::WatchResponse {
                header: Some(header),
                watch_id,
                fragment,
                ..Default::default()
            };
            assert_eq!(
                heads.for_watcher(watch_id, fragment).to_vec(),
                full.encode_to_vec()
            );
        }
    }

    #[test]
    fn batch_encodes_previous_values_only_when_asked() {
        let applied = AppliedEvents {
            revision: 5,
            events: Arc::new(vec![Event {
                kind: EventKind::Put,
                kv: kv("a", "1", 5),
                prev_kv: Some(kv("a", "0", 4)),
            }]),
        };
        let mut batch = EncodedBatch::default();
        batch.push(&applied);
        let plain = batch.events[0].bytes(false).clone();
        let with_prev = batch.events[0].bytes(true).clone();
        let decode = |b: Bytes| crate::pb::mvccpb::Event::decode(b).expect("decodes");
        assert!(decode(plain).prev_kv.is_none());
        assert_eq!(
            decode(with_prev).prev_kv.expect("prev_kv").value,
            b"0".to_vec()
        );
    }
}
