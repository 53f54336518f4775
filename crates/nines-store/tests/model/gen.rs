//! Proptest generators: commands and probes over a five-key keyspace,
//! with weights chosen so successful writes, failed validations, nested
//! transactions, compactions and lease revokes all occur often.

use nines_store::{
    AlarmAction, AlarmKind, AlarmMember, Command, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, SortOrder, SortTarget, TxnRequest,
};
use proptest::prelude::*;

const KEYS: &[&str] = &["a", "b", "b1", "c", "d"];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        60 => prop::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec()),
        1 => Just(Vec::new()),
    ]
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        1 => Just(vec![0]),
        2 => prop::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(&["", "x", "y", "zz"][..]).prop_map(|v| v.as_bytes().to_vec())
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        prop_oneof![3 => Just(0i64), 2 => 1i64..4],
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value: if ignore_value { Vec::new() } else { value },
                lease: if ignore_lease { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range_request() -> impl Strategy<Value = RangeRequest> {
    range_request_at(-1i64..12)
}

fn range_request_at(
    revision: impl Strategy<Value = i64> + 'static,
) -> impl Strategy<Value = RangeRequest> {
    (
        (key(), range_end(), 0i64..4, revision),
        (
            prop::sample::select(&[SortOrder::None, SortOrder::Ascend, SortOrder::Descend][..]),
            prop::sample::select(
                &[
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][..],
            ),
            any::<bool>(),
            prop::bool::weighted(0.15),
        ),
        prop::collection::vec(prop_oneof![3 => Just(0i64), 1 => 1i64..12], 4),
    )
        .prop_map(
            |(
                (key, range_end, limit, revision),
                (sort_order, sort_target, keys_only, count_only),
                f,
            )| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order,
                    sort_target,
                    keys_only,
                    count_only,
                    min_mod_revision: f[0],
                    max_mod_revision: f[1],
                    min_create_revision: f[2],
                    max_create_revision: f[3],
                }
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    (
        prop::sample::select(
            &[
                CompareResult::Equal,
                CompareResult::NotEqual,
                CompareResult::Greater,
                CompareResult::Less,
            ][..],
        ),
        prop_oneof![
            (0i64..4).prop_map(CompareTarget::Version),
            (0i64..8).prop_map(CompareTarget::CreateRevision),
            (0i64..8).prop_map(CompareTarget::ModRevision),
            value().prop_map(CompareTarget::Value),
            (0i64..3).prop_map(CompareTarget::Lease),
        ],
        key(),
        prop_oneof![3 => Just(Vec::new()), 1 => range_end()],
    )
        .prop_map(|(result, target, key, range_end)| Compare {
            result,
            target,
            key,
            range_end,
        })
}

fn txn_request() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        3 => put_request().prop_map(RequestOp::Put),
        1 => delete_request().prop_map(RequestOp::DeleteRange),
        2 => range_request().prop_map(RequestOp::Range),
    ];
    let op = leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            4 => inner.clone(),
            1 => (
                prop::collection::vec(compare(), 0..2),
                prop::collection::vec(inner.clone(), 0..3),
                prop::collection::vec(inner, 0..3),
            )
                .prop_map(|(compare, success, failure)| RequestOp::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })),
        ]
    });
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => put_request().prop_map(Command::Put),
        2 => delete_request().prop_map(Command::DeleteRange),
        4 => txn_request().prop_map(Command::Txn),
        // A percentage of the revision reached, scaled when the step runs.
        1 => (-1i64..=100).prop_map(|revision| Command::Compact { revision }),
        2 => (prop_oneof![9 => 1i64..4, 1 => Just(0i64)], 1i64..100)
            .prop_map(|(id, ttl_secs)| Command::LeaseGrant { id, ttl_secs }),
        1 => (0i64..4).prop_map(|id| Command::LeaseRevoke { id }),
        // Rare, so most runs spend most steps without the alarm.
        1 => (any::<bool>(), 1u64..3).prop_map(|(raise, member_id)| Command::Alarm {
            action: if raise { AlarmAction::Activate } else { AlarmAction::Deactivate },
            alarm: AlarmMember { member_id, kind: AlarmKind::NoSpace },
        }),
    ]
}

/// The reads done after each step.
#[derive(Clone, Debug)]
pub struct Probe {
    pub ranges: Vec<RangeRequest>,
    pub changes: (Vec<u8>, Vec<u8>, i64, usize),
}

pub fn probe() -> impl Strategy<Value = Probe> {
    (
        prop::collection::vec(range_request_at(-1i64..=100), 1..4),
        (
            prop::sample::select(KEYS).prop_map(|k| k.as_bytes().to_vec()),
            range_end(),
            -1i64..=100,
            0usize..6,
        ),
    )
        .prop_map(|(ranges, changes)| Probe { ranges, changes })
}
