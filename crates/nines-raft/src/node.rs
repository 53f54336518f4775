//! One cluster member's Raft side: starts openraft over the log and state
//! machine, serves the peer transport, and gives the server layer the three
//! things it needs: `write` (batched proposals, forwarded to the leader from a
//! follower), `read_barrier` (ReadIndex, coalesced) and `status`. It never
//! speaks the client protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nines_store::{Command, Store};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};

use crate::log_store::{LogOpenError, LogStore};
use crate::network::{Faults, NetworkFactory, PeerError, PeerMethod, PeerPool};
use crate::peer_service;
use crate::state_machine::{AppliedEvents, SmOpenError, SmShared, StateMachine};
use crate::stats::RaftStats;
use crate::types::{Batch, MemberNode, NodeId, Outcome, Raft};
use crate::{cluster_id_of, identity, member_id};

/// Commands taken into one log entry at most.
const BATCH_COMMANDS_MAX: usize = 1024;
/// Log entries proposed and not yet applied, at most, per member. Few and
/// large beats many and small: openraft pays per entry (an append, a flush
/// notification, a commit), so while one entry is in flight the next one
/// gathers every proposal that arrives meanwhile. Measured with 64 clients:
/// 32 in flight gave about a fifth of the throughput of 1 or 2.
const BATCHES_IN_FLIGHT_MAX: usize = 2;
/// Queue of proposals waiting for a batch.
const PROPOSALS_QUEUE_MAX: usize = 16 * 1024;

/// Whether the member founds a new cluster or joins a running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// Every member of `initial_cluster` starts together.
    New,
    /// The member was added to a running cluster and joins it.
    Existing,
}

/// Raft timing, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_max_ms: u64,
}

impl Default for Timing {
    /// 100 ms heartbeats (as etcd) and a 200-400 ms election timeout.
    /// openraft adds the leader lease (the maximum, 400 ms) before a follower
    /// campaigns, so a follower waits 600-800 ms without heartbeats: six or
    /// more missed heartbeats, and a failover well under a second.
    /// Heartbeats never wait for fsync, so slow disks do not trip elections.
    fn default() -> Self {
        Timing {
            heartbeat_ms: 100,
            election_min_ms: 200,
            election_max_ms: 400,
        }
    }
}

/// Everything a member needs to start its Raft side.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The member's name.
    pub name: String,
    /// The data directory (`raft/` and `snap/` live under it).
    pub data_dir: PathBuf,
    /// Address the peer transport listens on.
    pub listen_peer: SocketAddr,
    /// Peer URLs other members use to reach this one.
    pub advertise_peer_urls: Vec<String>,
    /// Client URLs this member serves (published into the membership).
    pub client_urls: Vec<String>,
    /// `name -> peer URL` of the founding members.
    pub initial_cluster: Vec<(String, String)>,
    /// New cluster or join.
    pub cluster_state: ClusterState,
    /// Raft timing.
    pub timing: Timing,
    /// A snapshot is taken after this many log entries.
    pub snapshot_entries: u64,
    /// Longest time a client request waits before "request timed out".
    pub request_timeout: Duration,
    /// Planted bug for chaos runs: serve linearizable reads without ReadIndex.
    pub unsafe_stale_reads: bool,
    /// Planted bug for chaos runs: acknowledge log appends before fsync.
    pub unsafe_lazy_fsync: bool,
    /// Space quota of the store in bytes (etcd's `--quota-backend-bytes`).
    pub quota_bytes: u64,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad flags.
    #[error("{0}")]
    Config(String),
    /// The log could not be opened.
    #[error(transparent)]
    Log(#[from] LogOpenError),
    /// The snapshot could not be loaded.
    #[error(transparent)]
    StateMachine(#[from] SmOpenError),
    /// The data dir belongs to someone else or cannot be used.
    #[error("{0}")]
    DataDir(String),
    /// The peer address could not be bound.
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// openraft refused to start.
    #[error("raft failed to start: {0}")]
    Raft(String),
}

/// Why a write was not acknowledged. Every variant is retryable by the
/// client; `LeaderChanged` and `Timeout` mean the outcome is unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    /// No leader could be found in time.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Leadership moved while the request was in flight.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request did not complete in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down or has failed.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// Why [`Core::wait_metrics`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricsWait {
    /// The deadline passed.
    Timeout,
    /// openraft stopped.
    Stopped,
}

impl MetricsWait {
    /// `Stopped` as [`WriteError::Stopped`], a timeout as `timeout`.
    fn or(self, timeout: WriteError) -> WriteError {
        match self {
            MetricsWait::Timeout => timeout,
            MetricsWait::Stopped => WriteError::Stopped,
        }
    }
}

/// What waits in the proposal queue: one client command, or a follower's
/// forwarded commands, which the leader proposes together and answers with
/// one message (not one channel, timer and wake-up per command).
enum Proposal {
    /// One command and where its outcome goes.
    One {
        cmd: Command,
        tx: oneshot::Sender<Result<Outcome, WriteError>>,
    },
    /// Several commands; their outcomes go back in order.
    Group {
        cmds: Vec<Command>,
        tx: oneshot::Sender<Vec<Result<Outcome, WriteError>>>,
    },
}

impl Proposal {
    fn len(&self) -> usize {
        match self {
            Proposal::One { .. } => 1,
            Proposal::Group { cmds, .. } => cmds.len(),
        }
    }
}

/// A member's status, for `Maintenance.Status` and the dashboard.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// This member's id.
    pub id: NodeId,
    /// The leader's id, if one is known.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Raft role.
    pub state: ServerState,
    /// Voters and learners with what is known of them.
    pub members: Vec<(NodeId, MemberNode, bool)>,
}

pub(crate) struct Core {
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) cluster_id: u64,
    pub(crate) raft: Raft,
    pub(crate) sm: Arc<SmShared>,
    pub(crate) peers: PeerPool,
    pub(crate) faults: Arc<Faults>,
    proposals: mpsc::Sender<Proposal>,
    reads: Mutex<ReadRound>,
    /// A member that was leader before a crash comes back as leader of the
    /// same term (term, last log index on disk at start). The commit index
    /// it knows then may lag (it is only a hint on disk), but everything it
    /// had committed lies within its log: while it leads that term, a read
    /// index never goes below that last index.
    restored_leadership: Option<(u64, u64)>,
    /// Raft timing, for the leadership transfer's waits.
    pub(crate) timing: Timing,
    /// While true (a leadership transfer runs), no batch is proposed and no
    /// read round starts here: either would refresh the followers' leader
    /// lease and make them refuse the transferee's vote.
    pub(crate) paused: watch::Sender<bool>,
    /// One leadership transfer at a time.
    pub(crate) transfer: tokio::sync::Mutex<()>,
    stats: Arc<RaftStats>,
    quota_bytes: u64,
    pub(crate) request_timeout: Duration,
    stale_reads: bool,
    client_urls: Vec<String>,
    shutdown: watch::Sender<bool>,
    pub(crate) membership: crate::membership::MembershipState,
}

#[derive(Default)]
struct ReadRound {
    waiting: Vec<oneshot::Sender<Result<u64, WriteError>>>,
    running: bool,
}

/// A running member's Raft side. Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    pub(crate) core: Arc<Core>,
}

impl RaftNode {
    /// Starts the member: opens its data dir, starts openraft and the peer
    /// transport, and founds the cluster when it is new.
    pub async fn start(cfg: NodeConfig) -> Result<RaftNode, StartError> {
        let (id, cluster_id, members) = match cfg.cluster_state {
            ClusterState::New => {
                let (id, members) = initial_members(&cfg)?;
                let cluster_id = cluster_id_of(&members);
                identity::check_or_write(
                    &cfg.data_dir,
                    &cfg.name,
                    id,
                    cluster_id,
                    cfg.cluster_state,
                )
                .map_err(StartError::DataDir)?;
                (id, cluster_id, members)
            }
            // A joining member learns its id (assigned at member add) from
            // the running cluster, or from its data dir once it has joined.
            ClusterState::Existing => {
                let (id, cluster_id) = crate::membership::joining_identity(&cfg).await?;
                (id, cluster_id, BTreeMap::new())
            }
        };
        let raft_dir = cfg.data_dir.join("raft");
        let faults = Arc::new(Faults::default());
        faults
            .log
            .lazy_fsync
            .store(cfg.unsafe_lazy_fsync, Ordering::Relaxed);
        let stats = Arc::new(RaftStats::default());
        let log = LogStore::open(&raft_dir, faults.log.clone(), stats.clone())?;
        let restored_leadership = log
            .saved_vote()
            .filter(|v| v.is_committed() && v.leader_id().voted_for() == Some(id))
            .map(|v| (v.leader_id().get_term(), log.last_index()));
        let sm = StateMachine::open(&cfg.data_dir)?;
        let sm_shared = sm.shared.clone();
        let config = Config {
            cluster_name: format!("nines-{cluster_id:016x}"),
            heartbeat_interval: cfg.timing.heartbeat_ms,
            election_timeout_min: cfg.timing.election_min_ms,
            election_timeout_max: cfg.timing.election_max_ms,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_entries),
            max_in_snapshot_log_to_keep: cfg.snapshot_entries.min(1000),
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(format!("raft timing: {e}")))?;
        let pool = PeerPool::new(id, faults.clone());
        let factory = NetworkFactory { pool: pool.clone() };
        let raft = Raft::new(id, Arc::new(config), factory, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let listener = tokio::net::TcpListener::bind(cfg.listen_peer)
            .await
            .map_err(|source| StartError::Listen {
                addr: cfg.listen_peer,
                source,
            })?;
        let (proposals_tx, proposals_rx) = mpsc::channel(PROPOSALS_QUEUE_MAX);
        let (shutdown, _) = watch::channel(false);
        let core = Arc::new(Core {
            id,
            name: cfg.name.clone(),
            cluster_id,
            raft: raft.clone(),
            sm: sm_shared,
            peers: pool,
            faults,
            proposals: proposals_tx,
            reads: Mutex::new(ReadRound::default()),
            restored_leadership,
            timing: cfg.timing,
            paused: watch::Sender::new(false),
            transfer: tokio::sync::Mutex::new(()),
            stats,
            quota_bytes: cfg.quota_bytes,
            request_timeout: cfg.request_timeout,
            stale_reads: cfg.unsafe_stale_reads,
            client_urls: cfg.client_urls.clone(),
            shutdown,
            membership: Default::default(),
        });
        peer_service::spawn(core.clone(), listener);
        tokio::spawn(run_proposer(core.clone(), proposals_rx));

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && cfg.cluster_state == ClusterState::New {
            // Every founding member initializes with the same membership, so
            // the first log entry is identical everywhere.
            match raft.initialize(members).await {
                Ok(()) => {}
                Err(RaftError::APIError(e)) => {
                    tracing::info!(error = %e, "cluster already initialized");
                }
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        }
        tokio::spawn(publish_client_urls(core.clone()));
        tokio::spawn(crate::membership::watch_removal(core.clone()));
        Ok(RaftNode { core })
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.core.id
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.core.cluster_id
    }

    /// Counters and log latencies, for metrics.
    pub fn stats(&self) -> &RaftStats {
        &self.core.stats
    }

    /// The store's space quota in bytes.
    pub fn quota_bytes(&self) -> u64 {
        self.core.quota_bytes
    }

    /// The store, for reads. Hold the guard briefly and never across `.await`.
    pub fn store(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.core.sm.store.read().expect("store lock poisoned")
    }

    /// Events as they are applied, for watches.
    pub fn subscribe_events(&self) -> broadcast::Receiver<AppliedEvents> {
        self.core.sm.events.subscribe()
    }

    /// Proposes one command and waits until it is committed on a quorum and
    /// applied here or on the leader.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, WriteError> {
        let res = self.write_inner(cmd).await;
        let stats = &self.core.stats;
        stats.proposals.fetch_add(1, Ordering::Relaxed);
        if res.is_err() {
            stats.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    async fn write_inner(&self, cmd: Command) -> Result<Outcome, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.core
            .proposals
            .send(Proposal::One { cmd, tx })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match tokio::time::timeout(self.core.request_timeout, rx).await {
            Err(_) => Err(WriteError::Timeout),
            Ok(Err(_)) => Err(WriteError::Stopped),
            Ok(Ok(r)) => r,
        }
    }

    /// Waits until a read of the local store is linearizable: the leader
    /// confirmed its leadership with a quorum after this call began, and this
    /// member applied everything the leader had committed then.
    pub async fn read_barrier(&self) -> Result<(), WriteError> {
        if self.core.stale_reads {
            return Ok(());
        }
        let deadline = Instant::now() + self.core.request_timeout;
        let index = loop {
            let (leader, node) = self.core.wait_leader(deadline).await?;
            if leader == self.core.id {
                break self.core.read_index().await?;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res: Result<Result<u64, WriteError>, PeerError> = self
                .core
                .peers
                .call(leader, &node, PeerMethod::ReadIndex, &(), remaining)
                .await;
            match res {
                Ok(r) => break r?,
                Err(PeerError::Unreachable { .. }) => {
                    self.core.wait_leader_change(leader, deadline).await?
                }
                Err(_) => return Err(WriteError::LeaderChanged),
            }
        };
        self.core.wait_applied(index, deadline).await
    }

    /// The current Raft term, cheaply (for response headers).
    pub fn term(&self) -> u64 {
        self.core.raft.metrics().borrow().current_term
    }

    /// The member's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.core.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| (*id, node.clone(), !voters.contains(id)))
            .collect();
        NodeStatus {
            id: self.core.id,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: self.core.sm.applied_index.load(Ordering::Acquire),
            state: m.state,
            members,
        }
    }

    /// Whether the membership carries this member's client URLs (it then
    /// appears as started in member lists).
    pub fn is_published(&self) -> bool {
        let m = self.core.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .get_node(&self.core.id)
            .is_some_and(|n| n.client_urls == self.core.client_urls)
    }

    /// Replaces the set of peers whose traffic this member drops (fault injection).
    pub fn set_blocked_peers(&self, names: &[String]) -> Result<(), String> {
        let status = self.status();
        let mut ids = std::collections::HashSet::new();
        for name in names {
            let id = status
                .members
                .iter()
                .find(|(_, n, _)| &n.name == name)
                .map(|(id, _, _)| *id)
                .ok_or_else(|| format!("unknown member name {name:?}"))?;
            ids.insert(id);
        }
        *self.core.faults.blocked.write().expect("faults lock") = ids;
        Ok(())
    }

    /// Makes the next log fsync fail (fault injection); the member then stops.
    pub fn fail_next_fsync(&self) {
        self.core
            .faults
            .log
            .fail_next_fsync
            .store(true, Ordering::SeqCst);
    }

    /// Resolves with the reason when Raft stops on a fatal error (a failed
    /// fsync, say) or because this member was removed from the cluster. The
    /// member must then exit rather than serve.
    pub async fn fatal(&self) -> String {
        const REMOVED: &str = "the member has been permanently removed from the cluster";
        // A removed member stops Raft itself (after a grace); say why.
        let removed = || self.core.membership.is_removed();
        let stopped = |fallback: &str| -> Option<String> {
            let m = self.core.raft.metrics();
            let m = m.borrow();
            match &m.running_state {
                Err(_) if removed() => Some(REMOVED.into()),
                Err(e) => Some(e.to_string()),
                Ok(()) if fallback.is_empty() => None,
                Ok(()) if removed() => Some(REMOVED.into()),
                Ok(()) => Some(fallback.into()),
            }
        };
        // Raft's server metrics change with the vote, role, leader and
        // membership only, the full metrics with every append, flush and
        // apply. This future often runs outside the runtime's workers (in
        // `block_on` on the main thread), where every change it wakes for
        // costs a thread wake-up, so it waits on the former. The core marks
        // its full metrics with the error before it exits, and its exit
        // closes both channels.
        let mut server = self.core.raft.server_metrics();
        loop {
            if let Some(reason) = stopped("") {
                return reason;
            }
            if server.changed().await.is_err() {
                return stopped("raft stopped").expect("a fallback is given");
            }
        }
    }

    /// Stops Raft and the peer transport.
    pub async fn shutdown(&self) {
        let _ = self.core.shutdown.send(true);
        let _ = self.core.raft.shutdown().await;
    }
}

impl Core {
    /// The current leader and its node, waiting for one until `deadline`.
    pub(crate) async fn wait_leader(
        &self,
        deadline: Instant,
    ) -> Result<(NodeId, MemberNode), WriteError> {
        self.wait_metrics(deadline, |m| {
            if m.running_state.is_err() {
                return Some(Err(WriteError::Stopped));
            }
            let l = m.current_leader?;
            let node = m.membership_config.membership().get_node(&l)?;
            Some(Ok((l, node.clone())))
        })
        .await
        .map_err(|e| e.or(WriteError::NoLeader))?
    }

    /// Waits until the known leader is no longer `old`.
    pub(crate) async fn wait_leader_change(
        &self,
        old: NodeId,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        self.wait_metrics(deadline, |m| (m.current_leader != Some(old)).then_some(()))
            .await
            .map_err(|e| e.or(WriteError::NoLeader))
    }

    /// Waits until `f` finds what it looks for in openraft's metrics (at
    /// once if it already holds), or until `deadline`.
    pub(crate) async fn wait_metrics<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&openraft::RaftMetrics<NodeId, MemberNode>) -> Option<T>,
    ) -> Result<T, MetricsWait> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(found) = f(&rx.borrow_and_update()) {
                return Ok(found);
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(wait, rx.changed()).await {
                Err(_) => return Err(MetricsWait::Timeout),
                Ok(Err(_)) => return Err(MetricsWait::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    pub(crate) async fn wait_applied(
        &self,
        index: u64,
        deadline: Instant,
    ) -> Result<(), WriteError> {
        if self.sm.applied_index.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => WriteError::Timeout,
                openraft::metrics::WaitError::ShuttingDown => WriteError::Stopped,
            })
    }

    /// The leader's read index, confirmed with a quorum. Concurrent callers
    /// share rounds: a caller joins the next round to start, never one
    /// already under way (that one may predate the caller's read).
    pub(crate) async fn read_index(self: &Arc<Self>) -> Result<u64, WriteError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut r = self.reads.lock().expect("reads lock");
            r.waiting.push(tx);
            !std::mem::replace(&mut r.running, true)
        };
        if start {
            let core = self.clone();
            tokio::spawn(async move { core.run_read_rounds().await });
        }
        rx.await.unwrap_or(Err(WriteError::Stopped))
    }

    async fn run_read_rounds(self: Arc<Self>) {
        loop {
            let batch = {
                let mut r = self.reads.lock().expect("reads lock");
                if r.waiting.is_empty() {
                    r.running = false;
                    return;
                }
                std::mem::take(&mut r.waiting)
            };
            self.wait_unpaused().await;
            let res = match tokio::time::timeout(self.request_timeout, self.raft.get_read_log_id())
                .await
            {
                Err(_) => Err(WriteError::Timeout),
                Ok(Ok((read, _applied))) => {
                    let mut index = read.map(|l| l.index).unwrap_or(0);
                    if let Some((term, last)) = self.restored_leadership {
                        if self.raft.metrics().borrow().current_term == term {
                            index = index.max(last);
                        }
                    }
                    Ok(index)
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                    Err(WriteError::LeaderChanged)
                }
                Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    Err(WriteError::Timeout)
                }
                Ok(Err(RaftError::Fatal(_))) => Err(WriteError::Stopped),
            };
            for tx in batch {
                let _ = tx.send(res.clone());
            }
        }
    }

    /// Proposes commands from a follower (through `Forward`) as if local;
    /// the outcomes come back in the order of `cmds`.
    pub(crate) async fn propose_all(&self, cmds: Vec<Command>) -> Vec<Result<Outcome, WriteError>> {
        let n = cmds.len();
        if n == 0 {
            return Vec::new();
        }
        let (tx, rx) = oneshot::channel();
        if self
            .proposals
            .send(Proposal::Group { cmds, tx })
            .await
            .is_err()
        {
            return vec![Err(WriteError::Stopped); n];
        }
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => vec![Err(WriteError::Timeout); n],
            Ok(Err(_)) => vec![Err(WriteError::Stopped); n],
            Ok(Ok(r)) => r,
        }
    }

    /// Sets a member's node information (its client URLs) through Raft.
    pub(crate) async fn set_node(&self, id: NodeId, node: MemberNode) -> Result<(), String> {
        let mut nodes = BTreeMap::new();
        nodes.insert(id, node);
        self.raft
            .change_membership(ChangeMembers::SetNodes(nodes), false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Resolves when leadership of `term` is lost by this member. It waits
    /// on the server metrics (vote, role, leader), which change far less
    /// often than the full metrics (every append, acknowledgement and apply),
    /// since one of these waits runs beside every batch in flight.
    async fn leadership_lost(&self, term: u64) {
        let mut rx = self.raft.server_metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if m.vote.leader_id().get_term() != term || m.state != ServerState::Leader {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Resolves when this member no longer knows `leader` as the leader (an
    /// election started or another leader won), or Raft stopped. Watches
    /// the server metrics, which change far less often than the full ones.
    async fn leader_moved_from(&self, leader: NodeId) {
        let mut rx = self.raft.server_metrics();
        loop {
            if rx.borrow_and_update().current_leader != Some(leader) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Returns at once unless a leadership transfer runs; then when it ends.
    async fn wait_unpaused(&self) {
        if !*self.paused.borrow() {
            return;
        }
        let mut rx = self.paused.subscribe();
        // The transfer always clears the flag (a guard does), and it is
        // bounded by the request timeout.
        let _ = rx.wait_for(|paused| !*paused).await;
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Takes proposals off the queue, groups what is waiting into one log entry,
/// and submits it; up to [`BATCHES_IN_FLIGHT_MAX`] entries are in flight.
async fn run_proposer(core: Arc<Core>, mut rx: mpsc::Receiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    while let Some(first) = rx.recv().await {
        core.wait_unpaused().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        // A forwarded group may take a batch past the bound, by less than
        // one follower's batch: groups are never split.
        let mut commands = first.len();
        let mut batch = vec![first];
        while commands < BATCH_COMMANDS_MAX {
            match rx.try_recv() {
                Ok(p) => {
                    commands += p.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            let mut cmds = Vec::with_capacity(commands);
            let mut waiting = Vec::with_capacity(batch.len());
            for p in batch {
                match p {
                    Proposal::One { cmd, tx } => {
                        cmds.push(cmd);
                        waiting.push(Answer::One(tx));
                    }
                    Proposal::Group { cmds: group, tx } => {
                        waiting.push(Answer::Group(group.len(), tx));
                        cmds.extend(group);
                    }
                }
            }
            let mut results = submit(&core, cmds).await.into_iter();
            for answer in waiting {
                match answer {
                    Answer::One(tx) => {
                        let r = results.next().unwrap_or(Err(WriteError::LeaderChanged));
                        let _ = tx.send(r);
                    }
                    Answer::Group(n, tx) => {
                        let mut rs: Vec<_> = results.by_ref().take(n).collect();
                        rs.resize(n, Err(WriteError::LeaderChanged));
                        let _ = tx.send(rs);
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Where the outcomes of a batch go, in the batch's order.
enum Answer {
    One(oneshot::Sender<Result<Outcome, WriteError>>),
    Group(usize, oneshot::Sender<Vec<Result<Outcome, WriteError>>>),
}

/// Commits a batch: on the leader through openraft, elsewhere by forwarding
/// to the leader. Waits for a leader when there is none, and retries a
/// forward that provably never left; anything else in doubt is reported as
/// `LeaderChanged` so the client knows the outcome is unknown.
async fn submit(core: &Arc<Core>, cmds: Vec<Command>) -> Vec<Result<Outcome, WriteError>> {
    let n = cmds.len();
    let fail = |e: WriteError| vec![Err(e); n];
    let deadline = Instant::now() + core.request_timeout;
    loop {
        let (leader, node) = match core.wait_leader(deadline).await {
            Ok(l) => l,
            Err(e) => return fail(e),
        };
        if leader == core.id {
            let term = core.raft.metrics().borrow().current_term;
            core.stats.entries_proposed.fetch_add(1, Ordering::Relaxed);
            let write = core.raft.client_write(Batch { commands: cmds });
            let lost = async {
                core.leadership_lost(term).await;
                // The entry may still commit under the new leader, which
                // answers through the apply; give it a moment, then fail fast.
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            tokio::select! {
                res = write => {
                    return match res {
                        Ok(resp) => resp.data.outcomes.into_iter().map(Ok).collect(),
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                            fail(WriteError::LeaderChanged)
                        }
                        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(_))) => {
                            fail(WriteError::LeaderChanged)
                        }
                        Err(RaftError::Fatal(_)) => fail(WriteError::Stopped),
                    };
                }
                () = lost => return fail(WriteError::LeaderChanged),
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let forward = core
            .peers
            .call(leader, &node, PeerMethod::Forward, &cmds, remaining);
        // A leader that stops answering (paused, cut off) would hold this
        // batch, and the batches behind it, until the deadline; once this
        // member sees the leadership move, the outcome is unknown, and the
        // client hears so at once instead of after the request timeout.
        let res: Result<Vec<Result<Outcome, WriteError>>, PeerError> = tokio::select! {
            res = forward => res,
            () = core.leader_moved_from(leader) => return fail(WriteError::LeaderChanged),
        };
        match res {
            Ok(r) if r.len() == n => return r,
            Ok(_) => return fail(WriteError::LeaderChanged),
            Err(PeerError::Unreachable { .. }) => {
                if let Err(e) = core.wait_leader_change(leader, deadline).await {
                    return fail(e);
                }
            }
            Err(PeerError::Failed { .. }) | Err(PeerError::Codec(_)) => {
                return fail(WriteError::LeaderChanged)
            }
        }
    }
}

/// Makes sure the membership carries this member's client URLs, so that
/// member lists name them; retried until it holds or the member stops.
async fn publish_client_urls(core: Arc<Core>) {
    let mut stop = core.shutdown_signal();
    for attempt in 0u32..10_000 {
        if *stop.borrow() {
            return;
        }
        let current = {
            let m = core.raft.metrics().borrow().clone();
            m.membership_config.membership().get_node(&core.id).cloned()
        };
        let Some(mut node) = current else {
            // Not (yet) a member: a joining member learns its entry later.
            wait_or_stop(&mut stop, Duration::from_millis(500)).await;
            continue;
        };
        // A member added with `member add` has no name until it starts.
        if node.client_urls == core.client_urls && node.name == core.name {
            return;
        }
        node.client_urls = core.client_urls.clone();
        node.name = core.name.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        let res = match core.wait_leader(deadline).await {
            Err(e) => Err(e.to_string()),
            Ok((leader, _)) if leader == core.id => core.set_node(core.id, node).await,
            Ok((leader, leader_node)) => core
                .peers
                .call::<_, Result<(), String>>(
                    leader,
                    &leader_node,
                    PeerMethod::Publish,
                    &(core.id, node),
                    Duration::from_secs(5),
                )
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r),
        };
        match res {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, attempt, "publishing client URLs failed; retrying");
                wait_or_stop(&mut stop, Duration::from_millis(300)).await;
            }
        }
    }
}

async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) {
    let _ = tokio::time::timeout(d, stop.changed()).await;
}

/// This member's id and the founding membership, from `--initial-cluster`.
fn initial_members(cfg: &NodeConfig) -> Result<(NodeId, BTreeMap<NodeId, MemberNode>), StartError> {
    if cfg.initial_cluster.is_empty() {
        return Err(StartError::Config("--initial-cluster is empty".into()));
    }
    let mut members = BTreeMap::new();
    let mut names = BTreeSet::new();
    for (name, url) in &cfg.initial_cluster {
        if !names.insert(name.clone()) {
            return Err(StartError::Config(format!(
                "--initial-cluster names member {name:?} twice"
            )));
        }
        members.insert(
            member_id(name, url),
            MemberNode {
                name: name.clone(),
                peer_urls: vec![url.clone()],
                client_urls: Vec::new(),
            },
        );
    }
    let Some((name, url)) = cfg.initial_cluster.iter().find(|(n, _)| n == &cfg.name) else {
        return Err(StartError::Config(format!(
            "--initial-cluster has no member named {:?} (this member's --name); it lists: {}",
            cfg.name,
            names.into_iter().collect::<Vec<_>>().join(", ")
        )));
    };
    if !cfg.advertise_peer_urls.is_empty() && !cfg.advertise_peer_urls.contains(url) {
        return Err(StartError::Config(format!(
            "--initial-cluster gives {name} the peer URL {url}, but --initial-advertise-peer-urls is {}",
            cfg.advertise_peer_urls.join(",")
        )));
    }
    Ok((member_id(name, url), members))
}
