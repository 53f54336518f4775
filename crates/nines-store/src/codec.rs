//! The byte encoding of snapshot records: fixed-width little-endian
//! integers and length-prefixed byte strings, written by hand so values are
//! copied as slices rather than byte by byte. Framing, checksums and the
//! order of records belong to `snapshot.rs`; this module only turns one
//! record into bytes and back, refusing any payload it cannot fully account for.

use std::borrow::Cow;

use crate::history::{Entry, Live};

/// One framed record of a snapshot.
pub(crate) enum Record<'a> {
    /// The store's revisions; always the first record.
    Meta {
        /// The store's current revision.
        revision: i64,
        /// The store's compaction revision.
        compact_revision: i64,
    },
    /// One lease (its keys are rebuilt from the key histories).
    Lease {
        /// Lease id.
        id: i64,
        /// Granted TTL in seconds.
        ttl_secs: i64,
    },
    /// One raised alarm (after the leases, before the keys).
    Alarm {
        /// The member that raised it.
        member_id: u64,
        /// 0 = NOSPACE, 1 = CORRUPT.
        kind: u8,
    },
    /// A key and a run of its history; consecutive records with the same
    /// key continue it.
    Key {
        /// The key.
        key: Cow<'a, [u8]>,
        /// A run of its entries, oldest first.
        entries: Cow<'a, [Entry]>,
    },
    /// The last record: counts and the crc32 of every byte before it.
    End {
        /// Lease records written.
        leases: u64,
        /// Distinct keys written.
        keys: u64,
        /// Entries written over all keys.
        entries: u64,
        /// Records before this one.
        records: u64,
        /// crc32 of every snapshot byte before this record.
        checksum: u32,
    },
}

const TAG_META: u8 = 0;
const TAG_LEASE: u8 = 1;
const TAG_KEY: u8 = 2;
const TAG_END: u8 = 3;
const TAG_ALARM: u8 = 4;
const TOMBSTONE: u8 = 0;
const LIVE: u8 = 1;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl Record<'_> {
    /// Appends the record's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Record::Meta {
                revision,
                compact_revision,
            } => {
                out.push(TAG_META);
                out.extend_from_slice(&revision.to_le_bytes());
                out.extend_from_slice(&compact_revision.to_le_bytes());
            }
            Record::Lease { id, ttl_secs } => {
                out.push(TAG_LEASE);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&ttl_secs.to_le_bytes());
            }
            Record::Alarm { member_id, kind } => {
                out.push(TAG_ALARM);
                out.extend_from_slice(&member_id.to_le_bytes());
                out.push(*kind);
            }
            Record::Key { key, entries } => {
                out.push(TAG_KEY);
                put_bytes(out, key);
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for e in entries.iter() {
                    out.extend_from_slice(&e.mod_revision.to_le_bytes());
                    out.extend_from_slice(&e.sub.to_le_bytes());
                    match &e.live {
                        None => out.push(TOMBSTONE),
                        Some(l) => {
                            out.push(LIVE);
                            out.extend_from_slice(&l.create_revision.to_le_bytes());
                            out.extend_from_slice(&l.version.to_le_bytes());
                            out.extend_from_slice(&l.lease.to_le_bytes());
                            put_bytes(out, &l.value);
                        }
                    }
                }
            }
            Record::End {
                leases,
                keys,
                entries,
                records,
                checksum,
            } => {
                out.push(TAG_END);
                for n in [leases, keys, entries, records] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
                out.extend_from_slice(&checksum.to_le_bytes());
            }
        }
    }

    /// Decodes one record; the payload must be consumed exactly.
    pub fn decode(payload: &[u8]) -> Result<Record<'static>, String> {
        let mut r = Cursor { rest: payload };
        let record = match r.u8()? {
            TAG_META => Record::Meta {
                revision: r.i64()?,
                compact_revision: r.i64()?,
            },
            TAG_LEASE => Record::Lease {
                id: r.i64()?,
                ttl_secs: r.i64()?,
            },
            TAG_ALARM => Record::Alarm {
                member_id: r.u64()?,
                kind: r.u8()?,
            },
            TAG_KEY => {
                let key = r.bytes()?;
                let n = r.u32()? as usize;
                // Each entry takes at least 13 bytes, which bounds the
                // allocation by the payload actually present.
                if n > r.rest.len() / 13 {
                    return Err(format!("claims {n} entries in {} bytes", r.rest.len()));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(r.entry()?);
                }
                Record::Key {
                    key: Cow::Owned(key),
                    entries: Cow::Owned(entries),
                }
            }
            TAG_END => Record::End {
                leases: r.u64()?,
                keys: r.u64()?,
                entries: r.u64()?,
                records: r.u64()?,
                checksum: r.u32()?,
            },
            tag => return Err(format!("unknown record tag {tag}")),
        };
        if !r.rest.is_empty() {
            return Err(format!("{} bytes left over", r.rest.len()));
        }
        Ok(record)
    }
}

/// Reads fixed-width fields off the front of a payload.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.rest.len() < N {
            return Err("ends inside a field".into());
        }
        let (head, tail) = self.rest.split_at(N);
        self.rest = tail;
        Ok(head.try_into().expect("split at N"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.u32()? as usize;
        if self.rest.len() < len {
            return Err("ends inside a byte string".into());
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head.to_vec())
    }

    fn entry(&mut self) -> Result<Entry, String> {
        let mod_revision = self.i64()?;
        let sub = self.u32()?;
        let live = match self.u8()? {
            TOMBSTONE => None,
            LIVE => Some(Live {
                create_revision: self.i64()?,
                version: self.i64()?,
                lease: self.i64()?,
                value: self.bytes()?,
            }),
            kind => return Err(format!("unknown entry kind {kind}")),
        };
        Ok(Entry {
            mod_revision,
            sub,
            live,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &Record<'_>) -> Vec<u8> {
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        let decoded = Record::decode(&bytes).expect("decodes");
        let mut again = Vec::new();
        decoded.encode(&mut again);
        assert_eq!(again, bytes);
        bytes
    }

    #[test]
    fn every_record_kind_round_trips_exactly() {
        round_trip(&Record::Meta {
            revision: 9,
            compact_revision: 3,
        });
        round_trip(&Record::Lease {
            id: -4,
            ttl_secs: 60,
        });
        let entries = vec![
            Entry {
                mod_revision: 2,
                sub: 1,
                live: Some(Live {
                    value: b"value".to_vec(),
                    lease: 7,
                    create_revision: 2,
                    version: 1,
                }),
            },
            Entry {
                mod_revision: 5,
                sub: 0,
                live: None,
            },
        ];
        round_trip(&Record::Key {
            key: Cow::Borrowed(b"k"),
            entries: Cow::Borrowed(&entries),
        });
        round_trip(&Record::End {
            leases: 1,
            keys: 2,
            entries: 3,
            records: 4,
            checksum: 0xdead_beef,
        });
    }

    #[test]
    fn short_long_and_unknown_payloads_are_refused() {
        let bytes = round_trip(&Record::Lease { id: 1, ttl_secs: 2 });
        assert!(Record::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(Record::decode(&long).is_err());
        assert!(Record::decode(&[9]).is_err());
        assert!(Record::decode(&[]).is_err());
        // A key record claiming more entries than its bytes could hold.
        let mut claim = vec![TAG_KEY];
        claim.extend_from_slice(&1u32.to_le_bytes());
        claim.push(b'k');
        claim.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Record::decode(&claim).is_err());
    }
}
