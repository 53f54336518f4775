//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn and Compact over the
//! member's Raft node. Writes go through Raft; reads wait on the read
//! barrier unless `serializable` is set. Requests are checked against size and
//! operation limits before anything is proposed.

use nines_raft::RaftNode;
use nines_store::{Command, CommandResponse, Store};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::errors;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::Limits;

/// The KV service.
#[derive(Clone)]
pub struct KvService {
    node: RaftNode,
    limits: Limits,
}

impl KvService {
    /// A KV service over `node`.
    pub fn new(node: RaftNode, limits: Limits) -> KvService {
        KvService { node, limits }
    }

    fn check_size<M: Message>(&self, m: &M) -> Result<(), Status> {
        if m.encoded_len() > self.limits.request_bytes_max {
            return Err(errors::request_too_large());
        }
        Ok(())
    }

    /// A header for a read at the store's current revision.
    fn read_header(&self, store: &Store) -> pb::ResponseHeader {
        crate::header(&self.node, store.revision())
    }

    async fn propose(&self, cmd: Command) -> Result<(CommandResponse, pb::ResponseHeader), Status> {
        let outcome = self.node.write(cmd).await.map_err(|e| errors::write(&e))?;
        let header = pb::ResponseHeader {
            cluster_id: self.node.cluster_id(),
            member_id: self.node.id(),
            revision: outcome.revision,
            raft_term: outcome.raft_term,
        };
        let resp = outcome.result.map_err(|e| errors::apply(&e))?;
        Ok((resp, header))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(errors::empty_key());
        }
        if !req.serializable {
            self.node
                .read_barrier()
                .await
                .map_err(|e| errors::write(&e))?;
        }
        let range = convert::range_from_pb(req);
        let store = self.node.store();
        let res = store.range(&range).map_err(|e| errors::store(&e))?;
        let header = self.read_header(&store);
        drop(store);
        Ok(Response::new(pb::RangeResponse {
            header: Some(header),
            ..convert::range_to_pb(res)
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        self.check_size(&req)?;
        if req.key.is_empty() {
            return Err(errors::empty_key());
        }
        let cmd = Command::Put(convert::put_from_pb(req));
        crate::quota::check(&self.node, &cmd).await?;
        let (resp, header) = self.propose(cmd).await?;
        let CommandResponse::Put(p) = resp else {
            return Err(Status::internal("put answered with another response"));
        };
        Ok(Response::new(pb::PutResponse {
            header: Some(header),
            ..convert::put_to_pb(p)
        }))
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        self.check_size(&req)?;
        if req.key.is_empty() {
            return Err(errors::empty_key());
        }
        let (resp, header) = self
            .propose(Command::DeleteRange(convert::delete_from_pb(req)))
            .await?;
        let CommandResponse::DeleteRange(d) = resp else {
            return Err(Status::internal("delete answered with another response"));
        };
        Ok(Response::new(pb::DeleteRangeResponse {
            header: Some(header),
            ..convert::delete_to_pb(d)
        }))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let req = req.into_inner();
        self.check_size(&req)?;
        if convert::txn_ops_exceed(&req, self.limits.txn_ops_max) {
            return Err(errors::too_many_ops());
        }
        let txn = convert::txn_from_pb(req).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if Store::is_read_only_txn(&txn) {
            self.node
                .read_barrier()
                .await
                .map_err(|e| errors::write(&e))?;
            let store = self.node.store();
            let res = store.txn_read(&txn).map_err(|e| errors::store(&e))?;
            let header = self.read_header(&store);
            drop(store);
            return Ok(Response::new(convert::txn_to_pb(res, &header)));
        }
        let cmd = Command::Txn(txn);
        crate::quota::check(&self.node, &cmd).await?;
        let (resp, header) = self.propose(cmd).await?;
        let CommandResponse::Txn(t) = resp else {
            return Err(Status::internal("txn answered with another response"));
        };
        Ok(Response::new(convert::txn_to_pb(t, &header)))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let req = req.into_inner();
        let (_, header) = self
            .propose(Command::Compact {
                revision: req.revision,
            })
            .await?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header),
        }))
    }
}
