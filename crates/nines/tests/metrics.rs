//! `GET /metrics` on real member processes, read with a real OpenMetrics
//! parser (the `openmetrics-parser` crate, which checks the grammar, the
//! family metadata and the histogram structure): every series the member
//! promises is there, and the values move when the cluster works (writes,
//! a compaction, a lease, a watch, a failed read, a leader change).

#[allow(dead_code)]
#[path = "it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etcd_client::GetOptions;
use nines_testkit::http_get;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use support::{client, cluster};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// The families every member exposes, with their type. (Labelled families
/// without samples, such as the registry's instances before any registers,
/// are left out, as Prometheus clients do.)
const FAMILIES: [(&str, OpenMetricsType); 27] = [
    ("nines_member_info", OpenMetricsType::Gauge),
    ("nines_raft_term", OpenMetricsType::Gauge),
    ("nines_raft_is_leader", OpenMetricsType::Gauge),
    ("nines_raft_has_leader", OpenMetricsType::Gauge),
    ("nines_raft_leader_changes_seen", OpenMetricsType::Counter),
    ("nines_raft_last_log_index", OpenMetricsType::Gauge),
    ("nines_raft_applied_index", OpenMetricsType::Gauge),
    ("nines_raft_state", OpenMetricsType::Gauge),
    ("nines_raft_members", OpenMetricsType::Gauge),
    ("nines_raft_proposals", OpenMetricsType::Counter),
    ("nines_raft_proposals_failed", OpenMetricsType::Counter),
    ("nines_raft_entries_proposed", OpenMetricsType::Counter),
    (
        "nines_raft_log_fsync_duration_seconds",
        OpenMetricsType::Histogram,
    ),
    (
        "nines_raft_log_append_duration_seconds",
        OpenMetricsType::Histogram,
    ),
    ("nines_store_revision", OpenMetricsType::Gauge),
    ("nines_store_compact_revision", OpenMetricsType::Gauge),
    ("nines_store_keys", OpenMetricsType::Gauge),
    ("nines_store_db_size_bytes", OpenMetricsType::Gauge),
    ("nines_leases_active", OpenMetricsType::Gauge),
    ("nines_watch_streams_active", OpenMetricsType::Gauge),
    ("nines_watchers_active", OpenMetricsType::Gauge),
    ("nines_grpc_requests", OpenMetricsType::Counter),
    (
        "nines_grpc_request_duration_seconds",
        OpenMetricsType::Histogram,
    ),
    ("nines_grpc_streams_active", OpenMetricsType::Gauge),
    ("nines_registry_services", OpenMetricsType::Gauge),
    ("nines_registry_checkers", OpenMetricsType::Gauge),
    ("nines_registry_catalog_revision", OpenMetricsType::Gauge),
];

/// Scrapes and parses `/metrics` of the member at `http`.
async fn scrape(http: &str) -> anyhow::Result<Exposition> {
    let (status, body) = http_get(http, "/metrics")
        .await
        .with_context(|| format!("{http} does not answer /metrics"))?;
    if status != 200 {
        bail!("/metrics answered {status}: {body}");
    }
    openmetrics_parser::openmetrics::parse_openmetrics(&body)
        .map_err(|e| anyhow::anyhow!("not valid OpenMetrics: {e:?}\n{body}"))
}

/// The value of the series of `family` whose labels include `labels`: the
/// number for gauges and counters, the observation count for histograms.
fn value(expo: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let fam = expo.families.get(family)?;
    fam.iter_samples().find_map(|s| {
        let set = s.get_labelset().ok()?;
        if !labels
            .iter()
            .all(|(k, v)| set.get_label_value(k) == Some(*v))
        {
            return None;
        }
        match &s.value {
            OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => Some(n.as_f64()),
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            _ => None,
        }
    })
}

fn must(expo: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    value(expo, family, labels).unwrap_or_else(|| panic!("no series {family} {labels:?}"))
}

fn check_families(expo: &Exposition) {
    for (name, kind) in FAMILIES {
        let fam = expo
            .families
            .get(name)
            .unwrap_or_else(|| panic!("family {name} missing"));
        assert_eq!(fam.family_type, kind, "type of {name}");
        assert!(!fam.help.is_empty(), "{name} has no HELP");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_the_work_of_the_cluster() {
    let mut c = cluster(3, &[]).await;
    let leader = c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    let follower = (leader + 1) % 3;

    // Every member exposes every family; exactly one says it leads.
    let mut leaders = 0.0;
    for m in &c.members {
        // One unary call, so the gRPC families have a sample to show.
        client(std::slice::from_ref(&m.client))
            .await
            .status()
            .await
            .expect("status");
        let expo = scrape(&m.http).await.expect("scrape");
        check_families(&expo);
        assert_eq!(must(&expo, "nines_member_info", &[("name", &m.name)]), 1.0);
        assert_eq!(must(&expo, "nines_raft_has_leader", &[]), 1.0);
        assert!(must(&expo, "nines_raft_leader_changes_seen", &[]) >= 1.0);
        assert!(must(&expo, "nines_raft_term", &[]) >= 1.0);
        assert_eq!(must(&expo, "nines_raft_members", &[("kind", "voter")]), 3.0);
        leaders += must(&expo, "nines_raft_is_leader", &[]);
    }
    assert_eq!(leaders, 1.0, "exactly one member reports is_leader");
    let leader_expo = scrape(&c.members[leader].http).await.expect("scrape");
    assert_eq!(
        must(&leader_expo, "nines_raft_state", &[("state", "leader")]),
        1.0
    );

    // Work through the follower: puts, a lease, a watch, a compaction and
    // a read of a compacted revision (an error code).
    let http = c.members[follower].http.clone();
    let before = scrape(&http).await.expect("scrape");
    let put_ok = &[("method", "Put"), ("code", "OK")];
    let puts_before = value(&before, "nines_grpc_requests", put_ok).unwrap_or(0.0);
    let mut kv = client(&[c.members[follower].client.clone()]).await;
    for i in 0..25 {
        kv.put(format!("metrics/{i}"), vec![b'x'; 100], None)
            .await
            .expect("put");
    }
    let lease = kv.lease_grant(60, None).await.expect("lease grant");
    let stream = kv.watch("metrics/", None).await.expect("watch");
    let rev = kv
        .get("metrics/0", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    kv.compact(rev, None).await.expect("compact");
    let stale = kv
        .get("metrics/0", Some(GetOptions::new().with_revision(2)))
        .await;
    assert!(stale.is_err(), "a compacted revision is refused");

    let after = scrape(&http).await.expect("scrape");
    check_families(&after);
    let grew = |family: &str, by: f64| {
        let (b, a) = (must(&before, family, &[]), must(&after, family, &[]));
        assert!(a >= b + by, "{family}: {b} -> {a}, expected +{by}");
    };
    grew("nines_store_revision", 25.0);
    // The puts went through this follower: it proposed them, and its log
    // appended and fsynced what the leader replicated.
    grew("nines_raft_proposals", 25.0);
    grew("nines_raft_log_fsync_duration_seconds", 1.0);
    grew("nines_raft_log_append_duration_seconds", 1.0);
    grew("nines_raft_applied_index", 1.0);
    grew("nines_raft_last_log_index", 1.0);
    grew("nines_store_keys", 25.0);
    grew("nines_store_db_size_bytes", 25.0 * 100.0);
    assert_eq!(
        must(&after, "nines_store_compact_revision", &[]),
        rev as f64
    );
    assert_eq!(must(&after, "nines_leases_active", &[]), 1.0);
    // Other parts of the member (the registry) may hold watches of their
    // own: count ours as the difference.
    let watches = |e: &Exposition| must(e, "nines_watch_streams_active", &[]);
    assert_eq!(watches(&after), watches(&before) + 1.0);
    let watchers = |e: &Exposition| must(e, "nines_watchers_active", &[]);
    assert_eq!(watchers(&after), watchers(&before) + 1.0);
    assert_eq!(
        must(&after, "nines_grpc_streams_active", &[("method", "Watch")]),
        watches(&after)
    );
    assert!(must(&after, "nines_grpc_requests", put_ok) >= puts_before + 25.0);
    assert!(
        must(
            &after,
            "nines_grpc_request_duration_seconds",
            &[("method", "Put")]
        ) >= 25.0
    );
    assert!(
        must(
            &after,
            "nines_grpc_requests",
            &[("method", "Range"), ("code", "OutOfRange")]
        ) >= 1.0,
        "the compacted read is counted with its code"
    );
    assert_eq!(
        must(
            &after,
            "nines_grpc_requests",
            &[("method", "LeaseGrant"), ("code", "OK")]
        ),
        1.0
    );
    kv.lease_revoke(lease.id()).await.expect("revoke");

    // The registry's figures: a registered instance shows up by state.
    let body = r#"{"address": "127.0.0.1", "port": 8081, "check": "none"}"#;
    let (status, answer) =
        nines_testkit::http_request(&http, "PUT", "/v1/services/web/instances/web-1", Some(body))
            .await
            .expect("registry answers");
    assert!((200..300).contains(&status), "register: {status} {answer}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let expo = scrape(&http).await.expect("scrape");
        let passing = &[("service", "web"), ("state", "passing")];
        if value(&expo, "nines_registry_instances", passing) == Some(1.0) {
            assert_eq!(must(&expo, "nines_registry_services", &[]), 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "instance not in the metrics");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);
    drop(kv);

    // Closed streams leave the gauge; a killed leader makes the others see a
    // new term and one more leader.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let expo = scrape(&http).await.expect("scrape");
        if watches(&expo) == watches(&before)
            && watchers(&expo) == watchers(&before)
            && must(&expo, "nines_leases_active", &[]) == 0.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "watch stream and lease not gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_kill = scrape(&http).await.expect("scrape");
    c.kill(leader);
    // The survivors report the dead leader until they notice; wait for the
    // new one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c
        .wait_agreed_leader(Duration::from_secs(10))
        .await
        .expect("agreed leader")
        == leader
    {
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = scrape(&http).await.expect("scrape");
        let changes = |e: &Exposition| must(e, "nines_raft_leader_changes_seen", &[]);
        let term = |e: &Exposition| must(e, "nines_raft_term", &[]);
        if changes(&after) > changes(&before_kill) && term(&after) > term(&before_kill) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader change not seen in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills and reaps a child process on drop.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nines demo-backend` on a free port; returns it and its address.
fn demo_backend(name: &str) -> anyhow::Result<(Guard, String)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(support::exe())
        .args(["demo-backend", "--port", "0", "--name", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let guard = Guard(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("no address: {line:?}"))?;
    Ok((guard, addr.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_metrics_parse_and_count_requests_latency_retries_and_ejections() {
    let (_alpha, alpha) = demo_backend("alpha").expect("demo backend");
    // A backend nobody listens on: every attempt on it fails to connect,
    // is retried on alpha, and ejects it passively.
    let ports = nines_testkit::free_ports(3).expect("ports");
    let dead = format!("127.0.0.1:{}", ports[0]);
    let listen = format!("127.0.0.1:{}", ports[1]);
    let admin = format!("127.0.0.1:{}", ports[2]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nworker_threads = 1\nadmin = \"{admin}\"\n\n\
             [[listener]]\nname = \"web\"\nbind = \"{listen}\"\nprotocol = \"http\"\n\n\
             [[listener.route]]\npath_prefix = \"/\"\ncluster = \"web\"\n\n\
             [[cluster]]\nname = \"web\"\nbalance = \"round_robin\"\n\
             backends = [{{ addr = \"{alpha}\" }}, {{ addr = \"{dead}\" }}]\n\n\
             [cluster.retry]\nattempts = 2\non = [\"connect-failure\"]\n\n\
             [cluster.passive]\nconsecutive_failures = 1\nejection_time = \"30s\"\n"
        ),
    )
    .expect("config");
    let _gateway = Guard(
        std::process::Command::new(support::exe())
            .arg("gateway")
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gateway starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&admin, "/metrics").await.is_none() {
        assert!(Instant::now() < deadline, "gateway admin never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..10 {
        let (status, _) = http_get(&listen, "/").await.expect("proxied");
        assert_eq!(status, 200, "every request ends on alpha");
    }
    let expo = scrape(&admin).await.expect("gateway /metrics");
    let web = [("listener", "web")];
    for (name, kind) in [
        ("nines_gateway_requests", OpenMetricsType::Counter),
        ("nines_gateway_responses", OpenMetricsType::Counter),
        ("nines_gateway_retries", OpenMetricsType::Counter),
        ("nines_gateway_connections_active", OpenMetricsType::Gauge),
        (
            "nines_gateway_request_duration_seconds",
            OpenMetricsType::Histogram,
        ),
        ("nines_gateway_backend_requests", OpenMetricsType::Counter),
        ("nines_gateway_backend_failures", OpenMetricsType::Counter),
        ("nines_gateway_backend_ejections", OpenMetricsType::Counter),
        ("nines_gateway_backend_up", OpenMetricsType::Gauge),
    ] {
        let fam = expo
            .families
            .get(name)
            .unwrap_or_else(|| panic!("family {name} missing"));
        assert_eq!(fam.family_type, kind, "type of {name}");
    }
    assert!(must(&expo, "nines_gateway_requests", &web) >= 10.0);
    assert!(
        must(
            &expo,
            "nines_gateway_responses",
            &[("listener", "web"), ("class", "2xx")]
        ) >= 10.0
    );
    assert!(must(&expo, "nines_gateway_request_duration_seconds", &web) >= 10.0);
    assert!(must(&expo, "nines_gateway_retries", &web) >= 1.0);
    let alpha_l = [("cluster", "web"), ("backend", alpha.as_str())];
    let dead_l = [("cluster", "web"), ("backend", dead.as_str())];
    assert!(must(&expo, "nines_gateway_backend_requests", &alpha_l) >= 10.0);
    assert!(must(&expo, "nines_gateway_backend_failures", &dead_l) >= 1.0);
    assert!(must(&expo, "nines_gateway_backend_ejections", &dead_l) >= 1.0);
    assert_eq!(must(&expo, "nines_gateway_backend_up", &dead_l), 0.0);
    assert_eq!(must(&expo, "nines_gateway_backend_up", &alpha_l), 1.0);
}
