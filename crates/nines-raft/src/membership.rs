//! Cluster membership as etcd's Cluster service sees it: adding members (as
//! learners or voters), promoting, removing and updating them through
//! openraft's joint consensus on the leader, forwarding those calls from a
//! follower, finding a joining member's id from the running cluster, and
//! stopping a member that sees itself removed. It also exports the applied
//! state as a snapshot file for `Maintenance.Snapshot`, and founds a new
//! cluster's data dirs from such a file ([`restore_data_dir`]). It does not
//! touch the write or read paths of client commands.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Membership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::network::{Faults, PeerError, PeerMethod, PeerPool};
use crate::node::{ClusterState, Core, NodeConfig, RaftNode, StartError, WriteError};
use crate::types::{MemberNode, NodeId};
use crate::{fnv, identity};

/// A learner may be promoted once it holds this share (in percent) of the
/// leader's log, as etcd requires.
const LEARNER_READY_PERCENT: u64 = 90;
/// How long a joining member keeps asking the members of `--initial-cluster`
/// for the membership before it gives up.
const JOIN_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one peer may take to answer a membership question.
const PEER_PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a member change waits for an earlier one to finish.
const CHANGE_IN_PROGRESS_WAIT: Duration = Duration::from_secs(3);
/// Time a removed member keeps running after noticing, so the messages that
/// commit its removal still reach the others, before Raft stops.
const REMOVED_GRACE: Duration = Duration::from_millis(500);
/// How long a member goes without a leader before it asks its peers whether
/// it was removed while away.
const LEADERLESS_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Attempts the leader makes to tell a removed member it is out.
const REMOVED_NOTICE_ATTEMPTS: u32 = 10;

/// A member as member lists show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's id.
    pub id: NodeId,
    /// Its name and URLs; the name is empty until the member has started.
    pub node: MemberNode,
    /// Whether it is a learner (receives the log, does not vote).
    pub is_learner: bool,
}

/// A membership change, as etcd's Cluster service asks for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add a member with these peer URLs; its id is assigned by the leader.
    Add {
        /// Peer URLs of the new member.
        peer_urls: Vec<String>,
        /// Add it as a learner rather than a voter.
        is_learner: bool,
    },
    /// Remove a member (voter or learner).
    Remove {
        /// The member.
        id: NodeId,
    },
    /// Replace a member's peer URLs.
    Update {
        /// The member.
        id: NodeId,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
}

/// What a membership change answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeOutcome {
    /// The member added, for [`MemberChange::Add`].
    pub added: Option<MemberInfo>,
    /// The members after the change.
    pub members: Vec<MemberInfo>,
    /// Log index of the membership entry that made the change.
    pub log_index: u64,
}

/// Why a membership change was refused (then nothing changed) or could not
/// be completed. Messages are etcd's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    /// No member has this id.
    #[error("etcdserver: member not found")]
    NotFound,
    /// Another member already uses one of the peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// A peer URL is not `http(s)://host:port`.
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    /// Only learners can be promoted.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// The learner lags too far behind the leader to be promoted.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The change would leave fewer reachable voters than a quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// Some voters are unreachable, so the change could cost the quorum.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// Raft could not complete the change (no leader, leader changed, ...).
    #[error(transparent)]
    Unavailable(#[from] WriteError),
}

/// What a member knows of the cluster, as a joining member asks for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ClusterView {
    cluster_id: u64,
    /// The members as the log has them (possibly not yet committed).
    members: Vec<MemberInfo>,
    /// Index of the last applied entry of the answering member.
    applied_index: u64,
    /// The members of the applied (committed) membership at that index.
    applied_ids: Vec<NodeId>,
}

/// A `Membership` peer RPC.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum MembershipRequest {
    /// The member list and cluster id.
    View,
    /// A member change forwarded to the leader.
    Change(MemberChange),
    /// The leader tells the receiver it was removed.
    Removed,
    /// The leader hands leadership over: campaign now (if still in `term`).
    Campaign {
        /// The leader's term when it asked.
        term: u64,
    },
}

/// The answer to a [`MembershipRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum MembershipReply {
    /// For `View`.
    View(ClusterView),
    /// For `Change`.
    Change(ChangeOutcome),
    /// For `Removed`.
    Removed,
    /// For `Campaign`: the campaign started.
    Campaign,
}

/// Per-member membership state kept in the member's core.
#[derive(Debug)]
pub(crate) struct MembershipState {
    /// Serializes member changes on the leader, so checks and changes of two
    /// concurrent calls do not interleave.
    changes: tokio::sync::Mutex<()>,
    /// Set once this member knows it was removed from the cluster.
    removed: watch::Sender<bool>,
}

impl Default for MembershipState {
    fn default() -> Self {
        MembershipState {
            changes: tokio::sync::Mutex::new(()),
            removed: watch::channel(false).0,
        }
    }
}

impl MembershipState {
    /// Whether this member was removed from the cluster.
    pub(crate) fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }
}

impl RaftNode {
    /// The members (voters and learners) as this member's log has them.
    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self.core.raft.metrics().borrow().membership_config.clone();
        member_infos(m.membership())
    }

    /// Applies a membership change on the leader (forwarded there from a
    /// follower) and waits until this member's log carries it.
    pub async fn change_members(
        &self,
        change: MemberChange,
    ) -> Result<ChangeOutcome, MembershipError> {
        let core = &self.core;
        let deadline = Instant::now() + core.request_timeout;
        loop {
            let (leader, node) = core.wait_leader(deadline).await?;
            if leader == core.id {
                return change_on_leader(core, change).await;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res: Result<Result<MembershipReply, MembershipError>, PeerError> = core
                .peers
                .call(
                    leader,
                    &node,
                    PeerMethod::Membership,
                    &MembershipRequest::Change(change.clone()),
                    remaining,
                )
                .await;
            match res {
                Ok(Ok(MembershipReply::Change(outcome))) => {
                    // Member lists served here right after the call (etcdctl
                    // asks for one) must show the change.
                    let _ = core.wait_applied(outcome.log_index, deadline).await;
                    return Ok(outcome);
                }
                Ok(Ok(_)) => return Err(WriteError::LeaderChanged.into()),
                Ok(Err(e)) => return Err(e),
                Err(PeerError::Unreachable { .. }) => {
                    core.wait_leader_change(leader, deadline).await?
                }
                Err(_) => return Err(WriteError::LeaderChanged.into()),
            }
        }
    }

    /// Whether this member was removed from the cluster; it then stops.
    pub fn is_removed(&self) -> bool {
        self.core.membership.is_removed()
    }

    /// Resolves once this member knows it was removed from the cluster.
    pub async fn removed(&self) {
        let mut rx = self.core.membership.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The applied state as a snapshot file (see
    /// [`crate::state_machine::SmShared::export_snapshot`]), for download.
    pub async fn export_snapshot(&self) -> std::io::Result<Vec<u8>> {
        self.core.sm.clone().export_snapshot_gated().await
    }
}

/// Serves a `Membership` peer RPC.
pub(crate) async fn serve(
    core: &Arc<Core>,
    from: NodeId,
    req: MembershipRequest,
) -> Result<MembershipReply, MembershipError> {
    match req {
        MembershipRequest::View => {
            let (applied_index, applied_ids) = {
                let applied = core.sm.applied.read().expect("applied lock");
                let ids = applied.1.membership().nodes().map(|(id, _)| *id).collect();
                (applied.0.map(|l| l.index).unwrap_or(0), ids)
            };
            Ok(MembershipReply::View(ClusterView {
                cluster_id: core.cluster_id,
                members: member_infos(core.raft.metrics().borrow().membership_config.membership()),
                applied_index,
                applied_ids,
            }))
        }
        MembershipRequest::Change(change) => {
            if core.raft.metrics().borrow().current_leader != Some(core.id) {
                return Err(WriteError::LeaderChanged.into());
            }
            change_on_leader(core, change)
                .await
                .map(MembershipReply::Change)
        }
        MembershipRequest::Campaign { term } => {
            if crate::transfer::campaign(core, term).await {
                Ok(MembershipReply::Campaign)
            } else {
                Err(WriteError::LeaderChanged.into())
            }
        }
        MembershipRequest::Removed => {
            // Only a member that is no longer in the committed membership of
            // the sender sends this; trust it, but only from a known member.
            let known = core
                .sm
                .applied
                .read()
                .expect("applied lock")
                .1
                .membership()
                .get_node(&from)
                .is_some();
            if known {
                tokio::spawn(stop_removed(core.clone(), "the leader said so"));
            }
            Ok(MembershipReply::Removed)
        }
    }
}

fn member_infos(m: &Membership<NodeId, MemberNode>) -> Vec<MemberInfo> {
    let voters: BTreeSet<NodeId> = m.voter_ids().collect();
    m.nodes()
        .map(|(id, node)| MemberInfo {
            id: *id,
            node: node.clone(),
            is_learner: !voters.contains(id),
        })
        .collect()
}

/// Checks and applies `change`; this member is the leader.
async fn change_on_leader(
    core: &Arc<Core>,
    change: MemberChange,
) -> Result<ChangeOutcome, MembershipError> {
    let _serial = core.membership.changes.lock().await;
    let metrics = core.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let nodes: BTreeMap<NodeId, MemberNode> =
        membership.nodes().map(|(i, n)| (*i, n.clone())).collect();
    match change {
        MemberChange::Add {
            peer_urls,
            is_learner,
        } => {
            check_urls(&peer_urls)?;
            if nodes
                .values()
                .any(|n| n.peer_urls.iter().any(|u| peer_urls.contains(u)))
            {
                return Err(MembershipError::PeerUrlExists);
            }
            // As etcd: only add while every voter is reachable, so a new
            // voter that never starts cannot cost the quorum.
            if reachable_voters(core, &voters, &nodes).await < voters.len() {
                return Err(MembershipError::Unhealthy);
            }
            let id = new_member_id(core.cluster_id, &peer_urls, &nodes);
            let node = MemberNode {
                name: String::new(),
                peer_urls,
                client_urls: Vec::new(),
            };
            let mut add = BTreeMap::new();
            add.insert(id, node);
            let mut resp = change_raft(core, ChangeMembers::AddNodes(add), true).await?;
            if !is_learner {
                resp = change_raft(core, ChangeMembers::AddVoterIds([id].into()), false).await?;
            }
            let mut outcome = resp;
            outcome.added = outcome.members.iter().find(|m| m.id == id).cloned();
            Ok(outcome)
        }
        MemberChange::Remove { id } => {
            let Some(node) = nodes.get(&id).cloned() else {
                return Err(MembershipError::NotFound);
            };
            let outcome = if voters.contains(&id) {
                check_remove_voter(core, id, &voters, &nodes).await?;
                change_raft(core, ChangeMembers::RemoveVoters([id].into()), false).await?
            } else {
                change_raft(core, ChangeMembers::RemoveNodes([id].into()), false).await?
            };
            if id != core.id {
                tokio::spawn(notify_removed(core.clone(), id, node));
            }
            Ok(outcome)
        }
        MemberChange::Update { id, peer_urls } => {
            check_urls(&peer_urls)?;
            let Some(mut node) = nodes.get(&id).cloned() else {
                return Err(MembershipError::NotFound);
            };
            if nodes
                .iter()
                .any(|(other, n)| *other != id && n.peer_urls.iter().any(|u| peer_urls.contains(u)))
            {
                return Err(MembershipError::PeerUrlExists);
            }
            node.peer_urls = peer_urls;
            let mut set = BTreeMap::new();
            set.insert(id, node);
            Ok(change_raft(core, ChangeMembers::SetNodes(set), false).await?)
        }
        MemberChange::Promote { id } => {
            if !nodes.contains_key(&id) {
                return Err(MembershipError::NotFound);
            }
            if voters.contains(&id) {
                return Err(MembershipError::NotLearner);
            }
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index);
            let leader_last = metrics.last_log_index.unwrap_or(0);
            if !learner_ready(matched, leader_last) {
                return Err(MembershipError::LearnerNotReady);
            }
            Ok(change_raft(core, ChangeMembers::AddVoterIds([id].into()), false).await?)
        }
    }
}

/// etcd's rule: a learner is in sync when it holds 90% of the leader's log.
fn learner_ready(matched: Option<u64>, leader_last: u64) -> bool {
    matched.is_some_and(|m| m * 100 >= leader_last * LEARNER_READY_PERCENT)
}

/// etcd's checks before removing a voter: a voter that is down may always
/// go; otherwise the voters left reachable must still form a quorum.
async fn check_remove_voter(
    core: &Arc<Core>,
    id: NodeId,
    voters: &BTreeSet<NodeId>,
    nodes: &BTreeMap<NodeId, MemberNode>,
) -> Result<(), MembershipError> {
    if voters.len() == 1 {
        return Err(MembershipError::NotEnoughStarted);
    }
    if id != core.id {
        if let Some(node) = nodes.get(&id) {
            if !probe(&core.peers, id, node).await {
                return Ok(());
            }
        }
    }
    let active = reachable_voters(core, voters, nodes).await;
    if active.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
        return Err(MembershipError::Unhealthy);
    }
    Ok(())
}

/// Voters that answer a membership probe now, this member included.
async fn reachable_voters(
    core: &Arc<Core>,
    voters: &BTreeSet<NodeId>,
    nodes: &BTreeMap<NodeId, MemberNode>,
) -> usize {
    let probes = voters.iter().filter(|v| **v != core.id).filter_map(|v| {
        let node = nodes.get(v)?.clone();
        let peers = core.peers.clone();
        let id = *v;
        Some(async move { probe(&peers, id, &node).await })
    });
    let answers = futures::future::join_all(probes).await;
    answers.into_iter().filter(|ok| *ok).count() + usize::from(voters.contains(&core.id))
}

async fn probe(peers: &PeerPool, id: NodeId, node: &MemberNode) -> bool {
    let res: Result<Result<MembershipReply, MembershipError>, PeerError> = peers
        .call(
            id,
            node,
            PeerMethod::Membership,
            &MembershipRequest::View,
            PEER_PROBE_TIMEOUT,
        )
        .await;
    matches!(res, Ok(Ok(_)))
}

/// Runs one openraft membership change, waiting a little for one already in
/// progress, and answers the membership it committed.
async fn change_raft(
    core: &Arc<Core>,
    change: ChangeMembers<NodeId, MemberNode>,
    retain: bool,
) -> Result<ChangeOutcome, MembershipError> {
    let deadline = Instant::now() + CHANGE_IN_PROGRESS_WAIT;
    loop {
        let res = tokio::time::timeout(
            core.request_timeout,
            core.raft.change_membership(change.clone(), retain),
        )
        .await;
        match res {
            Err(_) => return Err(WriteError::Timeout.into()),
            Ok(Ok(resp)) => {
                let members = resp
                    .membership
                    .as_ref()
                    .map(member_infos)
                    .unwrap_or_default();
                return Ok(ChangeOutcome {
                    added: None,
                    members,
                    log_index: resp.log_id.index,
                });
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => match e {
                ChangeMembershipError::InProgress(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                ChangeMembershipError::InProgress(_) => return Err(WriteError::Timeout.into()),
                ChangeMembershipError::EmptyMembership(_) => {
                    return Err(MembershipError::NotEnoughStarted)
                }
                ChangeMembershipError::LearnerNotFound(_) => return Err(MembershipError::NotFound),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                return Err(WriteError::LeaderChanged.into())
            }
            Ok(Err(RaftError::Fatal(_))) => return Err(WriteError::Stopped.into()),
        }
    }
}

/// etcd accepts `http`/`https` URLs with a port and no path.
fn check_urls(urls: &[String]) -> Result<(), MembershipError> {
    if urls.is_empty() {
        return Err(MembershipError::BadUrls);
    }
    for url in urls {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or(MembershipError::BadUrls)?;
        let (host, port) = rest.rsplit_once(':').ok_or(MembershipError::BadUrls)?;
        // etcd accepts an empty host (`http://:2380`), so this does too.
        let host_ok = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c));
        if !host_ok || port.parse::<u16>().is_err() {
            return Err(MembershipError::BadUrls);
        }
    }
    Ok(())
}

/// A fresh member id: a hash of the cluster, the peer URLs and the time, as
/// etcd does, never 0 and never one in use.
fn new_member_id(
    cluster_id: u64,
    peer_urls: &[String],
    nodes: &BTreeMap<NodeId, MemberNode>,
) -> NodeId {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut salt = nanos;
    loop {
        let bytes = cluster_id
            .to_le_bytes()
            .into_iter()
            .chain(salt.to_le_bytes())
            .chain(peer_urls.iter().flat_map(|u| u.bytes().chain([0u8])));
        let id = fnv(bytes);
        if id != 0 && !nodes.contains_key(&id) {
            return id;
        }
        salt = salt.wrapping_add(1);
    }
}

/// Tells a removed member it is out, so it stops even if the leader stopped
/// replicating to it before it saw the change.
async fn notify_removed(core: Arc<Core>, id: NodeId, node: MemberNode) {
    for _ in 0..REMOVED_NOTICE_ATTEMPTS {
        let res: Result<Result<MembershipReply, MembershipError>, PeerError> = core
            .peers
            .call(
                id,
                &node,
                PeerMethod::Membership,
                &MembershipRequest::Removed,
                PEER_PROBE_TIMEOUT,
            )
            .await;
        if res.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Watches the applied membership: once it stops listing this member, after
/// having listed it, the member was removed and stops.
pub(crate) async fn watch_removal(core: Arc<Core>) {
    // Woken by a change of the applied membership or of the leader (server
    // metrics), not by every append and apply.
    let mut membership = core.sm.membership_changes();
    let mut metrics = core.raft.server_metrics();
    let mut stop = core.shutdown_signal();
    let mut seen = false;
    let mut leader_seen_at = Instant::now();
    let mut tick = tokio::time::interval(LEADERLESS_CHECK_INTERVAL);
    loop {
        if metrics.borrow().current_leader.is_some() {
            leader_seen_at = Instant::now();
        }
        let (listed, empty) = {
            let applied = core.sm.applied.read().expect("applied lock");
            let m = applied.1.membership();
            let answer = (m.get_node(&core.id).is_some(), m.nodes().next().is_none());
            answer
        };
        if listed {
            seen = true;
        } else if seen && !empty {
            stop_removed(core, "the committed membership no longer lists it").await;
            return;
        }
        tokio::select! {
            r = membership.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
            _ = tick.tick() => {
                if seen && leader_seen_at.elapsed() >= LEADERLESS_CHECK_INTERVAL
                    && removed_while_away(&core).await
                {
                    stop_removed(core, "a peer that is ahead no longer lists it").await;
                    return;
                }
            }
        }
    }
}

/// Whether a peer proves this member was removed while it was away (down or
/// cut off, so it never saw the change and nobody replicates to it now): the
/// peer has applied at least everything this member's log holds, and its
/// committed membership at that point does not list this member. Ids are
/// never reused, and a peer that lags cannot prove it, so a member that was
/// added but not yet caught up is never stopped by this.
async fn removed_while_away(core: &Arc<Core>) -> bool {
    let (last_index, peers) = {
        let m = core.raft.metrics().borrow().clone();
        let peers: Vec<(NodeId, MemberNode)> = core
            .sm
            .applied
            .read()
            .expect("applied lock")
            .1
            .membership()
            .nodes()
            .filter(|(id, _)| **id != core.id)
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        (m.last_log_index.unwrap_or(0), peers)
    };
    for (id, node) in peers {
        let res: Result<Result<MembershipReply, MembershipError>, PeerError> = core
            .peers
            .call(
                id,
                &node,
                PeerMethod::Membership,
                &MembershipRequest::View,
                PEER_PROBE_TIMEOUT,
            )
            .await;
        if let Ok(Ok(MembershipReply::View(view))) = res {
            if view.applied_index >= last_index
                && !view.applied_ids.is_empty()
                && !view.applied_ids.contains(&core.id)
            {
                return true;
            }
        }
    }
    false
}

/// Marks the member removed and stops Raft after a short grace; the server
/// then stops serving (`RaftNode::fatal` resolves).
async fn stop_removed(core: Arc<Core>, why: &'static str) {
    if core.membership.removed.send_replace(true) {
        return;
    }
    tracing::warn!(id = %format!("{:x}", core.id), why, "this member was removed from the cluster; stopping");
    tokio::time::sleep(REMOVED_GRACE).await;
    let _ = core.raft.shutdown().await;
}

/// A joining member's id and cluster id (`--initial-cluster-state existing`):
/// from its data dir when it has joined before, else from the running
/// cluster, by matching its peer URL against the member list as etcd does.
pub(crate) async fn joining_identity(cfg: &NodeConfig) -> Result<(NodeId, u64), StartError> {
    if let Some((name, id, cluster_id)) =
        identity::read(&cfg.data_dir).map_err(StartError::DataDir)?
    {
        if name != cfg.name {
            return Err(StartError::DataDir(format!(
                "data dir {} belongs to member {name:?}, not to {:?}",
                cfg.data_dir.display(),
                cfg.name
            )));
        }
        return Ok((id, cluster_id));
    }
    let Some((_, own_url)) = cfg.initial_cluster.iter().find(|(n, _)| n == &cfg.name) else {
        return Err(StartError::Config(format!(
            "--initial-cluster has no member named {:?} (this member's --name)",
            cfg.name
        )));
    };
    let peers: Vec<&String> = cfg
        .initial_cluster
        .iter()
        .filter(|(n, _)| n != &cfg.name)
        .map(|(_, u)| u)
        .collect();
    if peers.is_empty() {
        return Err(StartError::Config(
            "--initial-cluster-state existing needs the running members in --initial-cluster"
                .into(),
        ));
    }
    let pool = PeerPool::new(0, Arc::new(Faults::default()));
    let deadline = Instant::now() + JOIN_DISCOVERY_TIMEOUT;
    loop {
        for url in &peers {
            let node = MemberNode {
                name: String::new(),
                peer_urls: vec![(*url).clone()],
                client_urls: Vec::new(),
            };
            let res: Result<Result<MembershipReply, MembershipError>, PeerError> = pool
                .call(
                    0,
                    &node,
                    PeerMethod::Membership,
                    &MembershipRequest::View,
                    PEER_PROBE_TIMEOUT,
                )
                .await;
            let Ok(Ok(MembershipReply::View(view))) = res else {
                continue;
            };
            return adopt_identity(cfg, own_url, &view);
        }
        if Instant::now() > deadline {
            return Err(StartError::Config(format!(
                "could not get the member list from any member of --initial-cluster within {JOIN_DISCOVERY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn adopt_identity(
    cfg: &NodeConfig,
    own_url: &str,
    view: &ClusterView,
) -> Result<(NodeId, u64), StartError> {
    let Some(me) = view
        .members
        .iter()
        .find(|m| m.node.peer_urls.iter().any(|u| u == own_url))
    else {
        return Err(StartError::Config(format!(
            "the cluster has no member with peer URL {own_url}; add it first (`nines member add {} --peer-urls={own_url}`)",
            cfg.name
        )));
    };
    if !me.node.name.is_empty() && me.node.name != cfg.name {
        return Err(StartError::Config(format!(
            "peer URL {own_url} belongs to member {:?}, not to {:?}",
            me.node.name, cfg.name
        )));
    }
    identity::check_or_write(
        &cfg.data_dir,
        &cfg.name,
        me.id,
        view.cluster_id,
        ClusterState::Existing,
    )
    .map_err(StartError::DataDir)?;
    Ok((me.id, view.cluster_id))
}

/// Why a data dir could not be restored from a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// `--initial-cluster` does not name this member, or names one twice.
    #[error("{0}")]
    Config(String),
    /// The data dir is not empty or cannot be written.
    #[error("{0}")]
    DataDir(String),
    /// The snapshot file is damaged or not a nines snapshot.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Prepares `data_dir` for member `name` of a new cluster restored from an
/// exported snapshot (`Maintenance.Snapshot`, `etcdctl snapshot save`), as
/// `etcdctl snapshot restore` does for etcd: run it for every member with
/// the same snapshot and `initial_cluster`, then start each with
/// `--initial-cluster-state new`. Keys, revisions and leases come from the
/// snapshot; the membership is `initial_cluster`.
pub fn restore_data_dir(
    snapshot: &[u8],
    name: &str,
    initial_cluster: &[(String, String)],
    data_dir: &std::path::Path,
) -> Result<NodeId, RestoreError> {
    let mut members = BTreeMap::new();
    for (n, url) in initial_cluster {
        let node = MemberNode {
            name: n.clone(),
            peer_urls: vec![url.clone()],
            client_urls: Vec::new(),
        };
        if members.insert(crate::member_id(n, url), node).is_some() {
            return Err(RestoreError::Config(format!(
                "--initial-cluster names member {n:?} twice"
            )));
        }
    }
    let Some((_, url)) = initial_cluster.iter().find(|(n, _)| n == name) else {
        return Err(RestoreError::Config(format!(
            "--initial-cluster has no member named {name:?}"
        )));
    };
    let id = crate::member_id(name, url);
    let nonempty = std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some());
    if nonempty {
        return Err(RestoreError::DataDir(format!(
            "data dir {} is not empty; restore into a new dir",
            data_dir.display()
        )));
    }
    // Check the snapshot before anything is written.
    crate::state_machine::read_exported_snapshot(snapshot).map_err(RestoreError::Snapshot)?;
    let cluster_id = crate::cluster_id_of(&members);
    identity::check_or_write(data_dir, name, id, cluster_id, ClusterState::New)
        .map_err(RestoreError::DataDir)?;
    crate::state_machine::restore_exported_snapshot(data_dir, snapshot, members)
        .map_err(RestoreError::DataDir)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_checked_as_etcd_does() {
        let ok = |u: &str| check_urls(&[u.to_string()]).is_ok();
        assert!(ok("http://127.0.0.1:2380"));
        assert!(ok("https://node-1.example:2380"));
        assert!(ok("http://[::1]:2380"));
        assert!(!ok("127.0.0.1:2380"));
        assert!(!ok("http://127.0.0.1"));
        assert!(!ok("http://127.0.0.1:2380/path"));
        assert!(ok("http://:2380"));
        assert!(!ok("http://127.0.0.1:port"));
        assert!(!ok("ftp://127.0.0.1:2380"));
        assert!(!ok("http://127.0.0.1:99999"));
        assert!(check_urls(&[]).is_err());
    }

    #[test]
    fn learner_is_ready_at_ninety_percent_of_the_leader_log() {
        assert!(!learner_ready(None, 0));
        assert!(learner_ready(Some(0), 0));
        assert!(learner_ready(Some(90), 100));
        assert!(!learner_ready(Some(89), 100));
    }

    #[test]
    fn new_member_ids_avoid_ids_in_use() {
        let urls = vec!["http://127.0.0.1:1".to_string()];
        let a = new_member_id(7, &urls, &BTreeMap::new());
        let mut nodes = BTreeMap::new();
        nodes.insert(a, MemberNode::default());
        for _ in 0..100 {
            let b = new_member_id(7, &urls, &nodes);
            assert_ne!(b, 0);
            assert!(!nodes.contains_key(&b));
        }
    }
}
