//! `etcdserverpb.Maintenance`: Status, Hash, HashKV, Alarm (list),
//! Defragment, and Snapshot, which streams the member's applied state as a
//! nines snapshot file (padded and followed by its SHA-256, the shape
//! etcdctl checks), and MoveLeader (on the leader, as etcd requires).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use nines_raft::RaftNode;
use nines_store::{AlarmAction, AlarmKind, AlarmMember, Command, CommandResponse};
use tonic::{Request, Response, Status};

use crate::errors;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;

/// The etcd API version members report, so clients pick the v3.4 feature set.
pub const API_VERSION: &str = "3.4.0";
/// Bytes of snapshot per streamed message (etcd's chunk size).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// Maintenance and Cluster services.
#[derive(Clone)]
pub struct MaintenanceService {
    node: RaftNode,
}

impl MaintenanceService {
    /// The services over `node`.
    pub fn new(node: RaftNode) -> MaintenanceService {
        MaintenanceService { node }
    }

    pub(crate) fn header(&self) -> pb::ResponseHeader {
        let rev = self.node.store().revision();
        crate::header(&self.node, rev)
    }

    pub(crate) fn node(&self) -> &RaftNode {
        &self.node
    }

    pub(crate) fn members(&self) -> Vec<pb::Member> {
        self.node
            .members()
            .into_iter()
            .map(crate::cluster::member_pb)
            .collect()
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let req = req.into_inner();
        let action = match pb::alarm_request::AlarmAction::try_from(req.action) {
            Ok(pb::alarm_request::AlarmAction::Get) => {
                let alarms = self.node.store().alarms();
                return Ok(Response::new(pb::AlarmResponse {
                    header: Some(self.header()),
                    alarms: alarms.iter().map(alarm_to_pb).collect(),
                }));
            }
            Ok(pb::alarm_request::AlarmAction::Activate) => AlarmAction::Activate,
            Ok(pb::alarm_request::AlarmAction::Deactivate) => AlarmAction::Deactivate,
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        let kind = match pb::AlarmType::try_from(req.alarm) {
            Ok(pb::AlarmType::Nospace) => AlarmKind::NoSpace,
            Ok(pb::AlarmType::Corrupt) => AlarmKind::Corrupt,
            // etcd answers an alarm of type NONE with nothing changed.
            _ => {
                return Ok(Response::new(pb::AlarmResponse {
                    header: Some(self.header()),
                    alarms: Vec::new(),
                }))
            }
        };
        let alarm = AlarmMember {
            member_id: req.member_id,
            kind,
        };
        let outcome = self
            .node
            .write(Command::Alarm { action, alarm })
            .await
            .map_err(|e| errors::write(&e))?;
        let changed = match outcome.result.map_err(|e| errors::apply(&e))? {
            CommandResponse::Alarm(changed) => changed,
            _ => return Err(Status::internal("alarm answered with another response")),
        };
        Ok(Response::new(pb::AlarmResponse {
            header: Some(crate::header(&self.node, outcome.revision)),
            alarms: changed.iter().map(alarm_to_pb).collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.node.status();
        let (revision, db_size, errors) = {
            let store = self.node.store();
            let errors = store
                .alarms()
                .iter()
                .map(|a| {
                    let kind = alarm_to_pb(a).alarm().as_str_name();
                    format!("memberID:{} alarm:{kind} ", a.member_id)
                })
                .collect();
            (store.revision(), store.approx_size_bytes() as i64, errors)
        };
        let is_learner = st
            .members
            .iter()
            .any(|(id, _, learner)| *id == st.id && *learner);
        Ok(Response::new(pb::StatusResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: self.node.cluster_id(),
                member_id: st.id,
                revision,
                raft_term: st.term,
            }),
            version: API_VERSION.to_string(),
            db_size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.last_log_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // The store keeps no free pages on disk (snapshots are rewritten
        // whole), so there is nothing to reclaim.
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.header()),
        }))
    }

    async fn hash(
        &self,
        _req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, _) = self
            .node
            .store()
            .hash_kv(0)
            .map_err(|e| errors::store(&e))?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.header()),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let (hash, compact_revision) = self
            .node
            .store()
            .hash_kv(rev)
            .map_err(|e| errors::store(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header()),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let bytes = self
            .node
            .export_snapshot()
            .await
            .map_err(|e| Status::internal(format!("etcdserver: snapshot failed: {e}")))?;
        let header = self.header();
        let total = bytes.len();
        // Each message carries the bytes still to come after it, so the last
        // one says 0, as etcd's stream does. Chunks are copied out one at a
        // time as the client reads, not all up front.
        let messages =
            futures::stream::iter(0..total.div_ceil(SNAPSHOT_CHUNK_BYTES)).map(move |i| {
                let start = i * SNAPSHOT_CHUNK_BYTES;
                let end = (start + SNAPSHOT_CHUNK_BYTES).min(total);
                Ok(pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: (total - end) as u64,
                    blob: bytes[start..end].to_vec(),
                })
            });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        self.node
            .transfer_leadership(target)
            .await
            .map_err(|e| errors::transfer(&e))?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.header()),
        }))
    }
}

fn alarm_to_pb(a: &AlarmMember) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: a.member_id,
        alarm: match a.kind {
            AlarmKind::NoSpace => pb::AlarmType::Nospace,
            AlarmKind::Corrupt => pb::AlarmType::Corrupt,
        } as i32,
    }
}
