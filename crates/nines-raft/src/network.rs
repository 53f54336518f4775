//! The peer transport, client side: one lazily connected gRPC channel per
//! peer carrying bincode-encoded openraft messages, plus the fault switches
//! that chaos runs use to cut links. It does not decide anything about Raft.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::coalesce::CoalescingStream;

use crate::log_store::LogFaults;
use crate::pb::peer_client::PeerClient;
use crate::pb::Envelope;
use crate::types::{MemberNode, NodeId, TypeConfig};

/// Largest peer message accepted or sent (a batch of entries or a snapshot chunk).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// HTTP/2 flow-control window of peer streams: an AppendEntries with many
/// batched entries is large, and the 64 KiB default would make it wait for a
/// window update per 64 KiB, one round trip each.
pub const PEER_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Fault switches, all off unless the member runs with fault injection enabled.
#[derive(Debug, Default)]
pub struct Faults {
    /// Peers whose traffic is dropped, both directions, at this member.
    pub blocked: RwLock<HashSet<NodeId>>,
    /// Log-level faults.
    pub log: Arc<LogFaults>,
}

impl Faults {
    /// True when traffic with `peer` must be dropped.
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        let blocked = self.blocked.read().expect("faults lock");
        !blocked.is_empty() && blocked.contains(&peer)
    }
}

/// A transport failure, as the caller needs to know it: was the message
/// possibly delivered?
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached; the message was not delivered.
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable {
        /// Target member.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// The message may or may not have been delivered.
    #[error("peer {peer} call failed: {reason}")]
    Failed {
        /// Target member.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// A message could not be encoded or decoded.
    #[error("peer message codec: {0}")]
    Codec(String),
}

/// Channels to peers, shared by Raft replication and request forwarding.
#[derive(Clone)]
pub struct PeerPool {
    self_id: NodeId,
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    faults: Arc<Faults>,
}

impl PeerPool {
    /// A pool for member `self_id`.
    pub fn new(self_id: NodeId, faults: Arc<Faults>) -> PeerPool {
        PeerPool {
            self_id,
            channels: Arc::new(Mutex::new(HashMap::new())),
            faults,
        }
    }

    fn client(&self, target: NodeId, node: &MemberNode) -> Result<PeerClient<Channel>, PeerError> {
        let url = node
            .peer_urls
            .first()
            .cloned()
            .ok_or_else(|| PeerError::Unreachable {
                peer: target,
                reason: "member has no peer URL".into(),
            })?;
        let mut map = self.channels.lock().expect("peer pool lock");
        let ch = match map.get(&(target, url.clone())) {
            Some(ch) => ch.clone(),
            None => {
                let ep = Endpoint::from_shared(url.clone())
                    .map_err(|e| PeerError::Unreachable {
                        peer: target,
                        reason: format!("bad peer URL {url}: {e}"),
                    })?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .initial_stream_window_size(Some(PEER_WINDOW_BYTES))
                    .initial_connection_window_size(Some(PEER_WINDOW_BYTES * 2))
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let ch = ep.connect_with_connector_lazy(PeerConnector);
                map.insert((target, url), ch.clone());
                ch
            }
        };
        Ok(PeerClient::new(ch)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// Sends `req` with `method` to `target`, within `timeout`, and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        node: &MemberNode,
        method: PeerMethod,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        if self.faults.is_blocked(target) {
            return Err(PeerError::Unreachable {
                peer: target,
                reason: "link blocked by fault injection".into(),
            });
        }
        let data = bincode::serialize(req).map_err(|e| PeerError::Codec(e.to_string()))?;
        let env = Envelope {
            from: self.self_id,
            data,
        };
        let mut client = self.client(target, node)?;
        let fut = async move {
            match method {
                PeerMethod::AppendEntries => client.append_entries(env).await,
                PeerMethod::Vote => client.vote(env).await,
                PeerMethod::InstallSnapshot => client.install_snapshot(env).await,
                PeerMethod::Forward => client.forward(env).await,
                PeerMethod::ReadIndex => client.read_index(env).await,
                PeerMethod::Publish => client.publish(env).await,
                PeerMethod::Membership => client.membership(env).await,
            }
        };
        let resp = match tokio::time::timeout(timeout, fut).await {
            Err(_) => {
                return Err(PeerError::Failed {
                    peer: target,
                    reason: format!("no answer within {timeout:?}"),
                })
            }
            Ok(Err(status)) => return Err(classify(target, status)),
            Ok(Ok(resp)) => resp.into_inner(),
        };
        bincode::deserialize(&resp.data).map_err(|e| PeerError::Codec(e.to_string()))
    }
}

/// Opens peer connections: TCP with `TCP_NODELAY`, writes coalesced (see
/// [`crate::coalesce`]), so a request's HEADERS, DATA and end-of-stream
/// frames leave in one write instead of three.
#[derive(Clone, Copy, Debug)]
struct PeerConnector;

impl tower::Service<Uri> for PeerConnector {
    type Response = TokioIo<CoalescingStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let port = uri.port_u16().unwrap_or(80);
            // The words "tcp connect error" tell `classify` the request never left.
            let not_sent = |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("tcp connect error: {e}"))
            };
            let stream = TcpStream::connect((host, port)).await.map_err(not_sent)?;
            stream.set_nodelay(true).map_err(not_sent)?;
            Ok(TokioIo::new(CoalescingStream::new(stream)))
        })
    }
}

/// A connect failure means the request never left; anything else may have.
fn classify(peer: NodeId, status: tonic::Status) -> PeerError {
    let text = format!("{status}");
    let not_sent = status.code() == tonic::Code::Unavailable
        && (text.contains("connect") || text.contains("refused") || text.contains("blocked"));
    if not_sent {
        PeerError::Unreachable { peer, reason: text }
    } else {
        PeerError::Failed { peer, reason: text }
    }
}

/// The peer RPCs.
#[derive(Clone, Copy, Debug)]
pub enum PeerMethod {
    /// Raft AppendEntries.
    AppendEntries,
    /// Raft RequestVote.
    Vote,
    /// Raft InstallSnapshot (one chunk).
    InstallSnapshot,
    /// Client commands forwarded to the leader.
    Forward,
    /// Read index from the leader.
    ReadIndex,
    /// Client URL publication.
    Publish,
    /// Member list, member changes and removal notices.
    Membership,
}

/// openraft's network factory over the pool.
#[derive(Clone)]
pub struct NetworkFactory {
    /// The shared pool.
    pub pool: PeerPool,
}

/// A connection to one peer, as openraft uses it.
pub struct PeerConnection {
    pool: PeerPool,
    target: NodeId,
    node: MemberNode,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerConnection {
        PeerConnection {
            pool: self.pool.clone(),
            target,
            node: node.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, MemberNode, RaftError<NodeId, E>>;

impl PeerConnection {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        method: PeerMethod,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        E: std::error::Error + DeserializeOwned,
        RaftError<NodeId, E>: DeserializeOwned,
    {
        let res: Result<Result<Resp, RaftError<NodeId, E>>, PeerError> = self
            .pool
            .call(self.target, &self.node, method, req, option.hard_ttl())
            .await;
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ PeerError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.rpc(PeerMethod::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.rpc(PeerMethod::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.rpc(PeerMethod::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer often enough that a restarted member
        // rejoins quickly, rarely enough not to spin.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
