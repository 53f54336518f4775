//! The data files of a set: a zstd stream of framed records
//! `len: u32 LE | crc32(payload): u32 LE | payload`, each payload one
//! bincode-encoded [`Record`]. The frame checksum finds damage inside the
//! stream; the file's SHA-256 in the manifest finds damage anywhere,
//! including bytes zstd would skip. This module knows nothing of sets or
//! repositories.

use std::io::{self, Read, Write};

use nines_store::KeyValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CorruptReason;
use crate::manifest::hex;

/// One record of a data file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A live key at the set's revision (full sets).
    Key(KeyValue),
    /// A change to one key (differential and incremental sets). For a put
    /// `kv` is the key after it; for a delete only `key` and `mod_revision`
    /// (the deleting revision) are set.
    Event {
        /// True for a delete, false for a put.
        delete: bool,
        /// The key as the event left it.
        kv: KeyValue,
    },
    /// A lease alive when the set was taken.
    Lease {
        /// Lease id.
        id: i64,
        /// Granted TTL in seconds.
        ttl_secs: i64,
    },
}

/// What a finished data file holds, for its manifest entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStats {
    /// Stored (compressed) bytes.
    pub bytes: u64,
    /// Record bytes before compression, frames included.
    pub raw_bytes: u64,
    /// Number of records.
    pub records: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
}

/// Passes writes through while hashing and counting them.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes records to a compressed data file.
pub struct RecordWriter<W: Write> {
    encoder: zstd::Encoder<'static, HashingWriter<W>>,
    raw_bytes: u64,
    records: u64,
    frame: Vec<u8>,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a data file on `inner`.
    pub fn new(inner: W) -> io::Result<RecordWriter<W>> {
        let sink = HashingWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        };
        Ok(RecordWriter {
            encoder: zstd::Encoder::new(sink, crate::ZSTD_LEVEL)?,
            raw_bytes: 0,
            records: 0,
            frame: Vec::new(),
        })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        let payload = bincode::serialize(record).map_err(io::Error::other)?;
        if payload.len() > crate::RECORD_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "record larger than RECORD_BYTES_MAX",
            ));
        }
        self.frame.clear();
        self.frame
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.frame
            .extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        self.frame.extend_from_slice(&payload);
        self.encoder.write_all(&self.frame)?;
        self.raw_bytes += self.frame.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Ends the zstd stream and returns the underlying writer and the file's stats.
    pub fn finish(self) -> io::Result<(W, FileStats)> {
        let mut sink = self.encoder.finish()?;
        sink.flush()?;
        let stats = FileStats {
            bytes: sink.bytes,
            raw_bytes: self.raw_bytes,
            records: self.records,
            sha256: hex(&sink.hash.finalize()),
        };
        Ok((sink.inner, stats))
    }
}

/// Reads records from a compressed data file, checking every frame.
pub struct RecordReader<R: Read> {
    decoder: zstd::Decoder<'static, io::BufReader<R>>,
    index: u64,
    done: bool,
}

impl<R: Read> RecordReader<R> {
    /// Reads a data file from `inner`.
    pub fn new(inner: R) -> Result<RecordReader<R>, CorruptReason> {
        Ok(RecordReader {
            decoder: zstd::Decoder::new(inner).map_err(CorruptReason::Decompress)?,
            index: 0,
            done: false,
        })
    }

    /// The next record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, CorruptReason> {
        if self.done {
            return Ok(None);
        }
        let index = self.index;
        let bad = |what| CorruptReason::Record { index, what };
        let mut head = [0u8; 8];
        match read_full(&mut self.decoder, &mut head).map_err(CorruptReason::Decompress)? {
            0 => {
                self.done = true;
                return Ok(None);
            }
            8 => {}
            _ => return Err(bad("cut short in its frame header")),
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > crate::RECORD_BYTES_MAX {
            return Err(bad("length over RECORD_BYTES_MAX"));
        }
        let mut payload = vec![0u8; len];
        if read_full(&mut self.decoder, &mut payload).map_err(CorruptReason::Decompress)? != len {
            return Err(bad("cut short in its payload"));
        }
        if crc32fast::hash(&payload) != crc {
            return Err(bad("crc32 mismatch"));
        }
        let record = bincode::deserialize(&payload).map_err(|_| bad("payload does not decode"))?;
        self.index += 1;
        Ok(Some(record))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// SHA-256 (lowercase hex) and length of everything `r` yields.
pub fn sha256_of<R: Read>(mut r: R) -> io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hash.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        let mut out = vec![Record::Lease {
            id: 5,
            ttl_secs: 30,
        }];
        for i in 0..500 {
            out.push(Record::Key(KeyValue {
                key: format!("k/{i:04}").into_bytes(),
                value: vec![b'x'; i % 40],
                create_revision: i as i64 + 1,
                mod_revision: i as i64 + 1,
                version: 1,
                lease: if i % 7 == 0 { 5 } else { 0 },
            }));
        }
        out.push(Record::Event {
            delete: true,
            kv: KeyValue {
                key: b"k/0001".to_vec(),
                mod_revision: 600,
                ..KeyValue::default()
            },
        });
        out
    }

    fn encode(rs: &[Record]) -> (Vec<u8>, FileStats) {
        let mut w = RecordWriter::new(Vec::new()).expect("writer");
        for r in rs {
            w.write(r).expect("write");
        }
        w.finish().expect("finish")
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Record>, CorruptReason> {
        let mut r = RecordReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_with_their_stats() {
        let rs = records();
        let (bytes, stats) = encode(&rs);
        assert_eq!(stats.records, rs.len() as u64);
        assert_eq!(stats.bytes, bytes.len() as u64);
        assert_eq!(
            stats.sha256,
            sha256_of(&bytes[..]).expect("hash").0,
            "the streamed hash is the file's"
        );
        assert!(stats.bytes < stats.raw_bytes, "the data compresses");
        assert_eq!(decode(&bytes).expect("decodes"), rs);
    }

    #[test]
    fn a_flipped_byte_never_decodes_to_the_same_records_silently() {
        let rs = records();
        let (bytes, stats) = encode(&rs);
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let hash = sha256_of(&bad[..]).expect("hash").0;
            assert_ne!(hash, stats.sha256, "the file checksum sees byte {i}");
            if let Ok(got) = decode(&bad) {
                // zstd may skip a damaged byte (e.g. in a frame's padding);
                // then the records must still be the right ones.
                assert_eq!(got, rs, "byte {i} changed records without an error");
            }
        }
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        let (bytes, _) = encode(&records());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
    }
}
