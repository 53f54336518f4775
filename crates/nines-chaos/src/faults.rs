//! The fault kinds and how each is injected into and healed in a
//! [`Cluster`]: kill -9 and restart (a random member or the leader), a
//! graceful restart, SIGSTOP/SIGCONT pauses, network partitions through the
//! members' fault-injection layer, crashing every member at once, and a
//! failing fsync (after which the member must exit, never go on).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, ClusterError};
use crate::rng::SeededRng;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `kill -9` a random member, keep it down, restart it.
    Kill,
    /// Stop a random member gracefully (SIGTERM) and start it again at once.
    Restart,
    /// `kill -9` the leader, keep it down, restart it.
    LeaderKill,
    /// SIGSTOP a member (the leader half the time) for longer than an
    /// election timeout, then SIGCONT.
    Pause,
    /// Cut the peer network: isolate the leader, split majority/minority, or
    /// a bridge (two sides that both reach one member). nines only.
    Partition,
    /// `kill -9` every member at once, then restart them all.
    KillAll,
    /// Make a member's next log fsync fail; it must exit. nines only.
    DiskFail,
}

impl FaultKind {
    /// Every kind, in documentation order.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Restart,
        FaultKind::LeaderKill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::KillAll,
        FaultKind::DiskFail,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Restart => "restart",
            FaultKind::LeaderKill => "leader-kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::KillAll => "kill-all",
            FaultKind::DiskFail => "disk-fail",
        }
    }

    /// True when the kind needs the members' fault-injection layer.
    pub fn needs_fault_injection(self) -> bool {
        matches!(self, FaultKind::Partition | FaultKind::DiskFail)
    }

    /// True when the kind takes down a majority on purpose, so write gaps
    /// during it are expected.
    pub fn is_majority_fault(self) -> bool {
        matches!(self, FaultKind::KillAll)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown fault name.
#[derive(Debug, thiserror::Error)]
#[error("unknown fault kind {name:?} (known: kill, restart, leader-kill, pause, partition, kill-all, disk-fail)")]
pub struct UnknownFaultKind {
    /// The name given.
    pub name: String,
}

impl FromStr for FaultKind {
    type Err = UnknownFaultKind;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name.trim())
            .ok_or_else(|| UnknownFaultKind {
                name: name.to_string(),
            })
    }
}

/// What an injection did, for the fault record.
#[derive(Debug, Default)]
pub struct Injected {
    /// Member names or groups hit.
    pub target: String,
    /// Remarks (fallbacks, misbehaviour).
    pub note: String,
    /// A violation the fault itself revealed (e.g. a member kept running
    /// after a failed fsync).
    pub violation: Option<String>,
}

/// Injects `kind`, holds it for `hold`, and heals it. Members are restarted
/// and partitions removed before returning; waiting for health is the
/// caller's job.
pub async fn inject(
    cluster: &mut Cluster,
    kind: FaultKind,
    hold: Duration,
    rng: &mut SeededRng,
) -> Result<Injected, ClusterError> {
    let count = cluster.members().len();
    let random_member = rng.below(count as u64) as usize;
    let prefer_leader = rng.chance(1, 2);
    let partition_shape = rng.below(3);
    let minority_size = 1 + rng.below(((count.max(1) - 1) / 2).max(1) as u64) as usize;
    let mut order: Vec<usize> = (0..count).collect();
    rng.shuffle(&mut order);
    let mut injected = Injected::default();
    match kind {
        FaultKind::Kill => {
            injected.target = cluster.members()[random_member].name.clone();
            cluster.kill(random_member);
            tokio::time::sleep(hold).await;
            cluster.spawn(random_member)?;
        }
        FaultKind::Restart => {
            injected.target = cluster.members()[random_member].name.clone();
            cluster
                .terminate(random_member, Duration::from_secs(5))
                .await?;
            cluster.spawn(random_member)?;
        }
        FaultKind::LeaderKill => {
            let target = leader_or(cluster, random_member, &mut injected).await;
            cluster.kill(target);
            tokio::time::sleep(hold).await;
            cluster.spawn(target)?;
        }
        FaultKind::Pause => {
            let target = if prefer_leader {
                leader_or(cluster, random_member, &mut injected).await
            } else {
                injected.target = cluster.members()[random_member].name.clone();
                random_member
            };
            cluster.pause(target)?;
            tokio::time::sleep(hold).await;
            cluster.resume(target)?;
        }
        FaultKind::Partition => {
            let shape = (partition_shape, minority_size);
            let groups = partition_groups(cluster, shape, &order, &mut injected).await;
            apply_partition(cluster, &groups).await?;
            tokio::time::sleep(hold).await;
            heal_partitions(cluster).await?;
        }
        FaultKind::KillAll => {
            injected.target = "all".to_string();
            for index in 0..count {
                cluster.kill(index);
            }
            tokio::time::sleep(hold).await;
            for index in 0..count {
                cluster.spawn(index)?;
            }
        }
        FaultKind::DiskFail => {
            let target = if prefer_leader {
                leader_or(cluster, random_member, &mut injected).await
            } else {
                injected.target = cluster.members()[random_member].name.clone();
                random_member
            };
            disk_fail(cluster, target, hold, &mut injected).await?;
        }
    }
    Ok(injected)
}

/// The leader's index, or `fallback` (noted) when no leader is known.
async fn leader_or(cluster: &Cluster, fallback: usize, injected: &mut Injected) -> usize {
    let target = match cluster.leader().await {
        Some(leader) => leader,
        None => {
            injected.note = "leader unknown; hit a random member".to_string();
            fallback
        }
    };
    injected.target = cluster.members()[target].name.clone();
    target
}

/// Chooses the sides: shape 0 isolates the leader, 1 splits a random
/// minority of `minority_size` members from the majority, 2 builds a bridge (two sides that cannot
/// reach each other, one member that reaches both). Returns, per member, the
/// members it must not reach.
async fn partition_groups(
    cluster: &Cluster,
    (shape, minority_size): (u64, usize),
    order: &[usize],
    injected: &mut Injected,
) -> Vec<Vec<usize>> {
    let count = order.len();
    let names = |indices: &[usize]| {
        indices
            .iter()
            .map(|&index| cluster.members()[index].name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut blocked = vec![Vec::new(); count];
    if shape == 2 && count >= 3 {
        let bridge = order[0];
        let (left, right) = order[1..].split_at((count - 1) / 2);
        for &a in left {
            for &b in right {
                blocked[a].push(b);
                blocked[b].push(a);
            }
        }
        injected.target = format!(
            "{}|{}|{} (bridge {})",
            names(left),
            names(&[bridge]),
            names(right),
            names(&[bridge])
        );
        return blocked;
    }
    let minority: Vec<usize> = if shape == 0 {
        match cluster.leader().await {
            Some(leader) => vec![leader],
            None => {
                injected.note = "leader unknown; isolated a random member".to_string();
                vec![order[0]]
            }
        }
    } else {
        order[..minority_size.min(count)].to_vec()
    };
    let majority: Vec<usize> = (0..count)
        .filter(|index| !minority.contains(index))
        .collect();
    for &a in &minority {
        for &b in &majority {
            blocked[a].push(b);
            blocked[b].push(a);
        }
    }
    injected.target = format!("{}|{}", names(&minority), names(&majority));
    blocked
}

async fn apply_partition(cluster: &Cluster, blocked: &[Vec<usize>]) -> Result<(), ClusterError> {
    for (index, peers) in blocked.iter().enumerate() {
        let names: Vec<String> = peers
            .iter()
            .map(|&peer| cluster.members()[peer].name.clone())
            .collect();
        if cluster.members()[index].is_running() {
            cluster.set_faults(index, &names, false).await?;
        }
    }
    Ok(())
}

/// Clears every running member's fault set.
pub async fn heal_partitions(cluster: &Cluster) -> Result<(), ClusterError> {
    for index in 0..cluster.members().len() {
        if cluster.members()[index].is_running() && !cluster.members()[index].is_paused() {
            cluster.set_faults(index, &[], false).await?;
        }
    }
    Ok(())
}

/// Arms a failing fsync on `target` and waits (bounded) for it to exit, as
/// it must once a log fsync fails under the write load; then restarts it.
async fn disk_fail(
    cluster: &mut Cluster,
    target: usize,
    hold: Duration,
    injected: &mut Injected,
) -> Result<(), ClusterError> {
    cluster.set_faults(target, &[], true).await?;
    let deadline = Instant::now() + hold + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.reap_exited(target) {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let name = cluster.members()[target].name.clone();
    match status {
        Some(status) if status.success() => {
            injected.violation = Some(format!("{name} exited with success after a failed fsync"));
        }
        Some(status) => injected.note = format!("member exited ({status})"),
        None => {
            injected.violation = Some(format!(
                "{name} kept running for {} ms after its fsync failed",
                (hold + Duration::from_secs(10)).as_millis()
            ));
            cluster.kill(target);
        }
    }
    tokio::time::sleep(hold.saturating_sub(Duration::from_millis(500))).await;
    cluster.spawn(target)
}
