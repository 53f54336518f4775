//! Measures the store's hot paths in one thread: applying puts of 256-byte
//! values over many distinct keys, ranging over a 100-key prefix, replaying
//! recent changes, compaction, and a snapshot round trip. Run with
//! `cargo run --release -p nines-store --example apply_throughput [KEYS]`.

use std::time::{Duration, Instant};

use nines_store::{Command, PutRequest, RangeRequest, Store};

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn key(i: usize) -> Vec<u8> {
    format!("key/{i:08}").into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 200_000,
    };
    let value = vec![b'v'; 256];
    let mut store = Store::new();

    // Two rounds over the keyspace: creates, then updates of existing keys.
    for round in ["create", "update"] {
        let started = Instant::now();
        for i in 0..keys {
            let applied = store.apply(&Command::Put(PutRequest {
                key: key(i),
                value: value.clone(),
                ..PutRequest::default()
            }));
            assert!(applied.result.is_ok());
        }
        let took = started.elapsed();
        println!(
            "put ({round}): {keys} puts in {took:?}: {:.0} puts/s",
            per_sec(keys, took)
        );
    }

    let ranges = 10_000;
    let started = Instant::now();
    let mut returned = 0;
    for i in 0..ranges {
        let block = (i * 7919) % (keys / 100).max(1);
        let prefix = format!("key/{:06}", block).into_bytes();
        let mut end = prefix.clone();
        *end.last_mut().expect("non-empty prefix") += 1;
        let r = store.range(&RangeRequest {
            key: prefix,
            range_end: end,
            ..RangeRequest::default()
        })?;
        returned += r.kvs.len();
    }
    let took = started.elapsed();
    println!(
        "range of a 100-key prefix: {:.1} us each ({returned} kvs returned)",
        took.as_secs_f64() * 1e6 / ranges as f64
    );

    let started = Instant::now();
    let since = store.revision() - 1000;
    let events = store.changes(&[0], &[0], since, usize::MAX)?;
    println!(
        "changes over the last 1000 revisions: {} events in {:?}",
        events.len(),
        started.elapsed()
    );

    let mut snapshot = Vec::new();
    let started = Instant::now();
    store.write_snapshot(&mut snapshot)?;
    let wrote = started.elapsed();
    let started = Instant::now();
    let restored = Store::read_snapshot(&mut snapshot.as_slice())?;
    println!(
        "snapshot: {} MiB written in {wrote:?}, read and verified in {:?}",
        snapshot.len() / (1024 * 1024),
        started.elapsed()
    );
    assert_eq!(restored.revision(), store.revision());

    let started = Instant::now();
    let applied = store.apply(&Command::Compact {
        revision: store.revision(),
    });
    assert!(applied.result.is_ok());
    println!(
        "compaction of {} revisions in {:?}; {} bytes kept",
        keys * 2,
        started.elapsed(),
        store.approx_size_bytes()
    );
    Ok(())
}
