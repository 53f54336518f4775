//! `etcdserverpb.Lease` and the leader's lease clock. Leases are stored in
//! the replicated store (grant and revoke go through Raft); how much time a
//! lease has left is known only to the current leader, which revokes (through
//! Raft) what expires. A new leader gives every lease its full TTL again, as
//! etcd does, so a failover never expires a lease that was kept alive.
//! Keep-alives and time-to-live queries that reach a follower are forwarded
//! to the leader's client API.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use nines_raft::{RaftNode, ServerState};
use nines_store::{Command, CommandResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::errors;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::lease_server::Lease;

/// The shortest TTL granted; shorter requests get this (as etcd raises
/// TTLs below its minimum): long enough to survive a failover.
pub const LEASE_TTL_SECS_MIN: i64 = 2;
/// How often the leader looks for expired leases.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// The leader's view of lease deadlines.
#[derive(Default)]
struct Clock {
    /// The leader term this clock belongs to (0: not leader).
    term: u64,
    deadlines: HashMap<i64, Instant>,
    /// Leases whose revoke has been proposed, to avoid proposing twice.
    revoking: HashMap<i64, Instant>,
}

/// The Lease service and the leader's lease clock.
#[derive(Clone)]
pub struct LeaseService {
    node: RaftNode,
    clock: Arc<Mutex<Clock>>,
    leader_clients: Arc<Mutex<HashMap<String, LeaseClient<Channel>>>>,
}

impl LeaseService {
    /// The service over `node`; starts the expiry task.
    pub fn new(node: RaftNode) -> LeaseService {
        let s = LeaseService {
            node,
            clock: Arc::new(Mutex::new(Clock::default())),
            leader_clients: Arc::new(Mutex::new(HashMap::new())),
        };
        let runner = s.clone();
        tokio::spawn(async move { runner.run_expiry().await });
        s
    }

    fn header(&self) -> pb::ResponseHeader {
        let rev = self.node.store().revision();
        crate::header(&self.node, rev)
    }

    /// Brings the clock in line with the store and the leadership: a new
    /// term restarts every lease at its full TTL; new leases get theirs.
    /// Returns false when this member is not the leader.
    fn sync_clock(&self) -> bool {
        let st = self.node.status();
        let leader_term = (st.state == ServerState::Leader).then_some(st.term);
        let Some(term) = leader_term else {
            let mut clock = self.clock.lock().expect("lease clock");
            clock.term = 0;
            clock.deadlines.clear();
            clock.revoking.clear();
            return false;
        };
        // Followers skip this: only the leader keeps time.
        let leases = self.node.store().leases();
        let mut clock = self.clock.lock().expect("lease clock");
        let now = Instant::now();
        if clock.term != term {
            clock.term = term;
            clock.deadlines.clear();
            clock.revoking.clear();
        }
        let mut live = HashMap::with_capacity(leases.len());
        for l in leases {
            let d = clock
                .deadlines
                .get(&l.id)
                .copied()
                .unwrap_or_else(|| now + Duration::from_secs(l.ttl_secs.max(0) as u64));
            live.insert(l.id, d);
        }
        clock.revoking.retain(|id, _| live.contains_key(id));
        clock.deadlines = live;
        true
    }

    async fn run_expiry(self) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if !self.sync_clock() {
                continue;
            }
            let now = Instant::now();
            let expired: Vec<i64> = {
                let mut clock = self.clock.lock().expect("lease clock");
                let ids: Vec<i64> = clock
                    .deadlines
                    .iter()
                    .filter(|(id, d)| {
                        **d <= now
                            && clock
                                .revoking
                                .get(id)
                                .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(3))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    clock.revoking.insert(*id, now);
                }
                ids
            };
            for id in expired {
                let node = self.node.clone();
                tokio::spawn(async move {
                    // A refusal (already revoked) or a lost leadership is
                    // fine: the next leader's clock takes over.
                    let _ = node.write(Command::LeaseRevoke { id }).await;
                });
            }
        }
    }

    /// Renews a lease on the leader: its full TTL again. None when unknown.
    fn renew_local(&self, id: i64) -> Option<i64> {
        let ttl = self.node.store().lease_ttl(id)?;
        let mut clock = self.clock.lock().expect("lease clock");
        clock
            .deadlines
            .insert(id, Instant::now() + Duration::from_secs(ttl.max(0) as u64));
        Some(ttl)
    }

    /// Seconds left of a lease on the leader.
    fn remaining_local(&self, id: i64) -> Option<i64> {
        let ttl = self.node.store().lease_ttl(id)?;
        let clock = self.clock.lock().expect("lease clock");
        let left = clock
            .deadlines
            .get(&id)
            .map(|d| {
                d.saturating_duration_since(Instant::now())
                    .as_secs_f64()
                    .ceil() as i64
            })
            .unwrap_or(ttl);
        Some(left)
    }

    /// A client of the leader's Lease service, when this member is not it.
    async fn leader_client(&self) -> Result<Option<LeaseClient<Channel>>, Status> {
        let st = self.node.status();
        if st.state == ServerState::Leader {
            return Ok(None);
        }
        let leader = st
            .leader
            .ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
        let url = st
            .members
            .iter()
            .find(|(id, _, _)| *id == leader)
            .and_then(|(_, n, _)| n.client_urls.first().cloned())
            .ok_or_else(|| Status::unavailable("etcdserver: leader changed"))?;
        let mut clients = self.leader_clients.lock().expect("lease clients");
        if let Some(c) = clients.get(&url) {
            return Ok(Some(c.clone()));
        }
        let ch = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|_| Status::unavailable("etcdserver: leader changed"))?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        let c = LeaseClient::new(ch);
        clients.insert(url, c.clone());
        Ok(Some(c))
    }

    async fn keep_alive_one(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
            drop(tx);
            let mut stream = leader
                .lease_keep_alive(ReceiverStream::new(rx))
                .await?
                .into_inner();
            return stream
                .next()
                .await
                .unwrap_or_else(|| Err(Status::unavailable("etcdserver: leader changed")));
        }
        let ttl = self.renew_local(id).unwrap_or(0);
        Ok(pb::LeaseKeepAliveResponse {
            header: Some(self.header()),
            id,
            ttl,
        })
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        if req.ttl > nines_store::LEASE_TTL_SECS_MAX {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        let ttl = req.ttl.max(LEASE_TTL_SECS_MIN);
        let id = if req.id != 0 {
            req.id
        } else {
            // Positive, non-zero, and unlikely to collide: member id bits and a random part.
            let r: u64 = rand::random();
            (((self.node.id() & 0xffff) << 47) | (r >> 17)) as i64 & i64::MAX
        }
        .max(1);
        let cmd = Command::LeaseGrant { id, ttl_secs: ttl };
        crate::quota::check(&self.node, &cmd).await?;
        let outcome = self.node.write(cmd).await.map_err(|e| errors::write(&e))?;
        let header = pb::ResponseHeader {
            cluster_id: self.node.cluster_id(),
            member_id: self.node.id(),
            revision: outcome.revision,
            raft_term: outcome.raft_term,
        };
        match outcome.result.map_err(|e| errors::apply(&e))? {
            CommandResponse::LeaseGrant(l) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(header),
                id: l.id,
                ttl: l.ttl_secs,
                error: String::new(),
            })),
            _ => Err(Status::internal(
                "lease grant answered with another response",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let outcome = self
            .node
            .write(Command::LeaseRevoke { id })
            .await
            .map_err(|e| errors::write(&e))?;
        outcome.result.map_err(|e| errors::apply(&e))?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: self.node.cluster_id(),
                member_id: self.node.id(),
                revision: outcome.revision,
                raft_term: outcome.raft_term,
            }),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let svc = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                let resp = svc.keep_alive_one(r.id).await;
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        if let Some(mut leader) = self.leader_client().await? {
            return leader.lease_time_to_live(req).await;
        }
        let Some(granted) = self.node.store().lease_ttl(req.id) else {
            // etcd answers an unknown (or expired) lease with TTL -1, not an error.
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: Some(self.header()),
                id: req.id,
                ttl: -1,
                ..Default::default()
            }));
        };
        let ttl = self.remaining_local(req.id).unwrap_or(granted);
        let keys = if req.keys {
            self.node.store().lease_keys(req.id)
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(self.header()),
            id: req.id,
            ttl,
            granted_ttl: granted,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .store()
            .leases()
            .into_iter()
            .map(|l| pb::LeaseStatus { id: l.id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header()),
            leases,
        }))
    }
}
