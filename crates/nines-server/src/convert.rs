//! Conversions between etcd's protobuf messages and the store's types. Pure
//! field mapping; validation lives with the services.

use nines_store as st;

use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// A store key-value as etcd's message.
pub fn kv_to_pb(kv: st::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A store event as etcd's message.
pub fn event_to_pb(e: st::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            st::EventKind::Put => mvccpb::event::EventType::Put as i32,
            st::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(e.kv)),
        prev_kv: e.prev_kv.map(kv_to_pb),
    }
}

/// A range request from etcd's message.
pub fn range_from_pb(r: pb::RangeRequest) -> st::RangeRequest {
    st::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match pb::range_request::SortOrder::try_from(r.sort_order) {
            Ok(pb::range_request::SortOrder::Ascend) => st::SortOrder::Ascend,
            Ok(pb::range_request::SortOrder::Descend) => st::SortOrder::Descend,
            _ => st::SortOrder::None,
        },
        sort_target: match pb::range_request::SortTarget::try_from(r.sort_target) {
            Ok(pb::range_request::SortTarget::Version) => st::SortTarget::Version,
            Ok(pb::range_request::SortTarget::Create) => st::SortTarget::Create,
            Ok(pb::range_request::SortTarget::Mod) => st::SortTarget::Mod,
            Ok(pb::range_request::SortTarget::Value) => st::SortTarget::Value,
            _ => st::SortTarget::Key,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

/// A range result as etcd's message (header filled by the caller).
pub fn range_to_pb(r: st::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: None,
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A put request from etcd's message.
pub fn put_from_pb(r: pb::PutRequest) -> st::PutRequest {
    st::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// A put result as etcd's message.
pub fn put_to_pb(r: st::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: None,
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

/// A delete request from etcd's message.
pub fn delete_from_pb(r: pb::DeleteRangeRequest) -> st::DeleteRangeRequest {
    st::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

/// A delete result as etcd's message.
pub fn delete_to_pb(r: st::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: None,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

/// Why a transaction message cannot be converted.
#[derive(Debug, thiserror::Error)]
pub enum TxnShapeError {
    /// A request op with no request in it.
    #[error("etcdserver: a txn operation is empty")]
    EmptyOp,
    /// A compare with an unknown target or no value.
    #[error("etcdserver: a txn compare is malformed")]
    BadCompare,
}

/// A transaction from etcd's message.
pub fn txn_from_pb(t: pb::TxnRequest) -> Result<st::TxnRequest, TxnShapeError> {
    Ok(st::TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: ops_from_pb(t.success)?,
        failure: ops_from_pb(t.failure)?,
    })
}

fn ops_from_pb(ops: Vec<pb::RequestOp>) -> Result<Vec<st::RequestOp>, TxnShapeError> {
    ops.into_iter()
        .map(|op| {
            use pb::request_op::Request;
            Ok(match op.request.ok_or(TxnShapeError::EmptyOp)? {
                Request::RequestRange(r) => st::RequestOp::Range(range_from_pb(r)),
                Request::RequestPut(r) => st::RequestOp::Put(put_from_pb(r)),
                Request::RequestDeleteRange(r) => st::RequestOp::DeleteRange(delete_from_pb(r)),
                Request::RequestTxn(t) => st::RequestOp::Txn(txn_from_pb(t)?),
            })
        })
        .collect()
}

fn compare_from_pb(c: pb::Compare) -> Result<st::Compare, TxnShapeError> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result).map_err(|_| TxnShapeError::BadCompare)? {
        R::Equal => st::CompareResult::Equal,
        R::Greater => st::CompareResult::Greater,
        R::Less => st::CompareResult::Less,
        R::NotEqual => st::CompareResult::NotEqual,
    };
    // A compare whose union is unset compares against the zero value, as etcd does.
    let target = match T::try_from(c.target).map_err(|_| TxnShapeError::BadCompare)? {
        T::Version => st::CompareTarget::Version(match c.target_union {
            Some(U::Version(v)) => v,
            None => 0,
            _ => return Err(TxnShapeError::BadCompare),
        }),
        T::Create => st::CompareTarget::CreateRevision(match c.target_union {
            Some(U::CreateRevision(v)) => v,
            None => 0,
            _ => return Err(TxnShapeError::BadCompare),
        }),
        T::Mod => st::CompareTarget::ModRevision(match c.target_union {
            Some(U::ModRevision(v)) => v,
            None => 0,
            _ => return Err(TxnShapeError::BadCompare),
        }),
        T::Value => st::CompareTarget::Value(match c.target_union {
            Some(U::Value(v)) => v,
            None => Vec::new(),
            _ => return Err(TxnShapeError::BadCompare),
        }),
        T::Lease => st::CompareTarget::Lease(match c.target_union {
            Some(U::Lease(v)) => v,
            None => 0,
            _ => return Err(TxnShapeError::BadCompare),
        }),
    };
    Ok(st::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

/// A transaction result as etcd's message. The top header is `header`;
/// nested responses carry only the revision, as etcd's do.
pub fn txn_to_pb(t: st::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    let mut out = txn_to_pb_nested(t, header.revision);
    out.header = Some(*header);
    out
}

fn txn_to_pb_nested(t: st::TxnResponse, revision: i64) -> pb::TxnResponse {
    use pb::response_op::Response;
    let header = &pb::ResponseHeader {
        revision,
        ..Default::default()
    };
    pb::TxnResponse {
        header: Some(*header),
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .map(|r| pb::ResponseOp {
                response: Some(match r {
                    st::ResponseOp::Range(r) => Response::ResponseRange(pb::RangeResponse {
                        header: Some(*header),
                        ..range_to_pb(r)
                    }),
                    st::ResponseOp::Put(r) => Response::ResponsePut(pb::PutResponse {
                        header: Some(*header),
                        ..put_to_pb(r)
                    }),
                    st::ResponseOp::DeleteRange(r) => {
                        Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                            header: Some(*header),
                            ..delete_to_pb(r)
                        })
                    }
                    st::ResponseOp::Txn(t) => Response::ResponseTxn(txn_to_pb_nested(t, revision)),
                }),
            })
            .collect(),
    }
}

/// Counts the operations of a transaction per branch, recursively; etcd
/// limits each branch (and the compares) to `--max-txn-ops`.
pub fn txn_ops_exceed(t: &pb::TxnRequest, max: usize) -> bool {
    if t.compare.len() > max || t.success.len() > max || t.failure.len() > max {
        return true;
    }
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(pb::request_op::Request::RequestTxn(inner)) => txn_ops_exceed(inner, max),
            _ => false,
        })
}
