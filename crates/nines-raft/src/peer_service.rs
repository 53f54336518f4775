//! The peer transport, server side: decodes peer messages and hands them to
//! openraft or to the member's forwarding and read-index logic. Messages from
//! a peer that fault injection blocks are refused as if the link were down.

use std::sync::Arc;

use nines_store::Command;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::membership::MembershipRequest;
use crate::network::{PEER_MESSAGE_BYTES_MAX, PEER_WINDOW_BYTES};
use crate::node::{Core, WriteError};
use crate::pb::peer_server::{Peer, PeerServer};
use crate::pb::Envelope;
use crate::types::{MemberNode, NodeId, TypeConfig};

struct PeerService {
    core: Arc<Core>,
}

/// Serves the peer transport on `listener` until the member shuts down.
pub(crate) fn spawn(core: Arc<Core>, listener: tokio::net::TcpListener) {
    let mut stop = core.shutdown_signal();
    let svc = PeerServer::new(PeerService { core })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(PEER_WINDOW_BYTES)
            .initial_connection_window_size(PEER_WINDOW_BYTES * 2)
            .add_service(svc)
            .serve_with_incoming_shutdown(crate::coalesce::incoming(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "peer transport stopped");
        }
    });
}

impl PeerService {
    fn open<T: DeserializeOwned>(&self, req: Request<Envelope>) -> Result<(NodeId, T), Status> {
        let env = req.into_inner();
        if self.core.faults.is_blocked(env.from) {
            return Err(Status::unavailable("link blocked by fault injection"));
        }
        let msg = bincode::deserialize(&env.data)
            .map_err(|e| Status::invalid_argument(format!("undecodable peer message: {e}")))?;
        Ok((env.from, msg))
    }

    fn seal<T: Serialize>(&self, msg: &T) -> Result<Response<Envelope>, Status> {
        let data = bincode::serialize(msg)
            .map_err(|e| Status::internal(format!("cannot encode peer message: {e}")))?;
        Ok(Response::new(Envelope {
            from: self.core.id,
            data,
        }))
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (_, rpc): (_, AppendEntriesRequest<TypeConfig>) = self.open(req)?;
        let res: Result<_, RaftError<NodeId>> = self.core.raft.append_entries(rpc).await;
        self.seal(&res)
    }

    async fn vote(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (_, rpc): (_, VoteRequest<NodeId>) = self.open(req)?;
        let res: Result<_, RaftError<NodeId>> = self.core.raft.vote(rpc).await;
        self.seal(&res)
    }

    async fn install_snapshot(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (_, rpc): (_, InstallSnapshotRequest<TypeConfig>) = self.open(req)?;
        let res: Result<_, RaftError<NodeId, InstallSnapshotError>> =
            self.core.raft.install_snapshot(rpc).await;
        self.seal(&res)
    }

    async fn forward(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (_, cmds): (_, Vec<Command>) = self.open(req)?;
        if self.core.membership.is_removed() {
            // Nothing was proposed: the sender may safely retry elsewhere
            // ("refused" makes it count the message as never delivered).
            return Err(Status::unavailable(
                "request refused: this member was removed from the cluster",
            ));
        }
        let mut res = self.core.propose_all(cmds).await;
        if self.core.membership.is_removed() {
            // Raft stopped under these writes because this member left; they
            // may still commit under the new leader, so the outcome is
            // unknown, exactly what "leader changed" tells the client.
            for r in &mut res {
                if *r == Err(WriteError::Stopped) {
                    *r = Err(WriteError::LeaderChanged);
                }
            }
        }
        self.seal(&res)
    }

    async fn read_index(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (_, ()): (_, ()) = self.open(req)?;
        let res: Result<u64, WriteError> = self.core.read_index().await;
        self.seal(&res)
    }

    async fn publish(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (_, (id, node)): (_, (NodeId, MemberNode)) = self.open(req)?;
        let res: Result<(), String> = self.core.set_node(id, node).await;
        self.seal(&res)
    }

    async fn membership(&self, req: Request<Envelope>) -> Result<Response<Envelope>, Status> {
        let (from, msg): (_, MembershipRequest) = self.open(req)?;
        let res = crate::membership::serve(&self.core, from, msg).await;
        self.seal(&res)
    }
}
