//! Leadership transfer, etcd's `MoveLeader`, on openraft 0.9 (which has no
//! transfer of its own). The leader stops proposing and reading, waits
//! until the transferee holds its whole log, stops its heartbeats, waits
//! out the leader lease the followers honour, and asks the transferee to
//! campaign. The transferee then wins before any other follower's election
//! timer fires (that timer is the lease plus the election timeout). Whatever
//! happens, the leader's heartbeats and proposals resume at the end.

use std::time::{Duration, Instant};

use tokio::time::sleep;

use crate::membership::{MembershipReply, MembershipRequest};
use crate::network::PeerMethod;
use crate::node::{Core, MetricsWait, RaftNode};
use crate::types::NodeId;

/// Why a leadership transfer did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader moves leadership.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// The transferee is not a voting member.
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// The transferee did not catch up or win in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    Timeout,
    /// The member is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// Clears the pause and turns heartbeats back on, however the transfer ends.
struct Resume<'a>(&'a Core);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.paused.send_replace(false);
    }
}

impl RaftNode {
    /// Makes `target` the leader. Called on the leader; returns once
    /// `target` leads, or with the reason it does not.
    pub async fn transfer_leadership(&self, target: NodeId) -> Result<(), TransferError> {
        let core = &self.core;
        let _one = core.transfer.lock().await;
        let (term, node) = {
            let m = core.raft.metrics().borrow().clone();
            if m.current_leader != Some(core.id) {
                return Err(TransferError::NotLeader);
            }
            if target == core.id {
                return Ok(());
            }
            let membership = m.membership_config.membership();
            if !membership.voter_ids().any(|v| v == target) {
                return Err(TransferError::BadTransferee);
            }
            let node = membership
                .get_node(&target)
                .cloned()
                .ok_or(TransferError::BadTransferee)?;
            (m.current_term, node)
        };
        let deadline = Instant::now() + core.request_timeout;
        core.paused.send_replace(true);
        let _resume = Resume(core);

        wait_caught_up(core, target, term, deadline).await?;

        core.raft.runtime_config().heartbeat(false);
        // Followers refuse votes for the lease after the last append they
        // saw; one heartbeat interval covers an append still on the wire.
        let lease = Duration::from_millis(core.timing.election_max_ms + core.timing.heartbeat_ms);
        sleep(lease).await;

        let remaining = deadline.saturating_duration_since(Instant::now());
        let res: Result<Result<MembershipReply, crate::MembershipError>, _> = core
            .peers
            .call(
                target,
                &node,
                PeerMethod::Membership,
                &MembershipRequest::Campaign { term },
                remaining,
            )
            .await;
        if !matches!(res, Ok(Ok(MembershipReply::Campaign))) {
            return Err(TransferError::Timeout);
        }
        core.wait_metrics(deadline, |m| {
            (m.current_leader == Some(target)).then_some(())
        })
        .await
        .map_err(TransferError::from)
    }
}

impl From<MetricsWait> for TransferError {
    fn from(e: MetricsWait) -> Self {
        match e {
            MetricsWait::Timeout => TransferError::Timeout,
            MetricsWait::Stopped => TransferError::Stopped,
        }
    }
}

/// Waits until `target` has replicated everything in the leader's log.
async fn wait_caught_up(
    core: &Core,
    target: NodeId,
    term: u64,
    deadline: Instant,
) -> Result<(), TransferError> {
    core.wait_metrics(deadline, |m| {
        if m.current_term != term || m.current_leader != Some(core.id) {
            return Some(Err(TransferError::NotLeader));
        }
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).cloned().flatten())
            .map(|l| l.index);
        (matched.is_some() && matched >= m.last_log_index).then_some(Ok(()))
    })
    .await?
}

/// On the transferee: campaigns now, if the transfer's term is still current.
pub(crate) async fn campaign(core: &Core, term: u64) -> bool {
    if core.raft.metrics().borrow().current_term != term {
        return false;
    }
    core.raft.trigger().elect().await.is_ok()
}
