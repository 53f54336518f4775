//! Tests of `nines bench kv`: flag parsing, key and value shapes, pause
//! detection, error accounting, the --check-acked file, and whole runs and
//! verifications against a real single-member etcd (Debian `etcd-server`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;

use super::load::{finish_acked, key_for, new_load, ClientStats, Request, SplitMix64};
use super::verify::{print_verify_report, read_acked, verify_acked};
use super::*;

/// `nines bench` as a parser of its own, so tests go through the real flags.
#[derive(Parser, Debug)]
struct TestCli {
    /// The flags under test.
    #[command(flatten)]
    bench: BenchArgs,
}

fn try_kv_args(flags: &[&str]) -> Result<KvBenchArgs, clap::Error> {
    let argv = ["nines-bench", "kv"].iter().chain(flags).copied();
    match TestCli::try_parse_from(argv)?.bench.target {
        BenchTarget::Kv(args) => Ok(*args),
        BenchTarget::Watch(_) => unreachable!("parsed `kv` as another subcommand"),
    }
}

fn kv_args(flags: &[&str]) -> KvBenchArgs {
    try_kv_args(flags).expect("test flags parse")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a test runtime builds")
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
    assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
    for bad in ["", "s", "10x", "-1s", "1..2s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let args = kv_args(&[]);
    assert_eq!(args.op, KvOp::Put);
    assert_eq!((args.clients, args.conns), (1, 1));
    assert_eq!(
        (args.key_size, args.val_size, args.keyspace),
        (16, 256, 10_000)
    );
    assert_eq!((args.duration, args.total), (None, None));
    assert_eq!(args.gap_threshold, Duration::from_millis(200));
    assert_eq!(args.write_out, OutputFormat::Text);
    validate(&args).expect("the defaults are valid");
}

#[test]
fn conflicting_flags_are_refused() {
    assert!(try_kv_args(&["--duration", "1s", "--total", "5"]).is_err());
    assert!(try_kv_args(&["--verify", "f", "--check-acked", "g"]).is_err());
    assert!(try_kv_args(&["--verify", "f", "--gaps"]).is_err());
    assert!(try_kv_args(&["--read-percent", "101"]).is_err());
    assert!(try_kv_args(&["--op", "scan"]).is_err());
}

#[test]
fn validate_relates_flags_that_clap_cannot() {
    // "/bench/" is 7 bytes and keys up to 999 need 3 digits.
    assert!(validate(&kv_args(&["--key-size", "9", "--keyspace", "1000"])).is_err());
    validate(&kv_args(&["--key-size", "10", "--keyspace", "1000"])).expect("10 bytes fit");
    assert!(validate(&kv_args(&["--op", "get", "--gaps"])).is_err());
    assert!(validate(&kv_args(&["--op", "mixed", "--check-acked", "f"])).is_err());
    assert!(validate(&kv_args(&["--clients", "0"])).is_err());
    assert!(validate(&kv_args(&["--rate", "0"])).is_err());
    assert!(validate(&kv_args(&["--keyspace", "0"])).is_err());
    assert!(validate(&kv_args(&["--val-size", "2000000"])).is_err());
}

#[test]
fn keys_are_zero_padded_to_the_key_size() {
    assert_eq!(key_for("/bench/", 16, 42), b"/bench/000000042".to_vec());
    assert_eq!(key_for("/b/", 4, 7), b"/b/7".to_vec());
}

#[test]
fn random_choices_repeat_for_a_seed_and_stay_in_bounds() {
    let (mut first, mut second) = (SplitMix64(7), SplitMix64(7));
    for _ in 0..1_000 {
        let value = first.below(10);
        assert_eq!(value, second.below(10));
        assert!(value < 10);
    }
}

#[test]
fn fresh_writes_are_unique_and_carry_their_sequence() {
    let args = kv_args(&["--gaps", "--val-size", "40"]);
    let load = new_load(&args, &mut SplitMix64(1), SystemTime::now()).expect("load");
    let mut rng = SplitMix64(2);
    let (Request::Put { key: key5, value }, Request::Put { key: key6, .. }) =
        (load.plan(5, &mut rng), load.plan(6, &mut rng))
    else {
        panic!("--gaps with --op put must plan puts");
    };
    assert_ne!(key5, key6);
    assert!(key5.starts_with(b"/bench/acked/"));
    assert!(value.starts_with(b"w000000000005-"));
    assert_eq!(value.len(), 40);
}

#[test]
fn mixed_load_follows_read_percent() {
    for (percent, expect_reads) in [("0", false), ("100", true)] {
        let args = kv_args(&["--op", "mixed", "--read-percent", percent]);
        let load = new_load(&args, &mut SplitMix64(1), SystemTime::now()).expect("load");
        let mut rng = SplitMix64(3);
        for sequence in 0..200 {
            let is_read = matches!(
                load.plan(sequence, &mut rng),
                Request::Get {
                    serializable: false,
                    ..
                }
            );
            assert_eq!(is_read, expect_reads, "read percent {percent}");
        }
    }
}

#[test]
fn a_pause_longer_than_the_threshold_is_recorded_once() {
    let args = kv_args(&["--gaps", "--gap-threshold", "200ms"]);
    let load = new_load(&args, &mut SplitMix64(1), SystemTime::now()).expect("load");
    load.acknowledge_at(1_000, b"k", b"v");
    load.acknowledge_at(50_000, b"k", b"v");
    load.acknowledge_at(400_000, b"k", b"v");
    // A client that finishes late with an earlier timestamp closes no pause.
    load.acknowledge_at(300_000, b"k", b"v");
    load.acknowledge_at(500_000, b"k", b"v");
    let gaps = load.gaps.lock().expect("gap log");
    assert_eq!(gaps.kept, vec![(50_000, 400_000)]);
    assert_eq!(gaps.dropped, 0);
}

#[test]
fn error_kinds_are_bounded_and_every_error_is_counted() {
    let mut stats = ClientStats::new().expect("stats");
    for kind in 0..40 {
        stats.count_error(format!("kind {kind}"));
    }
    stats.count_error("kind 0".to_string());
    let mut other = ClientStats::new().expect("stats");
    other.count_error("kind 1".to_string());
    other.count_error("brand new".to_string());
    other.latency_us.record(1_000).expect("in range");
    stats.merge(other).expect("merge");
    assert_eq!(stats.errors.len(), 33, "32 kinds and `other`");
    assert_eq!(stats.errors.values().sum::<u64>(), 43);
    assert_eq!(stats.errors["kind 0"], 2);
    assert_eq!(stats.errors["kind 1"], 2);
    assert_eq!(stats.errors["other"], 9);
    assert_eq!(stats.latency_us.len(), 1);
}

#[test]
fn the_acked_file_round_trips() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("acked.txt");
    let path_text = path.to_str().expect("utf-8 path");
    let args = kv_args(&["--check-acked", path_text, "--val-size", "20"]);
    let load = new_load(&args, &mut SplitMix64(1), SystemTime::now()).expect("load");
    let prefix = load.fresh_prefix.clone().expect("fresh keys");
    for sequence in 0..3 {
        let (key, value) = load.fresh_write(&prefix, sequence);
        load.acknowledge(&key, &value);
    }
    finish_acked(&load, &args).expect("flush");
    let (read_prefix, expected) = read_acked(&path).expect("read back");
    assert_eq!(read_prefix, prefix);
    assert_eq!(expected.len(), 3);
    let (key, value) = load.fresh_write(&prefix, 2);
    assert_eq!(expected[&key], value);
}

#[test]
fn read_acked_refuses_other_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("other.txt");
    std::fs::write(&path, "hello\n").expect("write");
    assert!(read_acked(&path).is_err());
    std::fs::write(&path, "# x: prefix /p/\nno-space-here\n").expect("write");
    assert!(read_acked(&path).is_err());
}

/// A real etcd member on loopback, stopped and removed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    fn start(runtime: &tokio::runtime::Runtime) -> Etcd {
        let binary = std::env::var_os("ETCD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let child = Command::new(&binary)
            .args(["--name", "bench-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!(
                "--initial-cluster=bench-test=http://127.0.0.1:{peer}"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "starting {} (Debian package etcd-server): {error}",
                    binary.display()
                )
            });
        let mut etcd = Etcd {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            _dir: dir,
        };
        etcd.wait_ready(runtime);
        etcd
    }

    fn wait_ready(&mut self, runtime: &tokio::runtime::Runtime) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answered = runtime.block_on(async {
                let options = etcd_client::ConnectOptions::new()
                    .with_timeout(Duration::from_secs(1))
                    .with_connect_timeout(Duration::from_millis(500));
                let client = etcd_client::Client::connect([self.endpoint.as_str()], Some(options))
                    .await
                    .ok()?;
                client.kv_client().get("ready", None).await.ok()
            });
            if answered.is_some() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "etcd not ready within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn loads_against_etcd_complete_every_operation() {
    let runtime = runtime();
    let etcd = Etcd::start(&runtime);
    let endpoints = [etcd.endpoint.clone()];
    let common = ["--clients", "8", "--conns", "2", "--keyspace", "100"];
    for op in ["put", "get", "get-serializable", "txn", "mixed"] {
        let mut flags = vec!["--op", op, "--total", "300", "--val-size", "32"];
        flags.extend(common);
        let report = runtime
            .block_on(load::run_load(&kv_args(&flags), &endpoints, 2))
            .unwrap_or_else(|error| panic!("{op} load failed: {error:#}"));
        assert_eq!(report.ops, 300, "{op}");
        assert_eq!(report.errors, 0, "{op}: {:?}", report.errors_by_kind);
        assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
        assert!(report.throughput_ops_s > 0.0);
    }
    // Prepopulation wrote every key of the keyspace with a value of --val-size bytes.
    let values = runtime.block_on(async {
        let client = etcd_client::Client::connect(&endpoints, None).await?;
        let options = etcd_client::GetOptions::new().with_prefix();
        client.kv_client().get("/bench/", Some(options)).await
    });
    let values = values.expect("read the keyspace back");
    assert_eq!(values.kvs().len(), 100);
    assert!(values.kvs().iter().all(|kv| kv.value().len() == 32));
}

#[test]
fn acknowledged_writes_verify_and_a_deleted_one_is_reported() {
    let runtime = runtime();
    let etcd = Etcd::start(&runtime);
    let endpoints = [etcd.endpoint.clone()];
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("acked.txt");
    let path_text = path.to_str().expect("utf-8 path");
    let flags = [
        "--gaps",
        "--check-acked",
        path_text,
        "--total",
        "250",
        "--clients",
        "4",
    ];
    let report = runtime
        .block_on(load::run_load(&kv_args(&flags), &endpoints, 2))
        .expect("load");
    assert_eq!(report.ops, 250);
    assert!(report.gaps.is_some());

    let verify_args = kv_args(&["--verify", path_text]);
    let verified = runtime
        .block_on(verify_acked(&verify_args, &endpoints, &path))
        .expect("verify");
    assert_eq!(
        (verified.acked, verified.present, verified.missing),
        (250, 250, 0)
    );
    print_verify_report(&verified, OutputFormat::Json).expect("nothing lost");

    let (prefix, _) = read_acked(&path).expect("read back");
    let victim = format!("{prefix}000000000007");
    runtime
        .block_on(async {
            let client = etcd_client::Client::connect(&endpoints, None).await?;
            client.kv_client().delete(victim.as_str(), None).await
        })
        .expect("delete one acknowledged key");
    let verified = runtime
        .block_on(verify_acked(&verify_args, &endpoints, &path))
        .expect("verify");
    assert_eq!((verified.present, verified.missing), (249, 1));
    assert_eq!(verified.examples, vec![format!("{victim} (missing)")]);
    assert!(print_verify_report(&verified, OutputFormat::Text).is_err());
}
