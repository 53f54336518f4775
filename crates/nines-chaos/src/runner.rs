//! One chaos run from start to verdict: start a fresh cluster, drive the
//! client workload, inject faults on the seeded schedule (or run the crash
//! loop), heal, read every key once more, then check linearizability and
//! lost writes and measure availability. Everything the run starts is owned
//! by values that clean up on drop: the [`Cluster`] kills its processes and
//! removes its directory, the task sets abort their tasks. So dropping the
//! future returned by [`run`] (Ctrl-C) or a panic leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::{member_term, Cluster, ClusterConfig, ClusterError, Target};
use crate::faults::{self, FaultKind};
use crate::history::{Command, Operation, Outcome, Response};
use crate::linearizability::{check_history, CheckLimits, Verdict};
use crate::lost_writes::lost_acknowledged_writes;
use crate::report::{self, FaultRecord, OpCounts, Report, RunVerdict};
use crate::rng::SeededRng;
use crate::workload::{self, key_name, WorkloadConfig, LEDGER_PREFIX};

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// What the members run.
    pub target: Target,
    /// Number of members.
    pub nodes: usize,
    /// How long the workload and fault schedule run (the crash loop runs
    /// until its kills are done, at least this long).
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys (registers).
    pub keys: usize,
    /// Fault kinds drawn by the schedule; empty: no faults.
    pub faults: Vec<FaultKind>,
    /// Seed of the schedule and the workload's choices.
    pub seed: u64,
    /// Parent directory for the run's temporary directory.
    pub base_dir: Option<PathBuf>,
    /// Extra member flags (planted bugs such as `--unsafe-stale-reads`).
    pub member_flags: Vec<String>,
    /// Client timeout; a request not answered in time is unknown.
    pub op_timeout: Duration,
    /// Range of how long a fault is held, in ms.
    pub hold_ms: (u64, u64),
    /// Range of the quiet time between faults, in ms.
    pub quiet_ms: (u64, u64),
    /// Instead of the schedule: this many `kill -9` + restart of random
    /// members under a write-heavy load.
    pub crash_loop: Option<u32>,
    /// A write gap longer than this after a single-member fault is a violation.
    pub write_gap_max: Option<Duration>,
    /// Bounds of the linearizability checker.
    pub check_limits: CheckLimits,
    /// How long members may take to become healthy (start, after a fault).
    pub ready_timeout: Duration,
}

impl ChaosConfig {
    /// Defaults for a target: 3 members, 8 clients, 16 keys, 60 s, faults
    /// kill, pause, leader-kill (and partition for nines), seed 1.
    pub fn new(target: Target) -> Self {
        let mut faults = vec![FaultKind::Kill, FaultKind::Pause, FaultKind::LeaderKill];
        if matches!(target, Target::Nines { .. }) {
            faults.push(FaultKind::Partition);
        }
        ChaosConfig {
            target,
            nodes: 3,
            duration: Duration::from_secs(60),
            clients: 8,
            keys: 16,
            faults,
            seed: 1,
            base_dir: None,
            member_flags: Vec::new(),
            op_timeout: Duration::from_millis(1000),
            hold_ms: (2000, 4000),
            quiet_ms: (1000, 3000),
            crash_loop: None,
            write_gap_max: None,
            check_limits: CheckLimits::default(),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// Progress of a run, for the caller to show.
#[derive(Clone, Debug)]
pub enum Progress {
    /// The members were started.
    ClusterStarted {
        /// The run's temporary directory (removed at the end).
        dir: PathBuf,
        /// `(name, pid, client endpoint)` of each member.
        members: Vec<(String, u32, String)>,
    },
    /// Every member is healthy; the clients start.
    WorkloadStarted,
    /// A fault was injected, healed and recovered from.
    Fault(FaultRecord),
    /// The schedule is over; healing everything.
    Healing,
    /// Reading every key once more.
    FinalReads,
    /// Running the checkers.
    Checking {
        /// Operations recorded.
        operations: usize,
    },
}

/// Why a run could not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Controlling the cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster did not become healthy at start.
    #[error("cluster did not become healthy within {timeout_ms} ms; unhealthy: {members:?}; last log lines:\n{log_tail}")]
    NotReady {
        /// The timeout.
        timeout_ms: u64,
        /// Members that were not healthy.
        members: Vec<String>,
        /// The end of the first unhealthy member's log.
        log_tail: String,
    },
    /// A fault kind the target cannot do.
    #[error("fault {fault} is not supported against {target}")]
    Unsupported {
        /// The fault.
        fault: FaultKind,
        /// The target's name.
        target: &'static str,
    },
    /// A setting out of range.
    #[error("invalid setting: {0}")]
    InvalidConfig(&'static str),
    /// A client task panicked, so the history is incomplete and cannot be judged.
    #[error("a client task failed: {0}")]
    ClientTask(#[source] tokio::task::JoinError),
}

/// Runs the whole chaos run; see the module docs.
pub async fn run(
    config: ChaosConfig,
    observer: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Report, ChaosError> {
    validate(&config)?;
    let mut rng = SeededRng::new(config.seed);
    let mut cluster = start_cluster(&config).await?;
    observer(Progress::ClusterStarted {
        dir: cluster.dir().to_path_buf(),
        members: cluster
            .members()
            .iter()
            .map(|member| {
                (
                    member.name.clone(),
                    member.pid().unwrap_or(0),
                    member.endpoint(),
                )
            })
            .collect(),
    });
    observer(Progress::WorkloadStarted);
    let origin = Instant::now();
    let endpoints = cluster.endpoints();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (put_percent, cas_percent) = if config.crash_loop.is_some() {
        (70, 15)
    } else {
        (40, 20)
    };
    let workload_config = WorkloadConfig {
        endpoints: endpoints.clone(),
        keys: config.keys,
        op_timeout: config.op_timeout,
        put_percent,
        cas_percent,
        ledger_percent: if config.crash_loop.is_some() { 30 } else { 10 },
    };
    let mut clients = JoinSet::new();
    for client in 0..config.clients {
        let client_rng = rng.fork(client as u64);
        let task = workload::run_client(
            client as u32,
            workload_config.clone(),
            origin,
            client_rng,
            stop_rx.clone(),
        );
        clients.spawn(task);
    }
    let mut monitor = JoinSet::new();
    monitor.spawn(watch_elections(endpoints.clone(), stop_rx.clone()));

    let mut faults = Vec::new();
    let mut violations = Vec::new();
    let deadline = origin + config.duration;
    match config.crash_loop {
        Some(kills) => {
            crash_loop(
                &mut cluster,
                &config,
                kills,
                &mut rng,
                origin,
                &mut faults,
                &mut violations,
                observer,
            )
            .await?
        }
        None => {
            fault_schedule(
                &mut cluster,
                &config,
                &mut rng,
                origin,
                deadline,
                &mut faults,
                &mut violations,
                observer,
            )
            .await?
        }
    }
    tokio::time::sleep_until(deadline.into()).await;

    observer(Progress::Healing);
    heal_all(&mut cluster, &config, &mut violations).await?;
    let end_ms = elapsed_ms(origin);
    let _ = stop_tx.send(true);
    let mut history = Vec::new();
    while let Some(joined) = clients.join_next().await {
        history.extend(joined.map_err(ChaosError::ClientTask)?);
    }
    if config.faults.contains(&FaultKind::KillAll) {
        let record = final_crash(&mut cluster, &config, origin, &mut violations).await?;
        observer(Progress::Fault(record.clone()));
        faults.push(record);
    }
    observer(Progress::FinalReads);
    let finals = final_reads(&endpoints, &config, origin, &mut history).await;
    let elections = match monitor.join_next().await {
        Some(Ok(elections)) => elections,
        _ => 0,
    };
    drop(cluster);

    observer(Progress::Checking {
        operations: history.len(),
    });
    let report = judge(
        &config, history, finals, faults, violations, elections, end_ms,
    )
    .await;
    Ok(report)
}

fn validate(config: &ChaosConfig) -> Result<(), ChaosError> {
    if config.nodes == 0 || config.nodes > 9 {
        return Err(ChaosError::InvalidConfig("nodes must be between 1 and 9"));
    }
    if config.clients == 0 || config.keys == 0 {
        return Err(ChaosError::InvalidConfig(
            "clients and keys must be at least 1",
        ));
    }
    if config.hold_ms.0 > config.hold_ms.1 || config.quiet_ms.0 > config.quiet_ms.1 {
        return Err(ChaosError::InvalidConfig(
            "a range's low end is above its high end",
        ));
    }
    if let Target::Etcd { .. } = config.target {
        if let Some(&fault) = config
            .faults
            .iter()
            .find(|kind| kind.needs_fault_injection())
        {
            return Err(ChaosError::Unsupported {
                fault,
                target: "etcd",
            });
        }
    }
    Ok(())
}

/// Starts the cluster and waits for health; retries once with new ports
/// (a reserved port can be taken by someone else before a member binds it).
async fn start_cluster(config: &ChaosConfig) -> Result<Cluster, ChaosError> {
    let cluster_config = ClusterConfig {
        target: config.target.clone(),
        nodes: config.nodes,
        base_dir: config.base_dir.clone(),
        fault_injection: config
            .faults
            .iter()
            .any(|kind| kind.needs_fault_injection()),
        member_flags: config.member_flags.clone(),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut cluster = Cluster::start(cluster_config.clone())?;
        let unhealthy = cluster.wait_ready(config.ready_timeout).await;
        if unhealthy.is_empty() {
            return Ok(cluster);
        }
        if attempt >= 2 {
            let first = cluster
                .members()
                .iter()
                .position(|member| member.name == unhealthy[0])
                .unwrap_or(0);
            return Err(ChaosError::NotReady {
                timeout_ms: config.ready_timeout.as_millis() as u64,
                members: unhealthy,
                log_tail: cluster.log_tail(first, 2000),
            });
        }
    }
}

fn elapsed_ms(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Draws faults until the deadline: quiet time, fault, heal, recovery.
#[allow(clippy::too_many_arguments)]
async fn fault_schedule(
    cluster: &mut Cluster,
    config: &ChaosConfig,
    rng: &mut SeededRng,
    origin: Instant,
    deadline: Instant,
    records: &mut Vec<FaultRecord>,
    violations: &mut Vec<String>,
    observer: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ChaosError> {
    if config.faults.is_empty() {
        return Ok(());
    }
    loop {
        let quiet = Duration::from_millis(rng.between(config.quiet_ms.0, config.quiet_ms.1));
        let kind = *rng.pick(&config.faults);
        let hold = Duration::from_millis(rng.between(config.hold_ms.0, config.hold_ms.1));
        if Instant::now() + quiet + hold >= deadline {
            return Ok(());
        }
        tokio::time::sleep(quiet).await;
        let start_ms = elapsed_ms(origin);
        let injected = faults::inject(cluster, kind, hold, rng).await?;
        let end_ms = elapsed_ms(origin);
        violations.extend(injected.violation.clone());
        let unhealthy = cluster.wait_ready(config.ready_timeout).await;
        let recovered_ms = if unhealthy.is_empty() {
            elapsed_ms(origin)
        } else {
            0
        };
        let record = FaultRecord {
            kind: kind.name().to_string(),
            target: injected.target,
            start_ms,
            end_ms,
            recovered_ms,
            longest_write_gap_ms: 0,
            note: injected.note,
        };
        observer(Progress::Fault(record.clone()));
        records.push(record);
        if !unhealthy.is_empty() {
            violations.push(format!(
                "after {kind} at {start_ms} ms, members {unhealthy:?} were not healthy within {} ms",
                config.ready_timeout.as_millis()
            ));
            return Ok(());
        }
    }
}

/// `kills` times: `kill -9` a random member, restart it at once, wait until
/// it is healthy. A member that does not come back is a violation.
#[allow(clippy::too_many_arguments)]
async fn crash_loop(
    cluster: &mut Cluster,
    config: &ChaosConfig,
    kills: u32,
    rng: &mut SeededRng,
    origin: Instant,
    records: &mut Vec<FaultRecord>,
    violations: &mut Vec<String>,
    observer: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), ChaosError> {
    for round in 1..=kills {
        let target = rng.below(cluster.members().len() as u64) as usize;
        let pause = Duration::from_millis(rng.between(100, 500));
        let name = cluster.members()[target].name.clone();
        let start_ms = elapsed_ms(origin);
        cluster.kill(target);
        cluster.spawn(target)?;
        let end_ms = elapsed_ms(origin);
        let unhealthy = cluster.wait_ready(config.ready_timeout).await;
        let recovered_ms = if unhealthy.is_empty() {
            elapsed_ms(origin)
        } else {
            0
        };
        let record = FaultRecord {
            kind: FaultKind::Kill.name().to_string(),
            target: name.clone(),
            start_ms,
            end_ms,
            recovered_ms,
            longest_write_gap_ms: 0,
            note: format!("crash loop {round}/{kills}"),
        };
        observer(Progress::Fault(record.clone()));
        records.push(record);
        if !unhealthy.is_empty() {
            violations.push(format!(
                "crash loop {round}: {unhealthy:?} did not come back within {} ms; log of {name}:\n{}",
                config.ready_timeout.as_millis(),
                cluster.log_tail(target, 2000)
            ));
            return Ok(());
        }
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

/// Resumes paused members, starts stopped ones, removes partitions and waits
/// for health; members that do not recover are violations.
async fn heal_all(
    cluster: &mut Cluster,
    config: &ChaosConfig,
    violations: &mut Vec<String>,
) -> Result<(), ChaosError> {
    for index in 0..cluster.members().len() {
        if cluster.members()[index].is_paused() {
            cluster.resume(index)?;
        }
        if cluster.reap_exited(index).is_some() || !cluster.members()[index].is_running() {
            cluster.spawn(index)?;
        }
    }
    if config
        .faults
        .iter()
        .any(|kind| kind.needs_fault_injection())
    {
        // Members restarted a moment ago may not serve HTTP yet; their fault
        // sets start empty anyway, so only running members need clearing.
        let _ = faults::heal_partitions(cluster).await;
    }
    let unhealthy = cluster.wait_ready(config.ready_timeout).await;
    for name in unhealthy {
        let index = cluster
            .members()
            .iter()
            .position(|member| member.name == name)
            .unwrap_or(0);
        violations.push(format!(
            "member {name} was not healthy {} ms after healing; last log lines:\n{}",
            config.ready_timeout.as_millis(),
            cluster.log_tail(index, 2000)
        ));
    }
    Ok(())
}

/// With the workload stopped, crashes every member at once and restarts
/// them: every write acknowledged so far must survive, which the final reads
/// then check. Writes made after an earlier crash would hide a loss from the
/// final reads, so this crash comes last.
async fn final_crash(
    cluster: &mut Cluster,
    config: &ChaosConfig,
    origin: Instant,
    violations: &mut Vec<String>,
) -> Result<FaultRecord, ChaosError> {
    let start_ms = elapsed_ms(origin);
    for index in 0..cluster.members().len() {
        cluster.kill(index);
    }
    for index in 0..cluster.members().len() {
        cluster.spawn(index)?;
    }
    let end_ms = elapsed_ms(origin);
    let unhealthy = cluster.wait_ready(config.ready_timeout).await;
    if !unhealthy.is_empty() {
        violations.push(format!(
            "after the final crash, members {unhealthy:?} were not healthy within {} ms",
            config.ready_timeout.as_millis()
        ));
    }
    Ok(FaultRecord {
        kind: FaultKind::KillAll.name().to_string(),
        target: "all".to_string(),
        start_ms,
        end_ms,
        recovered_ms: if unhealthy.is_empty() {
            elapsed_ms(origin)
        } else {
            0
        },
        longest_write_gap_ms: 0,
        note: "after the workload, before the final reads".to_string(),
    })
}

/// Reads every key through any member, retrying until `ready_timeout`;
/// each attempt is recorded in the history. Returns the values read.
async fn final_reads(
    endpoints: &[String],
    config: &ChaosConfig,
    origin: Instant,
    history: &mut Vec<Operation>,
) -> BTreeMap<String, Option<String>> {
    let reader = config.clients as u32;
    let deadline = Instant::now() + config.ready_timeout;
    let mut finals = BTreeMap::new();
    let mut endpoint = 0;
    for key_index in 0..config.keys {
        let key = key_name(key_index);
        while Instant::now() < deadline {
            let Some(mut client) = workload::connect(&endpoints[endpoint], config.op_timeout).await
            else {
                endpoint = (endpoint + 1) % endpoints.len();
                continue;
            };
            let invoke_ns = origin.elapsed().as_nanos() as u64;
            let outcome =
                workload::execute(&mut client, &key, &Command::Get, config.op_timeout).await;
            let complete_ns = origin.elapsed().as_nanos() as u64;
            let value = match &outcome {
                Outcome::Ok(Response::Get(value)) => Some(value.clone()),
                _ => None,
            };
            history.push(Operation {
                client: reader,
                key: key.clone(),
                command: Command::Get,
                invoke_ns,
                complete_ns,
                outcome,
            });
            if let Some(value) = value {
                finals.insert(key.clone(), value);
                break;
            }
            endpoint = (endpoint + 1) % endpoints.len();
        }
    }
    read_ledger(endpoints, config, origin, deadline, history, &mut finals).await;
    finals
}

/// Reads the whole ledger and records, for every ledger key written or
/// found, a read of it (absent keys read as `None`), so that both checkers
/// judge each ledger write on its own.
async fn read_ledger(
    endpoints: &[String],
    config: &ChaosConfig,
    origin: Instant,
    deadline: Instant,
    history: &mut Vec<Operation>,
    finals: &mut BTreeMap<String, Option<String>>,
) {
    let reader = config.clients as u32;
    let mut endpoint = 0;
    while Instant::now() < deadline {
        let endpoint_now = &endpoints[endpoint];
        endpoint = (endpoint + 1) % endpoints.len();
        let Some(mut client) = workload::connect(endpoint_now, config.op_timeout).await else {
            continue;
        };
        let invoke_ns = origin.elapsed().as_nanos() as u64;
        let page_timeout = config.op_timeout * 5;
        let Some(found) = workload::read_prefix(&mut client, LEDGER_PREFIX, page_timeout).await
        else {
            continue;
        };
        let complete_ns = origin.elapsed().as_nanos() as u64;
        let mut keys: BTreeSet<String> = history
            .iter()
            .filter(|operation| operation.key.starts_with(LEDGER_PREFIX))
            .map(|operation| operation.key.clone())
            .collect();
        keys.extend(found.keys().cloned());
        for key in keys {
            let value = found.get(&key).cloned();
            history.push(Operation {
                client: reader,
                key: key.clone(),
                command: Command::Get,
                invoke_ns,
                complete_ns,
                outcome: Outcome::Ok(Response::Get(value.clone())),
            });
            finals.insert(key, value);
        }
        return;
    }
}

/// Polls every member's status until `stop`; returns the number of leader
/// changes seen: each time the newest (term, leader) pair reported differs
/// from the previous one. Counting changes rather than distinct terms keeps
/// the figure right when a member comes back with an older term.
async fn watch_elections(endpoints: Vec<String>, mut stop: watch::Receiver<bool>) -> u64 {
    let timeout = Duration::from_millis(300);
    let mut clients = vec![None; endpoints.len()];
    let mut last_leadership: Option<(u64, u64)> = None;
    let mut changes = 0u64;
    while !*stop.borrow() {
        let mut newest: Option<(u64, u64)> = None;
        for (index, endpoint) in endpoints.iter().enumerate() {
            if clients[index].is_none() {
                clients[index] = workload::connect(endpoint, timeout).await;
            }
            if let Some(client) = clients[index].as_mut() {
                match tokio::time::timeout(timeout, member_term(client)).await {
                    Ok(Some((term, leader))) if leader != 0 => {
                        newest = newest.max(Some((term, leader)));
                    }
                    Ok(Some(_)) => {}
                    _ => clients[index] = None,
                }
            }
        }
        if let Some(leadership) = newest {
            if last_leadership.is_some_and(|last| last != leadership) {
                changes += 1;
            }
            last_leadership = Some(leadership);
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), stop.changed()).await;
    }
    changes
}

/// Runs the checkers and assembles the report.
async fn judge(
    config: &ChaosConfig,
    history: Vec<Operation>,
    finals: BTreeMap<String, Option<String>>,
    mut faults: Vec<FaultRecord>,
    mut violations: Vec<String>,
    elections: u64,
    end_ms: u64,
) -> Report {
    let limits = config.check_limits.clone();
    let (history, check) = tokio::task::spawn_blocking(move || {
        let check = check_history(&history, &limits);
        (history, check)
    })
    .await
    .expect("the checker does not panic on any history");
    let lost = lost_acknowledged_writes(&history, &finals);
    let mut final_reads_missing: Vec<String> = (0..config.keys)
        .map(key_name)
        .filter(|key| !finals.contains_key(key))
        .collect();
    let ledger_written = history
        .iter()
        .any(|operation| operation.key.starts_with(LEDGER_PREFIX));
    let ledger_read = finals.keys().any(|key| key.starts_with(LEDGER_PREFIX));
    if ledger_written && !ledger_read {
        final_reads_missing.push(LEDGER_PREFIX.to_string());
    }

    let write_times = report::write_times_ms(&history);
    let gaps = report::write_gaps(&write_times, 0, end_ms);
    let longest_write_gap_ms = gaps.iter().map(|(from, to)| to - from).max().unwrap_or(0);
    for fault in &mut faults {
        let until = if fault.recovered_ms > 0 {
            fault.recovered_ms
        } else {
            end_ms
        };
        fault.longest_write_gap_ms = report::longest_gap_overlapping(&gaps, fault.start_ms, until);
        let single = fault
            .kind
            .parse::<FaultKind>()
            .map(|kind| !kind.is_majority_fault())
            .unwrap_or(true);
        if let Some(max) = config.write_gap_max {
            if single && fault.longest_write_gap_ms > max.as_millis() as u64 {
                violations.push(format!(
                    "write gap of {} ms after {} of {} at {} ms (limit {} ms)",
                    fault.longest_write_gap_ms,
                    fault.kind,
                    fault.target,
                    fault.start_ms,
                    max.as_millis()
                ));
            }
        }
    }
    if check.verdict == Verdict::NotLinearizable {
        let key = check
            .offending
            .as_ref()
            .map(|offending| offending.key.as_str())
            .unwrap_or("?");
        violations.push(format!(
            "the history is not linearizable (first offending key {key})"
        ));
    }
    if !lost.is_empty() {
        violations.push(format!("{} acknowledged writes were lost", lost.len()));
    }
    if !final_reads_missing.is_empty() {
        violations.push(format!(
            "final reads failed for {} keys: the healed cluster did not serve reads",
            final_reads_missing.len()
        ));
    }
    let verdict = if !violations.is_empty() {
        RunVerdict::Violation
    } else if check.verdict == Verdict::Unknown {
        RunVerdict::Inconclusive
    } else {
        RunVerdict::Pass
    };
    Report {
        target: config.target.name().to_string(),
        seed: config.seed,
        nodes: config.nodes,
        clients: config.clients,
        keys: config.keys,
        duration_ms: end_ms,
        ops: OpCounts::of(&history),
        linearizable: check.verdict == Verdict::Linearizable,
        linearizability: check.verdict,
        offending_history: check.offending,
        lost_acknowledged_writes: lost.len() as u64,
        ledger_writes_checked: history
            .iter()
            .filter(|operation| {
                operation.key.starts_with(LEDGER_PREFIX)
                    && operation.is_acknowledged_write()
                    && finals.contains_key(&operation.key)
            })
            .count() as u64,
        lost_writes: lost.into_iter().take(20).collect(),
        final_reads_missing,
        availability_percent: report::availability_percent(&write_times, 0, end_ms),
        longest_write_gap_ms,
        elections,
        faults,
        violations,
        verdict,
    }
}
