//! `etcdserverpb.Cluster`: member list, add (as voter or learner), remove,
//! update and promote, over the member's Raft membership. Served by the same
//! type as Maintenance. Refusals carry etcd's codes and messages.

use nines_raft::{MemberChange, MemberInfo, MembershipError};
use tonic::{Code, Request, Response, Status};

use crate::errors;
use crate::maintenance::MaintenanceService;
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_server::Cluster;

/// A refused or failed membership change as etcd answers it.
pub fn membership_status(e: &MembershipError) -> Status {
    let code = match e {
        MembershipError::NotFound => Code::NotFound,
        MembershipError::BadUrls => Code::InvalidArgument,
        MembershipError::PeerUrlExists
        | MembershipError::NotLearner
        | MembershipError::LearnerNotReady
        | MembershipError::NotEnoughStarted => Code::FailedPrecondition,
        MembershipError::Unhealthy => Code::Unavailable,
        MembershipError::Unavailable(w) => return errors::write(w),
    };
    Status::new(code, e.to_string())
}

/// A member as etcd's API carries it.
pub(crate) fn member_pb(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.node.name,
        peer_urls: m.node.peer_urls,
        client_urls: m.node.client_urls,
        is_learner: m.is_learner,
    }
}

impl MaintenanceService {
    /// etcd's Cluster responses carry no revision, only ids and the term.
    fn cluster_header(&self) -> pb::ResponseHeader {
        crate::header(self.node(), 0)
    }

    async fn change(
        &self,
        change: MemberChange,
    ) -> Result<(Option<pb::Member>, Vec<pb::Member>), Status> {
        let outcome = self
            .node()
            .change_members(change)
            .await
            .map_err(|e| membership_status(&e))?;
        Ok((
            outcome.added.map(member_pb),
            outcome.members.into_iter().map(member_pb).collect(),
        ))
    }
}

#[tonic::async_trait]
impl Cluster for MaintenanceService {
    async fn member_add(
        &self,
        r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = r.into_inner();
        let (member, members) = self
            .change(MemberChange::Add {
                peer_urls: r.peer_urls,
                is_learner: r.is_learner,
            })
            .await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.cluster_header()),
            member,
            members,
        }))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = r.into_inner().id;
        let (_, members) = self.change(MemberChange::Remove { id }).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.cluster_header()),
            members,
        }))
    }

    async fn member_update(
        &self,
        r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let r = r.into_inner();
        let (_, members) = self
            .change(MemberChange::Update {
                id: r.id,
                peer_urls: r.peer_urls,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.cluster_header()),
            members,
        }))
    }

    async fn member_list(
        &self,
        r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if r.into_inner().linearizable {
            self.node()
                .read_barrier()
                .await
                .map_err(|e| errors::write(&e))?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.cluster_header()),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = r.into_inner().id;
        let (_, members) = self.change(MemberChange::Promote { id }).await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.cluster_header()),
            members,
        }))
    }
}
