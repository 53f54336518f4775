//! Counting watchers without touching the Watch service: the gRPC layer
//! follows each Watch response stream's messages just far enough to see
//! `watch_id`, `created` and `canceled`. prost writes fields in number
//! order, so those come right after the header and before the events: only
//! the first [`PREFIX_BYTES`] of a message are looked at, the rest is
//! skipped by length. A stream's watchers leave the count when it ends.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Bytes of each response message scanned: the header (at most about 40
/// bytes), `watch_id`, `created` and `canceled` fit well within it.
pub(super) const PREFIX_BYTES: usize = 96;
/// The gRPC message header: a compressed flag and a big-endian length.
const FRAME_HEADER_BYTES: usize = 5;

/// The watchers of one Watch stream, as its responses announce them.
pub(super) struct WatchTally {
    /// The member-wide count this stream adds to.
    watchers: Arc<AtomicI64>,
    /// Ids created and not yet canceled on this stream.
    open: HashSet<i64>,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    message: Option<Message>,
}

/// The message being read.
struct Message {
    remaining: usize,
    compressed: bool,
    prefix: Vec<u8>,
}

/// What a response said about its watcher.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    watch_id: i64,
    created: bool,
    canceled: bool,
}

impl WatchTally {
    /// A tally adding to `watchers`.
    pub(super) fn new(watchers: Arc<AtomicI64>) -> WatchTally {
        WatchTally {
            watchers,
            open: HashSet::new(),
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            message: None,
        }
    }

    /// Reads the next bytes of the response stream.
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.message.as_mut() {
                None => {
                    let n = (FRAME_HEADER_BYTES - self.header_len).min(data.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                    self.header_len += n;
                    data = &data[n..];
                    if self.header_len == FRAME_HEADER_BYTES {
                        self.header_len = 0;
                        let h = self.header;
                        let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                        self.message = Some(Message {
                            remaining: len,
                            compressed: h[0] != 0,
                            prefix: Vec::with_capacity(len.min(PREFIX_BYTES)),
                        });
                        if len == 0 {
                            self.finish_message();
                        }
                    }
                }
                Some(message) => {
                    let n = message.remaining.min(data.len());
                    let keep = (PREFIX_BYTES - message.prefix.len()).min(n);
                    message.prefix.extend_from_slice(&data[..keep]);
                    message.remaining -= n;
                    data = &data[n..];
                    if message.remaining == 0 {
                        self.finish_message();
                    }
                }
            }
        }
    }

    fn finish_message(&mut self) {
        let Some(message) = self.message.take() else {
            return;
        };
        // A compressed message cannot be read here; the member does not
        // compress responses.
        if message.compressed {
            return;
        }
        let Some(seen) = scan(&message.prefix) else {
            return;
        };
        if seen.created && !seen.canceled {
            if self.open.insert(seen.watch_id) {
                self.watchers.fetch_add(1, Ordering::Relaxed);
            }
        } else if seen.canceled && self.open.remove(&seen.watch_id) {
            self.watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for WatchTally {
    fn drop(&mut self) {
        let open = i64::try_from(self.open.len()).unwrap_or(i64::MAX);
        self.watchers.fetch_sub(open, Ordering::Relaxed);
    }
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads fields 1..=4 of a WatchResponse from the start of its encoding.
fn scan(mut b: &[u8]) -> Option<Seen> {
    let mut seen = Seen {
        watch_id: 0,
        created: false,
        canceled: false,
    };
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        let (field, wire) = (tag >> 3, tag & 7);
        if field > 4 {
            break;
        }
        match wire {
            0 => {
                let v = varint(&mut b)?;
                match field {
                    2 => seen.watch_id = v as i64,
                    3 => seen.created = v != 0,
                    4 => seen.canceled = v != 0,
                    _ => {}
                }
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                b = b.get(len..)?;
            }
            1 => b = b.get(8..)?,
            5 => b = b.get(4..)?,
            _ => return None,
        }
    }
    Some(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{ResponseHeader, WatchResponse};
    use crate::pb::mvccpb::{Event, KeyValue};
    use prost::Message as _;

    fn framed(r: &WatchResponse) -> Vec<u8> {
        let body = r.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: u64::MAX,
            member_id: u64::MAX,
            revision: i64::MAX,
            raft_term: u64::MAX,
        })
    }

    #[test]
    fn watchers_come_with_created_and_go_with_canceled_or_the_stream() {
        let count = Arc::new(AtomicI64::new(0));
        let mut tally = WatchTally::new(Arc::clone(&count));
        let mut stream = Vec::new();
        for id in [0, 7] {
            stream.extend(framed(&WatchResponse {
                header: header(),
                watch_id: id,
                created: true,
                ..Default::default()
            }));
        }
        // A big event message, a refused create and a cancel of an unknown id
        // change nothing.
        stream.extend(framed(&WatchResponse {
            header: header(),
            watch_id: 7,
            events: vec![Event {
                kv: Some(KeyValue {
                    key: b"k".to_vec(),
                    value: vec![b'v'; 10_000],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }));
        stream.extend(framed(&WatchResponse {
            header: header(),
            watch_id: 9,
            created: true,
            canceled: true,
            ..Default::default()
        }));
        stream.extend(framed(&WatchResponse {
            header: header(),
            watch_id: 42,
            canceled: true,
            ..Default::default()
        }));
        // Fed in awkward pieces, as HTTP/2 data frames may cut it.
        for chunk in stream.chunks(3) {
            tally.feed(chunk);
        }
        assert_eq!(count.load(Ordering::Relaxed), 2);
        tally.feed(&framed(&WatchResponse {
            header: header(),
            watch_id: 0,
            canceled: true,
            ..Default::default()
        }));
        assert_eq!(count.load(Ordering::Relaxed), 1);
        drop(tally);
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
