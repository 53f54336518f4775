//! `v3lockpb.Lock` and `v3electionpb.Election`: etcd's recipes, served by
//! the member over its own KV, lease and event feed. A contender's key is
//! `NAME/LEASE` (lease in hex), bound to its lease; the owner is the key with
//! the lowest create revision; each waiter waits only for the deletion of the
//! key just before its own (no thundering herd).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use nines_raft::RaftNode;
use nines_store::{
    Command, CommandResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue,
    PutRequest, RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
    TxnResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::convert::kv_to_pb;
use crate::errors;
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::v3electionpb as epb;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3lockpb as lpb;
use crate::pb::v3lockpb::lock_server::Lock;

/// How long a waiter sleeps between checks when no event wakes it.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a name may be, in bytes.
pub const NAME_BYTES_MAX: usize = 4096;

/// Lock and Election over one member.
#[derive(Clone)]
pub struct RecipeService {
    node: RaftNode,
}

impl RecipeService {
    /// The services over `node`.
    pub fn new(node: RaftNode) -> RecipeService {
        RecipeService { node }
    }

    async fn txn(&self, t: TxnRequest) -> Result<(TxnResponse, ResponseHeader), Status> {
        let outcome = self
            .node
            .write(Command::Txn(t))
            .await
            .map_err(|e| errors::write(&e))?;
        let header = ResponseHeader {
            cluster_id: self.node.cluster_id(),
            member_id: self.node.id(),
            revision: outcome.revision,
            raft_term: outcome.raft_term,
        };
        match outcome.result.map_err(|e| errors::apply(&e))? {
            CommandResponse::Txn(t) => Ok((t, header)),
            _ => Err(Status::internal("txn answered with another response")),
        }
    }

    /// Puts `key` bound to `lease` unless it exists; returns its create
    /// revision and whether it already existed with another value.
    async fn enter(
        &self,
        key: &[u8],
        lease: i64,
        value: &[u8],
    ) -> Result<(KeyValue, ResponseHeader), Status> {
        let t = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::CreateRevision(0),
                key: key.to_vec(),
                range_end: Vec::new(),
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease,
                    ..Default::default()
                }),
                RequestOp::Range(get(key)),
            ],
            failure: vec![RequestOp::Range(get(key))],
        };
        let (resp, header) = self.txn(t).await?;
        let kv = resp
            .responses
            .into_iter()
            .find_map(|r| match r {
                ResponseOp::Range(r) => r.kvs.into_iter().next(),
                _ => None,
            })
            .ok_or_else(|| Status::internal("contender key vanished at once"))?;
        Ok((kv, header))
    }

    /// Waits until no key under `prefix` was created before `my_rev`, while
    /// `my_key` still exists (its lease alive).
    async fn wait_turn(
        &self,
        prefix: &[u8],
        my_key: &[u8],
        my_rev: i64,
    ) -> Result<ResponseHeader, Status> {
        let mut events = self.node.subscribe_events();
        loop {
            self.node
                .read_barrier()
                .await
                .map_err(|e| errors::write(&e))?;
            let (before, mine, rev) = {
                let store = self.node.store();
                let before = store
                    .range(&RangeRequest {
                        key: prefix.to_vec(),
                        range_end: prefix_end(prefix),
                        max_create_revision: my_rev - 1,
                        sort_order: SortOrder::Descend,
                        sort_target: SortTarget::Create,
                        limit: 1,
                        keys_only: true,
                        ..Default::default()
                    })
                    .map_err(|e| errors::store(&e))?;
                let mine = store.range(&get(my_key)).map_err(|e| errors::store(&e))?;
                (
                    before.kvs.into_iter().next(),
                    mine.kvs.into_iter().next(),
                    store.revision(),
                )
            };
            match mine {
                Some(kv) if kv.create_revision == my_rev => {}
                _ => {
                    return Err(Status::failed_precondition(
                        "etcdserver: session expired: the lease of this contender is gone",
                    ))
                }
            }
            let Some(waiting_for) = before else {
                return Ok(crate::header(&self.node, rev));
            };
            // Sleep until something is deleted (or a recheck is due).
            let deadline = tokio::time::Instant::now() + RECHECK_INTERVAL;
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Err(_) => break,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                        return Err(Status::unavailable("etcdserver: server stopped"))
                    }
                    Ok(Err(_lagged)) => break,
                    Ok(Ok(batch)) => {
                        if batch
                            .events
                            .iter()
                            .any(|e| e.kv.key == waiting_for.key || e.kv.key == my_key)
                        {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The current owner under `prefix` (lowest create revision).
    fn owner(&self, prefix: &[u8]) -> Result<(Option<KeyValue>, i64), Status> {
        let store = self.node.store();
        let r = store
            .range(&RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                sort_order: SortOrder::Ascend,
                sort_target: SortTarget::Create,
                limit: 1,
                ..Default::default()
            })
            .map_err(|e| errors::store(&e))?;
        Ok((r.kvs.into_iter().next(), store.revision()))
    }

    async fn delete_if_owner(&self, key: &[u8], rev: i64) -> Result<ResponseHeader, Status> {
        let (_, header) = self
            .txn(TxnRequest {
                compare: vec![create_is(key, rev)],
                success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })],
                failure: vec![],
            })
            .await?;
        Ok(header)
    }
}

fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn create_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal,
        target: CompareTarget::CreateRevision(rev),
        key: key.to_vec(),
        range_end: Vec::new(),
    }
}

/// The end of the prefix range: the prefix with its last byte raised.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `NAME/` and `NAME/LEASE`, after checking the name and lease.
fn contender_key(name: &[u8], lease: i64) -> Result<(Vec<u8>, Vec<u8>), Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("etcdserver: the name is empty"));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(Status::invalid_argument("etcdserver: the name is too long"));
    }
    if lease == 0 {
        return Err(Status::invalid_argument(
            "etcdserver: a lease is required (grant one and keep it alive)",
        ));
    }
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    Ok((prefix, key))
}

#[tonic::async_trait]
impl Lock for RecipeService {
    async fn lock(
        &self,
        req: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let req = req.into_inner();
        let (prefix, key) = contender_key(&req.name, req.lease)?;
        let (kv, _) = self.enter(&key, req.lease, b"").await?;
        let header = self.wait_turn(&prefix, &key, kv.create_revision).await?;
        Ok(Response::new(lpb::LockResponse {
            header: Some(header),
            key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let key = req.into_inner().key;
        if key.is_empty() {
            return Err(errors::empty_key());
        }
        let outcome = self
            .node
            .write(Command::DeleteRange(DeleteRangeRequest {
                key,
                ..Default::default()
            }))
            .await
            .map_err(|e| errors::write(&e))?;
        outcome.result.map_err(|e| errors::apply(&e))?;
        Ok(Response::new(lpb::UnlockResponse {
            header: Some(ResponseHeader {
                cluster_id: self.node.cluster_id(),
                member_id: self.node.id(),
                revision: outcome.revision,
                raft_term: outcome.raft_term,
            }),
        }))
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, Status>> + Send>>;

fn not_leader() -> Status {
    Status::failed_precondition("election: not leader")
}

#[tonic::async_trait]
impl Election for RecipeService {
    async fn campaign(
        &self,
        req: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let req = req.into_inner();
        let (prefix, key) = contender_key(&req.name, req.lease)?;
        let (kv, _) = self.enter(&key, req.lease, &req.value).await?;
        if kv.value != req.value {
            // Re-campaigning with a new value proclaims it, as etcd does.
            let (r, _) = self
                .txn(TxnRequest {
                    compare: vec![create_is(&key, kv.create_revision)],
                    success: vec![RequestOp::Put(PutRequest {
                        key: key.clone(),
                        value: req.value.clone(),
                        lease: req.lease,
                        ..Default::default()
                    })],
                    failure: vec![],
                })
                .await?;
            if !r.succeeded {
                return Err(not_leader());
            }
        }
        let header = self.wait_turn(&prefix, &key, kv.create_revision).await?;
        Ok(Response::new(epb::CampaignResponse {
            header: Some(header),
            leader: Some(epb::LeaderKey {
                name: req.name,
                key,
                rev: kv.create_revision,
                lease: req.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let req = req.into_inner();
        let leader = req.leader.ok_or_else(not_leader)?;
        let (r, header) = self
            .txn(TxnRequest {
                compare: vec![create_is(&leader.key, leader.rev)],
                success: vec![RequestOp::Put(PutRequest {
                    key: leader.key.clone(),
                    value: req.value,
                    lease: leader.lease,
                    ..Default::default()
                })],
                failure: vec![],
            })
            .await?;
        if !r.succeeded {
            return Err(not_leader());
        }
        Ok(Response::new(epb::ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let name = req.into_inner().name;
        let (prefix, _) = contender_key(&name, 1)?;
        self.node
            .read_barrier()
            .await
            .map_err(|e| errors::write(&e))?;
        let (owner, rev) = self.owner(&prefix)?;
        let kv = owner.ok_or_else(|| Status::failed_precondition("election: no leader"))?;
        Ok(Response::new(epb::LeaderResponse {
            header: Some(crate::header(&self.node, rev)),
            kv: Some(kv_to_pb(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        req: Request<epb::LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        let name = req.into_inner().name;
        let (prefix, _) = contender_key(&name, 1)?;
        let (tx, rx) = mpsc::channel(16);
        let svc = self.clone();
        tokio::spawn(async move {
            let mut events = svc.node.subscribe_events();
            let mut last: Option<(Vec<u8>, i64, Vec<u8>)> = None;
            loop {
                let (owner, rev) = match svc.owner(&prefix) {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if let Some(kv) = owner {
                    let now = (kv.key.clone(), kv.mod_revision, kv.value.clone());
                    if last.as_ref() != Some(&now) {
                        last = Some(now);
                        let resp = epb::LeaderResponse {
                            header: Some(crate::header(&svc.node, rev)),
                            kv: Some(kv_to_pb(kv)),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                let deadline = tokio::time::Instant::now() + RECHECK_INTERVAL;
                loop {
                    match tokio::time::timeout_at(deadline, events.recv()).await {
                        Err(_) => break,
                        Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                        Ok(Err(_)) => break,
                        Ok(Ok(b)) => {
                            if b.events.iter().any(|e| e.kv.key.starts_with(&prefix)) {
                                break;
                            }
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        req: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let leader = req.into_inner().leader.ok_or_else(not_leader)?;
        let header = self.delete_if_owner(&leader.key, leader.rev).await?;
        Ok(Response::new(epb::ResignResponse {
            header: Some(header),
        }))
    }
}
