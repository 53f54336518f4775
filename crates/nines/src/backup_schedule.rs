//! Scheduled backups inside `nines server` (`--backup-repo`,
//! `--backup-schedule`, `--backup-keep-full`). Every member runs the same
//! [`Scheduler`], but only the member that is the Raft leader takes backups:
//! each round it asks its own client endpoint for `Maintenance.Status` and
//! compares `leader` with its own `member_id`, so a failover moves the
//! schedule with the leadership. Which kind is due is decided from the
//! repository's manifests alone (their finish times), so a new leader goes on
//! with the same chain and the same rhythm. The work itself is
//! `nines_backup::create_backup` and `nines_backup::prune` under the
//! repository lock; a lock held by a `nines backup` command skips the round.
//! The outcome of the runs is kept in memory and served as `GET /v1/backups`
//! and as Prometheus figures; after each run the repository's status (its
//! sets and the run's outcome) is also written into the store under
//! `/nines/backups/` (`nines_backup::status`), which `GET /v1/backups` on
//! every member lists as `repositories`. This module owns no backup format or retention
//! rule: those stay in `nines-backup`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nines_backup::{BackupError, BackupKind, LocalRepository, Manifest};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use serde::Serialize;
use serde_json::json;

/// How often a member checks whether it leads and whether a backup is due.
const ROUND_INTERVAL: Duration = Duration::from_secs(1);

/// Pause after a failed backup before the next try, so a lasting fault (a
/// full disk, an unreachable quorum) is not retried every round.
const FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// Longest one scheduled backup may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// Shortest interval a schedule accepts: rounds are a second apart.
const INTERVAL_SECS_MIN: u64 = 1;

/// Schedule used when `--backup-repo` is given without `--backup-schedule`.
pub const SCHEDULE_DEFAULT: &str = "full=7d,diff=1d,incr=1h";

const _: () = assert!(ROUND_INTERVAL.as_secs() <= INTERVAL_SECS_MIN);
const _: () = assert!(FAILURE_BACKOFF.as_secs() >= ROUND_INTERVAL.as_secs());

/// Intervals per kind: a kind is due when the newest set that resets it
/// finished at least its interval ago. A kind left out is never scheduled,
/// except that a full is always taken when the repository has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Seconds between fulls.
    pub full_secs: Option<u64>,
    /// Seconds between differentials (a full resets it too).
    pub diff_secs: Option<u64>,
    /// Seconds between backups of any kind (incrementals fill the gaps).
    pub incr_secs: Option<u64>,
}

impl Schedule {
    /// Parses `full=7d,diff=1d,incr=1h`; an unknown kind, a repeated kind or
    /// a bad duration is an error naming the entry.
    pub fn parse(text: &str) -> anyhow::Result<Schedule> {
        let mut s = Schedule::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kind, interval) = entry
                .split_once('=')
                .ok_or_else(|| anyhow!("--backup-schedule entry {entry:?} is not KIND=INTERVAL"))?;
            let kind: BackupKind = kind.trim().parse().map_err(|_| {
                anyhow!("--backup-schedule entry {entry:?}: the kind must be full, diff or incr")
            })?;
            let secs = parse_interval_secs(interval.trim())
                .with_context(|| format!("--backup-schedule entry {entry:?}"))?;
            let slot = match kind {
                BackupKind::Full => &mut s.full_secs,
                BackupKind::Diff => &mut s.diff_secs,
                BackupKind::Incr => &mut s.incr_secs,
            };
            if slot.replace(secs).is_some() {
                bail!("--backup-schedule names {kind} twice");
            }
        }
        if s == Schedule::default() {
            bail!("--backup-schedule {text:?} names no kind (e.g. full=7d,diff=1d,incr=1h)");
        }
        Ok(s)
    }

    /// The kind due at `now_unix_secs` given the repository's manifests, or
    /// `None` when nothing is due. The biggest due kind wins, as it makes the
    /// smaller ones current too.
    pub fn due(&self, sets: &[Manifest], now_unix_secs: u64) -> Option<BackupKind> {
        let newest = |pred: &dyn Fn(&Manifest) -> bool| {
            sets.iter()
                .filter(|m| pred(m))
                .map(|m| m.finished_unix_secs)
                .max()
        };
        let is_due = |interval: Option<u64>, last: Option<u64>| match (interval, last) {
            (Some(i), Some(t)) => now_unix_secs.saturating_sub(t) >= i,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let last_full = newest(&|m| m.kind == BackupKind::Full);
        // Diffs and incrementals need a full to build on.
        if last_full.is_none() || is_due(self.full_secs, last_full) {
            return Some(BackupKind::Full);
        }
        if is_due(self.diff_secs, newest(&|m| m.kind != BackupKind::Incr)) {
            return Some(BackupKind::Diff);
        }
        if is_due(self.incr_secs, newest(&|_| true)) {
            return Some(BackupKind::Incr);
        }
        None
    }

    /// The schedule as `kind=interval` pairs, for `/v1/backups`.
    fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (kind, secs) in [
            ("full", self.full_secs),
            ("diff", self.diff_secs),
            ("incr", self.incr_secs),
        ] {
            if let Some(secs) = secs {
                out.insert(kind.into(), json!({ "interval_secs": secs }));
            }
        }
        serde_json::Value::Object(out)
    }
}

/// `30s`, `15m`, `12h`, `7d` or `2w` in seconds, at least one second.
fn parse_interval_secs(text: &str) -> anyhow::Result<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("interval {text:?} must be a number followed by s, m, h, d or w"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => bail!("interval {text:?} must end in s, m, h, d or w"),
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| anyhow!("interval {text:?} is too long"))?;
    if secs < INTERVAL_SECS_MIN {
        bail!("interval {text:?} must be at least {INTERVAL_SECS_MIN}s");
    }
    Ok(secs)
}

/// What the server's backup flags say.
#[derive(Clone, Debug)]
pub struct BackupConfig {
    /// The repository directory (created if absent).
    pub repo: PathBuf,
    /// When each kind is due.
    pub schedule: Schedule,
    /// Retention: keep the newest this many full chains after each backup.
    pub keep_full: Option<usize>,
}

impl BackupConfig {
    /// The configuration from the flags, or `None` without `--backup-repo`.
    pub fn from_flags(
        repo: Option<PathBuf>,
        schedule: Option<&str>,
        keep_full: Option<usize>,
    ) -> anyhow::Result<Option<BackupConfig>> {
        let Some(repo) = repo else {
            if schedule.is_some() || keep_full.is_some() {
                bail!("--backup-schedule and --backup-keep-full need --backup-repo");
            }
            return Ok(None);
        };
        if keep_full == Some(0) {
            bail!("--backup-keep-full must be at least 1");
        }
        let schedule = Schedule::parse(schedule.unwrap_or(SCHEDULE_DEFAULT))?;
        // Open (and create) it now so a path that is a file fails at startup.
        LocalRepository::open(&repo, true)
            .with_context(|| format!("--backup-repo {}", repo.display()))?;
        Ok(Some(BackupConfig {
            repo,
            schedule,
            keep_full,
        }))
    }
}

/// The outcome of one scheduled backup.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    /// The kind taken.
    pub kind: BackupKind,
    /// The new set's id, when it was published.
    pub id: Option<String>,
    /// When the run started (Unix seconds).
    pub started_unix_secs: u64,
    /// How long the run took, retention included.
    pub duration_secs: f64,
    /// Bytes of the new set's files.
    pub bytes: u64,
    /// Keys (full) or events (diff, incr) in the new set.
    pub key_count: u64,
    /// Revision range of the new set.
    pub start_revision: i64,
    /// Last revision in the new set.
    pub end_revision: i64,
    /// Whether the set was published and retention ran.
    pub ok: bool,
    /// What went wrong, when it did not.
    pub error: Option<String>,
    /// Sets removed by retention after this run.
    pub pruned: Vec<String>,
}

/// Figures of one kind, for metrics.
#[derive(Clone, Debug, Default)]
struct KindStats {
    last_success_unix_secs: Option<u64>,
    last_duration_secs: f64,
    last_bytes: u64,
    succeeded: u64,
    failed: u64,
}

#[derive(Debug, Default)]
struct State {
    leader_runs: bool,
    last: Option<RunOutcome>,
    kinds: BTreeMap<&'static str, KindStats>,
}

#[derive(Debug)]
struct Shared {
    config: BackupConfig,
    repo: LocalRepository,
    // Invariant: never held across an `.await`.
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain figures behind; they
        // stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, outcome: RunOutcome) {
        let mut st = self.state();
        let stats = st.kinds.entry(kind_name(outcome.kind)).or_default();
        if outcome.ok {
            stats.succeeded += 1;
            stats.last_success_unix_secs = Some(outcome.started_unix_secs);
            stats.last_duration_secs = outcome.duration_secs;
            stats.last_bytes = outcome.bytes;
        } else {
            stats.failed += 1;
        }
        st.last = Some(outcome);
    }
}

fn kind_name(kind: BackupKind) -> &'static str {
    match kind {
        BackupKind::Full => "full",
        BackupKind::Diff => "diff",
        BackupKind::Incr => "incr",
    }
}

/// The scheduler of one member: its task, its HTTP route and its metrics
/// share the run outcomes.
#[derive(Clone, Debug)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// A scheduler over `config`'s repository.
    pub fn new(config: BackupConfig) -> anyhow::Result<Scheduler> {
        let repo = LocalRepository::open(&config.repo, true)
            .with_context(|| format!("--backup-repo {}", config.repo.display()))?;
        Ok(Scheduler {
            shared: Arc::new(Shared {
                config,
                repo,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The Prometheus collector of the run outcomes.
    pub fn collector(&self) -> BackupCollector {
        BackupCollector {
            shared: self.shared.clone(),
        }
    }

    /// Starts the rounds against this member's client endpoint
    /// (`http://host:port`) on a thread of their own: `create_backup` borrows
    /// the repository as a `&dyn Repository`, which is not `Sync`, so its
    /// future stays on one thread. [`SchedulerTask::stop`] ends it; a backup
    /// cut short leaves only a staged set, which the next holder of the
    /// repository lock removes.
    pub fn spawn(&self, endpoint: String) -> anyhow::Result<SchedulerTask> {
        let shared = self.shared.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the backup scheduler's runtime")?;
        let thread = std::thread::Builder::new()
            .name("nines-backup-schedule".into())
            .spawn(move || {
                rt.block_on(async move {
                    tokio::select! {
                        () = run_rounds(shared, endpoint) => {}
                        _ = stopped => {}
                    }
                })
            })
            .context("cannot start the backup scheduler's thread")?;
        Ok(SchedulerTask {
            stop,
            thread: Some(thread),
        })
    }
}

/// The running scheduler; stop it at shutdown.
#[derive(Debug)]
pub struct SchedulerTask {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SchedulerTask {
    /// Ends the rounds (a backup under way is dropped) and waits for the
    /// thread. Blocking file work under way finishes first, which is short.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why a round took no backup.
enum Skip {
    NotLeader,
    NothingDue,
    Busy,
    /// The manifests could not be read; no kind can be chosen.
    Unreadable(String),
}

async fn run_rounds(shared: Arc<Shared>, endpoint: String) {
    let mut client: Option<etcd_client::Client> = None;
    let mut force_full = false;
    let mut not_before = Instant::now();
    loop {
        tokio::time::sleep(ROUND_INTERVAL).await;
        if Instant::now() < not_before {
            continue;
        }
        match round(&shared, &endpoint, &mut client, force_full).await {
            Ok(Ok(outcome)) => {
                force_full = false;
                tracing::info!(
                    kind = %outcome.kind,
                    id = outcome.id.as_deref().unwrap_or(""),
                    bytes = outcome.bytes,
                    duration_secs = outcome.duration_secs,
                    pruned = outcome.pruned.len(),
                    "scheduled backup taken"
                );
                publish_outcome(&shared, &mut client, &outcome).await;
                shared.record(outcome);
            }
            Ok(Err((outcome, cause))) => {
                // The history a diff or incr needs was compacted: the next
                // try is a full, which starts a new chain.
                // That is no lasting fault, so no pause either.
                force_full = matches!(cause, Some(BackupError::MustBeFull { .. }));
                tracing::warn!(
                    kind = %outcome.kind,
                    error = outcome.error.as_deref().unwrap_or(""),
                    "scheduled backup failed"
                );
                publish_outcome(&shared, &mut client, &outcome).await;
                shared.record(outcome);
                if !force_full {
                    not_before = Instant::now() + FAILURE_BACKOFF;
                }
            }
            Err(Skip::Busy) => {
                tracing::debug!("backup repository locked by another command; next round")
            }
            Err(Skip::Unreadable(error)) => {
                tracing::warn!(%error, "cannot read the backup repository");
                not_before = Instant::now() + FAILURE_BACKOFF;
            }
            Err(Skip::NotLeader | Skip::NothingDue) => {}
        }
    }
}

/// Writes the repository's status after a run into the store; a failure is
/// only a warning (the backup itself is done or failed on its own).
async fn publish_outcome(
    shared: &Arc<Shared>,
    client: &mut Option<etcd_client::Client>,
    outcome: &RunOutcome,
) {
    let Some(c) = client.as_mut() else {
        tracing::warn!("backup status not published: no connection to this member");
        return;
    };
    let last_run = nines_backup::status::LastRun {
        at_ms: outcome.started_unix_secs.saturating_mul(1000),
        ok: outcome.ok,
        error: outcome.error.clone(),
        duration_ms: (outcome.duration_secs * 1000.0) as u64,
        kind: nines_backup::status::kind_name(outcome.kind).to_owned(),
    };
    let published =
        crate::cmd_backup::publish_status(c, &shared.config.repo, &shared.repo, last_run).await;
    if let Err(e) = published {
        tracing::warn!(error = %format!("{e:#}"), "backup status not published");
    }
}

type RoundResult = Result<Result<RunOutcome, (RunOutcome, Option<BackupError>)>, Skip>;

/// One round: am I the leader, is a kind due, then take it and apply
/// retention.
async fn round(
    shared: &Arc<Shared>,
    endpoint: &str,
    client: &mut Option<etcd_client::Client>,
    force_full: bool,
) -> RoundResult {
    let leads = match leads(endpoint, client).await {
        Ok(leads) => leads,
        Err(e) => {
            // Not serving yet, or restarting: ask again next round.
            tracing::debug!(error = %format!("{e:#}"), "leader check failed");
            *client = None;
            false
        }
    };
    shared.state().leader_runs = leads;
    if !leads {
        return Err(Skip::NotLeader);
    }
    let started = Instant::now();
    let started_unix_secs = unix_now();
    let repo = shared.repo.clone();
    let schedule = shared.config.schedule.clone();
    let listed = tokio::task::spawn_blocking(move || {
        nines_backup::catalog::manifests(&repo).map(|sets| schedule.due(&sets, unix_now()))
    })
    .await;
    let fail = |kind, cause: Option<BackupError>, message: String| {
        Ok(Err((
            failed_outcome(kind, started_unix_secs, started, message),
            cause,
        )))
    };
    let due = match listed {
        Ok(Ok(due)) => due,
        Ok(Err(e)) => return Err(Skip::Unreadable(e.to_string())),
        Err(e) => return Err(Skip::Unreadable(e.to_string())),
    };
    let kind = match (force_full, due) {
        (true, _) => BackupKind::Full,
        (false, Some(kind)) => kind,
        (false, None) => return Err(Skip::NothingDue),
    };
    let lock = match shared.repo.lock() {
        Ok(lock) => lock,
        Err(BackupError::RepoLocked { .. }) => return Err(Skip::Busy),
        Err(e) => return fail(kind, None, e.to_string()),
    };
    let Some(c) = client.as_mut() else {
        return fail(kind, None, "no client".into());
    };
    let opts = nines_backup::CreateOptions {
        kind,
        timeout: BACKUP_TIMEOUT,
    };
    let manifest =
        match nines_backup::create_backup(c, &shared.repo, &opts, &mut |_progress| {}).await {
            Ok(m) => m,
            Err(e) => {
                let message = e.to_string();
                return fail(kind, Some(e), message);
            }
        };
    let pruned = match prune(shared, lock).await {
        Ok(pruned) => pruned,
        Err(e) => {
            let mut outcome = failed_outcome(kind, started_unix_secs, started, e);
            outcome.id = Some(manifest.id.clone());
            return Ok(Err((outcome, None)));
        }
    };
    Ok(Ok(RunOutcome {
        kind,
        id: Some(manifest.id.clone()),
        started_unix_secs,
        duration_secs: started.elapsed().as_secs_f64(),
        bytes: manifest.bytes(),
        key_count: manifest.key_count,
        start_revision: manifest.start_revision,
        end_revision: manifest.end_revision,
        ok: true,
        error: None,
        pruned,
    }))
}

/// Applies retention while still holding the lock the backup was taken under.
async fn prune(
    shared: &Arc<Shared>,
    lock: nines_backup::repo::RepoLock,
) -> Result<Vec<String>, String> {
    let Some(keep_full) = shared.config.keep_full else {
        return Ok(Vec::new());
    };
    let repo = shared.repo.clone();
    tokio::task::spawn_blocking(move || {
        let report = nines_backup::prune(
            &repo,
            &nines_backup::PruneOptions {
                keep_full: Some(keep_full),
                older_than_secs: None,
                now_unix_secs: unix_now(),
            },
        );
        drop(lock);
        report
    })
    .await
    .map_err(|e| format!("retention: {e}"))?
    .map(|r| r.removed)
    .map_err(|e| format!("retention: {e}"))
}

fn failed_outcome(
    kind: BackupKind,
    started_unix_secs: u64,
    started: Instant,
    message: String,
) -> RunOutcome {
    RunOutcome {
        kind,
        id: None,
        started_unix_secs,
        duration_secs: started.elapsed().as_secs_f64(),
        bytes: 0,
        key_count: 0,
        start_revision: 0,
        end_revision: 0,
        ok: false,
        error: Some(message),
        pruned: Vec::new(),
    }
}

/// Whether the member behind `endpoint` is the leader, by its own Status.
async fn leads(endpoint: &str, client: &mut Option<etcd_client::Client>) -> anyhow::Result<bool> {
    if client.is_none() {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        *client = Some(
            etcd_client::Client::connect([endpoint], Some(opts))
                .await
                .with_context(|| format!("cannot connect to {endpoint}"))?,
        );
    }
    let c = client.as_mut().expect("connected above");
    let status = c.status().await.context("Maintenance.Status")?;
    let member_id = status
        .header()
        .map(|h| h.member_id())
        .ok_or_else(|| anyhow!("a Status response without a header"))?;
    Ok(status.leader() != 0 && status.leader() == member_id)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/backups` on every member: `{"repositories": [...]}`, the
/// status records in the store (`nines_backup::status`); on a member that
/// runs scheduled backups also its own view (`repo`, `schedule`,
/// `keep_full`, `leader_runs`, `last`, `backups`).
pub fn router(client: etcd_client::Client, scheduler: Option<&Scheduler>) -> Router {
    Router::new()
        .route("/v1/backups", get(backups_handler))
        .with_state(RouteState {
            client,
            scheduler: scheduler.map(|s| s.shared.clone()),
        })
}

#[derive(Clone)]
struct RouteState {
    client: etcd_client::Client,
    scheduler: Option<Arc<Shared>>,
}

async fn backups_handler(AxumState(st): AxumState<RouteState>) -> Response {
    let mut client = st.client.clone();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        nines_backup::status::fetch_all(&mut client),
    )
    .await;
    let repositories = match read {
        Ok(Ok(records)) => Ok(records),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the store did not answer in time".to_owned()),
    };
    let Some(shared) = st.scheduler else {
        return match repositories {
            Ok(records) => Json(json!({ "repositories": records })).into_response(),
            Err(message) => {
                let body = json!({"error": {"code": "unavailable", "message": message}});
                (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
            }
        };
    };
    let mut body = match local_view(&shared).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    match repositories {
        Ok(records) => body["repositories"] = json!(records),
        Err(message) => {
            // This member's own view still answers without a quorum.
            body["repositories"] = serde_json::Value::Null;
            body["repositories_error"] = json!(message);
        }
    }
    Json(body).into_response()
}

/// The scheduler's own view of its repository and runs.
async fn local_view(shared: &Arc<Shared>) -> Result<serde_json::Value, Response> {
    let repo = shared.repo.clone();
    let listed = tokio::task::spawn_blocking(move || nines_backup::catalog::manifests(&repo)).await;
    let sets = match listed {
        Ok(Ok(sets)) => sets,
        Ok(Err(e)) => return Err(api_error("repo_unreadable", e.to_string())),
        Err(e) => return Err(api_error("internal", e.to_string())),
    };
    let backups: Vec<serde_json::Value> = sets
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "kind": m.kind,
                "parent": m.parent,
                "start_revision": m.start_revision,
                "end_revision": m.end_revision,
                "bytes": m.bytes(),
                "key_count": m.key_count,
                "started_unix_secs": m.started_unix_secs,
                "finished_unix_secs": m.finished_unix_secs,
            })
        })
        .collect();
    let (leader_runs, last) = {
        let st = shared.state();
        (st.leader_runs, st.last.clone())
    };
    Ok(json!({
        "repo": shared.config.repo.display().to_string(),
        "schedule": shared.config.schedule.to_json(),
        "keep_full": shared.config.keep_full,
        "leader_runs": leader_runs,
        "last": last,
        "backups": backups,
    }))
}

fn api_error(code: &'static str, message: String) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// Prometheus figures of the scheduled backups, read at each scrape.
#[derive(Debug)]
pub struct BackupCollector {
    shared: Arc<Shared>,
}

type Labels = Vec<(&'static str, String)>;

fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in rows {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for BackupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (leader_runs, kinds) = {
            let st = self.shared.state();
            (st.leader_runs, st.kinds.clone())
        };
        let label = |k: &str| vec![("kind", k.to_string())];
        let (mut success, mut duration, mut size, mut runs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (k, s) in &kinds {
            if let Some(t) = s.last_success_unix_secs {
                success.push((label(k), ConstGauge::new(t as i64)));
                duration.push((label(k), ConstGauge::new(s.last_duration_secs)));
                size.push((label(k), ConstGauge::new(s.last_bytes as i64)));
            }
            for (outcome, n) in [("success", s.succeeded), ("failure", s.failed)] {
                let mut l = label(k);
                l.push(("outcome", outcome.to_string()));
                runs.push((l, ConstCounter::new(n)));
            }
        }
        family(
            &mut encoder,
            "backup_leader_runs",
            "1 while this member is the leader and runs the backup schedule.",
            MetricType::Gauge,
            vec![(Vec::new(), ConstGauge::new(i64::from(leader_runs)))],
        )?;
        family(
            &mut encoder,
            "backup_last_success_timestamp_seconds",
            "Start of the last successful scheduled backup by kind (Unix seconds).",
            MetricType::Gauge,
            success,
        )?;
        family(
            &mut encoder,
            "backup_last_duration_seconds",
            "Duration of the last successful scheduled backup by kind.",
            MetricType::Gauge,
            duration,
        )?;
        family(
            &mut encoder,
            "backup_last_size_bytes",
            "Size of the last successful scheduled backup by kind.",
            MetricType::Gauge,
            size,
        )?;
        family(
            &mut encoder,
            "backup_runs",
            "Scheduled backups run by this member, by kind and outcome.",
            MetricType::Counter,
            runs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(kind: BackupKind, finished_unix_secs: u64) -> Manifest {
        Manifest {
            format: nines_backup::manifest::MANIFEST_FORMAT,
            id: format!("{finished_unix_secs}{}", kind.letter()),
            kind,
            parent: None,
            cluster_id: 1,
            start_revision: 1,
            end_revision: finished_unix_secs as i64,
            key_count: 0,
            lease_count: 0,
            started_unix_secs: finished_unix_secs,
            finished_unix_secs,
            nines_version: String::new(),
            files: Vec::new(),
        }
    }

    #[test]
    fn schedule_parses_kinds_and_units() {
        let s = Schedule::parse("full=1w, diff=1d,incr=90m").expect("valid");
        assert_eq!(s.full_secs, Some(604_800));
        assert_eq!(s.diff_secs, Some(86_400));
        assert_eq!(s.incr_secs, Some(5400));
        let s = Schedule::parse("incr=30s").expect("valid");
        assert_eq!((s.full_secs, s.incr_secs), (None, Some(30)));
    }

    #[test]
    fn schedule_refuses_unknown_kinds_bad_intervals_and_repeats() {
        for bad in [
            "weekly=1d",
            "incr=abc",
            "incr=5",
            "incr=0s",
            "incr=1y",
            "full",
            "",
            "incr=1h,incr=2h",
            "full=99999999999999999w",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_empty_repository_needs_a_full_whatever_the_schedule() {
        let s = Schedule::parse("incr=1h").expect("valid");
        assert_eq!(s.due(&[], 1000), Some(BackupKind::Full));
    }

    #[test]
    fn the_biggest_due_kind_wins_and_times_come_from_the_manifests() {
        let s = Schedule::parse("full=100s,diff=50s,incr=10s").expect("valid");
        let sets = [set(BackupKind::Full, 1000)];
        assert_eq!(s.due(&sets, 1005), None);
        assert_eq!(s.due(&sets, 1010), Some(BackupKind::Incr));
        assert_eq!(s.due(&sets, 1050), Some(BackupKind::Diff));
        assert_eq!(s.due(&sets, 1100), Some(BackupKind::Full));
        // An incr resets only the incr clock; a diff resets diff and incr.
        let sets = [set(BackupKind::Full, 1000), set(BackupKind::Incr, 1045)];
        assert_eq!(s.due(&sets, 1050), Some(BackupKind::Diff));
        let sets = [set(BackupKind::Full, 1000), set(BackupKind::Diff, 1050)];
        assert_eq!(s.due(&sets, 1055), None);
        assert_eq!(s.due(&sets, 1060), Some(BackupKind::Incr));
    }

    #[test]
    fn a_kind_left_out_is_never_due_once_a_full_exists() {
        let s = Schedule::parse("full=100s").expect("valid");
        let sets = [set(BackupKind::Full, 1000)];
        assert_eq!(s.due(&sets, 1099), None);
        assert_eq!(s.due(&sets, 1100), Some(BackupKind::Full));
    }
}
