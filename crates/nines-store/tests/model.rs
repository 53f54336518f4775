//! Model-based test: a naive model of etcd's MVCC semantics (a full copy of
//! the keyspace per revision, events per revision) against [`Store`], over
//! random sequences of puts, deletes, transactions, compactions and lease
//! commands on a small keyspace. After every step it compares the apply
//! results and events, ranges at random revisions (historical and
//! compacted ones included), read-only transactions and the change history,
//! and checks the store's invariants. Snapshots must round-trip, and a
//! flipped byte must never load silently.

use std::collections::BTreeMap;

use nines_store::{
    Command, CommandResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, Event, EventKind, KeyValue, Lease, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, Store, StoreError, TxnRequest,
    TxnResponse,
};
use proptest::prelude::*;

// ---------------------------------------------------------------- the model

/// The keyspace at one revision.
type State = BTreeMap<Vec<u8>, KeyValue>;

/// Errors as the model predicts them (mirrors the store's variants).
#[derive(Clone, Debug, PartialEq, Eq)]
enum ModelError {
    Compacted { requested: i64, compacted: i64 },
    FutureRevision { requested: i64, current: i64 },
    EmptyKey,
    LeaseNotFound { id: i64 },
    LeaseExists { id: i64 },
    KeyNotFound,
    DuplicateKey,
    TxnHasWrites,
    ValueProvided,
    LeaseProvided,
}

fn from_store(e: &StoreError) -> ModelError {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => ModelError::Compacted {
            requested: *requested,
            compacted: *compacted,
        },
        StoreError::FutureRevision { requested, current } => ModelError::FutureRevision {
            requested: *requested,
            current: *current,
        },
        StoreError::EmptyKey => ModelError::EmptyKey,
        StoreError::LeaseNotFound { id } => ModelError::LeaseNotFound { id: *id },
        StoreError::LeaseExists { id } => ModelError::LeaseExists { id: *id },
        StoreError::KeyNotFound => ModelError::KeyNotFound,
        StoreError::DuplicateKey => ModelError::DuplicateKey,
        StoreError::TxnHasWrites => ModelError::TxnHasWrites,
        StoreError::ValueProvided => ModelError::ValueProvided,
        StoreError::LeaseProvided => ModelError::LeaseProvided,
        other => panic!("the model never expects {other:?}"),
    }
}

#[derive(Default)]
struct Model {
    /// `states[r]` is the keyspace at revision `r` (index 0 unused).
    states: Vec<State>,
    /// `events[r]` are the events of revision `r`.
    events: Vec<Vec<Event>>,
    leases: BTreeMap<i64, i64>,
    compact_revision: i64,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// One flattened write of a transaction branch choice, for the duplicate rule.
enum Write<'a> {
    Put(&'a [u8]),
    Delete(&'a [u8], &'a [u8]),
}

/// Every flattening of a branch: one list of writes per choice of branch in
/// each nested transaction.
fn flattenings(ops: &[RequestOp]) -> Vec<Vec<Write<'_>>> {
    let mut all: Vec<Vec<Write<'_>>> = vec![Vec::new()];
    for op in ops {
        match op {
            RequestOp::Put(p) => all.iter_mut().for_each(|f| f.push(Write::Put(&p.key))),
            RequestOp::DeleteRange(d) => all
                .iter_mut()
                .for_each(|f| f.push(Write::Delete(&d.key, &d.range_end))),
            RequestOp::Range(_) => {}
            RequestOp::Txn(t) => {
                let mut tails = flattenings(&t.success);
                tails.extend(flattenings(&t.failure));
                let mut next = Vec::new();
                for f in &all {
                    for tail in &tails {
                        let mut joined: Vec<Write<'_>> = f
                            .iter()
                            .map(|w| match w {
                                Write::Put(k) => Write::Put(k),
                                Write::Delete(k, e) => Write::Delete(k, e),
                            })
                            .collect();
                        joined.extend(tail.iter().map(|w| match w {
                            Write::Put(k) => Write::Put(k),
                            Write::Delete(k, e) => Write::Delete(k, e),
                        }));
                        next.push(joined);
                    }
                }
                all = next;
            }
        }
    }
    all
}

/// A branch writes some key twice in some flattening: two puts of one key,
/// or a put of a key a delete in the same flattening covers.
fn writes_twice(ops: &[RequestOp]) -> bool {
    flattenings(ops).iter().any(|f| {
        f.iter().enumerate().any(|(i, w)| {
            let Write::Put(k) = w else { return false };
            f.iter().enumerate().any(|(j, other)| match other {
                Write::Put(k2) => i != j && k2 == k,
                Write::Delete(dk, de) => in_range(k, dk, de),
            })
        })
    })
}

impl Model {
    fn new() -> Model {
        Model {
            states: vec![State::new(), State::new()],
            events: vec![Vec::new(), Vec::new()],
            ..Model::default()
        }
    }

    fn revision(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn current(&self) -> &State {
        self.states.last().expect("at least revision 1")
    }

    fn read_revision(&self, requested: i64) -> Result<i64, ModelError> {
        if requested > self.revision() {
            return Err(ModelError::FutureRevision {
                requested,
                current: self.revision(),
            });
        }
        let rev = if requested <= 0 {
            self.revision()
        } else {
            requested
        };
        if rev < self.compact_revision {
            return Err(ModelError::Compacted {
                requested: rev,
                compacted: self.compact_revision,
            });
        }
        Ok(rev)
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, ModelError> {
        if req.key.is_empty() {
            return Err(ModelError::EmptyKey);
        }
        let rev = self.read_revision(req.revision)?;
        Ok(range_in(&self.states[rev as usize], req))
    }

    fn changes(
        &self,
        key: &[u8],
        end: &[u8],
        start: i64,
        max: usize,
    ) -> Result<Vec<Event>, ModelError> {
        if start < self.compact_revision {
            return Err(ModelError::Compacted {
                requested: start,
                compacted: self.compact_revision,
            });
        }
        let mut out = Vec::new();
        for rev in start.max(1)..=self.revision() {
            if out.len() >= max {
                break;
            }
            for ev in &self.events[rev as usize] {
                if in_range(&ev.kv.key, key, end) {
                    let mut ev = ev.clone();
                    // The version an event at the compaction revision
                    // replaced is superseded at it, so it is gone.
                    if rev == self.compact_revision {
                        ev.prev_kv = None;
                    }
                    out.push(ev);
                }
            }
        }
        Ok(out)
    }

    fn compare(&self, state: &State, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        let zero = KeyValue::default();
        let check = |kv: &KeyValue| {
            let ord = match &c.target {
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
                CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord.is_eq(),
                CompareResult::NotEqual => ord.is_ne(),
                CompareResult::Greater => ord.is_gt(),
                CompareResult::Less => ord.is_lt(),
            }
        };
        if kvs.is_empty() {
            !matches!(c.target, CompareTarget::Value(_)) && check(&zero)
        } else {
            kvs.into_iter().all(check)
        }
    }

    fn static_check(req: &TxnRequest) -> Result<(), ModelError> {
        fn ops(req: &TxnRequest) -> Result<(), ModelError> {
            if req.compare.iter().any(|c| c.key.is_empty()) {
                return Err(ModelError::EmptyKey);
            }
            for op in req.success.iter().chain(&req.failure) {
                match op {
                    RequestOp::Range(r) if r.key.is_empty() => return Err(ModelError::EmptyKey),
                    RequestOp::DeleteRange(d) if d.key.is_empty() => {
                        return Err(ModelError::EmptyKey)
                    }
                    RequestOp::Put(p) => put_static(p)?,
                    RequestOp::Txn(t) => ops(t)?,
                    _ => {}
                }
            }
            Ok(())
        }
        ops(req)?;
        if writes_twice(&req.success) || writes_twice(&req.failure) {
            return Err(ModelError::DuplicateKey);
        }
        Ok(())
    }

    /// The ops that will run, in order, with each nested txn's outcome;
    /// compares see the state before the transaction.
    fn path<'a>(&self, req: &'a TxnRequest, out: &mut Vec<&'a RequestOp>) {
        let ok = req.compare.iter().all(|c| self.compare(self.current(), c));
        for op in if ok { &req.success } else { &req.failure } {
            out.push(op);
            if let RequestOp::Txn(t) = op {
                self.path(t, out);
            }
        }
    }

    fn check_path(&self, path: &[&RequestOp]) -> Result<(), ModelError> {
        for op in path {
            if let RequestOp::Put(p) = op {
                if (p.ignore_value || p.ignore_lease) && !self.current().contains_key(&p.key) {
                    return Err(ModelError::KeyNotFound);
                }
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(ModelError::LeaseNotFound { id: p.lease });
                }
            }
        }
        for op in path {
            if let RequestOp::Range(r) = op {
                if r.revision > 0 {
                    self.read_revision(r.revision)?;
                }
            }
        }
        Ok(())
    }

    fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, ModelError> {
        Model::static_check(req)?;
        let mut path = Vec::new();
        self.path(req, &mut path);
        if path
            .iter()
            .any(|op| matches!(op, RequestOp::Put(_) | RequestOp::DeleteRange(_)))
        {
            return Err(ModelError::TxnHasWrites);
        }
        self.check_path(&path)?;
        let mut scratch = Txn::new(self);
        Ok(scratch.run(self, req))
    }

    fn apply(&mut self, cmd: &Command) -> Result<(CommandResponse, Vec<Event>), ModelError> {
        let (response, txn) = match cmd {
            Command::Put(p) => {
                put_static(p)?;
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(ModelError::LeaseNotFound { id: p.lease });
                }
                if (p.ignore_value || p.ignore_lease) && !self.current().contains_key(&p.key) {
                    return Err(ModelError::KeyNotFound);
                }
                let mut txn = Txn::new(self);
                (CommandResponse::Put(txn.put(p)), txn)
            }
            Command::DeleteRange(d) => {
                if d.key.is_empty() {
                    return Err(ModelError::EmptyKey);
                }
                let mut txn = Txn::new(self);
                (CommandResponse::DeleteRange(txn.delete(d)), txn)
            }
            Command::Txn(t) => {
                Model::static_check(t)?;
                let mut path = Vec::new();
                self.path(t, &mut path);
                self.check_path(&path)?;
                let mut txn = Txn::new(self);
                (CommandResponse::Txn(txn.run(self, t)), txn)
            }
            Command::Compact { revision } => {
                if *revision <= self.compact_revision {
                    return Err(ModelError::Compacted {
                        requested: *revision,
                        compacted: self.compact_revision,
                    });
                }
                if *revision > self.revision() {
                    return Err(ModelError::FutureRevision {
                        requested: *revision,
                        current: self.revision(),
                    });
                }
                self.compact_revision = *revision;
                return Ok((CommandResponse::Compact, Vec::new()));
            }
            Command::LeaseGrant { id, ttl_secs } => {
                if *id == 0 {
                    return Err(ModelError::LeaseNotFound { id: 0 });
                }
                if self.leases.contains_key(id) {
                    return Err(ModelError::LeaseExists { id: *id });
                }
                self.leases.insert(*id, *ttl_secs);
                return Ok((
                    CommandResponse::LeaseGrant(Lease {
                        id: *id,
                        ttl_secs: *ttl_secs,
                    }),
                    Vec::new(),
                ));
            }
            Command::LeaseRevoke { id } => {
                if self.leases.remove(id).is_none() {
                    return Err(ModelError::LeaseNotFound { id: *id });
                }
                let mut txn = Txn::new(self);
                let keys: Vec<Vec<u8>> = txn
                    .state
                    .values()
                    .filter(|kv| kv.lease == *id)
                    .map(|kv| kv.key.clone())
                    .collect();
                for k in keys {
                    txn.delete(&DeleteRangeRequest {
                        key: k,
                        ..DeleteRangeRequest::default()
                    });
                }
                (CommandResponse::LeaseRevoke, txn)
            }
        };
        if !txn.events.is_empty() {
            self.states.push(txn.state);
            self.events.push(txn.events.clone());
        }
        Ok((response, txn.events))
    }

    fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.current()
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect()
    }
}

fn put_static(p: &PutRequest) -> Result<(), ModelError> {
    if p.key.is_empty() {
        return Err(ModelError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(ModelError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(ModelError::LeaseProvided);
    }
    Ok(())
}

fn range_in(state: &State, req: &RangeRequest) -> RangeResponse {
    let all: Vec<KeyValue> = state
        .values()
        .filter(|kv| in_range(&kv.key, &req.key, &req.range_end))
        .cloned()
        .collect();
    let count = all.len() as i64;
    if req.count_only {
        return RangeResponse {
            kvs: Vec::new(),
            more: false,
            count,
        };
    }
    let mut kvs: Vec<KeyValue> = all
        .into_iter()
        .filter(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        })
        .collect();
    let order = if req.sort_order == SortOrder::None && req.sort_target != SortTarget::Key {
        SortOrder::Ascend
    } else {
        req.sort_order
    };
    let key = |kv: &KeyValue| -> (Vec<u8>, i64) {
        match req.sort_target {
            SortTarget::Key => (kv.key.clone(), 0),
            SortTarget::Value => (kv.value.clone(), 0),
            SortTarget::Version => (Vec::new(), kv.version),
            SortTarget::Create => (Vec::new(), kv.create_revision),
            SortTarget::Mod => (Vec::new(), kv.mod_revision),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by_key(key),
        SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(key(kv))),
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    RangeResponse { kvs, more, count }
}

/// The state while one revision is being written.
struct Txn {
    revision: i64,
    state: State,
    events: Vec<Event>,
    path_ok: Vec<bool>,
}

impl Txn {
    fn new(model: &Model) -> Txn {
        Txn {
            revision: model.revision() + 1,
            state: model.current().clone(),
            events: Vec::new(),
            path_ok: Vec::new(),
        }
    }

    fn put(&mut self, p: &PutRequest) -> PutResponse {
        let prev = self.state.get(&p.key).cloned();
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(self.revision, |k| k.create_revision),
            mod_revision: self.revision,
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value: if p.ignore_value {
                prev.as_ref().expect("checked").value.clone()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().expect("checked").lease
            } else {
                p.lease
            },
        };
        self.state.insert(p.key.clone(), kv.clone());
        self.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone(),
        });
        PutResponse {
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys: Vec<Vec<u8>> = self
            .state
            .keys()
            .filter(|k| in_range(k, &d.key, &d.range_end))
            .cloned()
            .collect();
        let mut resp = DeleteRangeResponse {
            deleted: keys.len() as i64,
            prev_kvs: Vec::new(),
        };
        for k in keys {
            let prev = self.state.remove(&k).expect("listed");
            self.events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: k,
                    mod_revision: self.revision,
                    ..KeyValue::default()
                },
                prev_kv: Some(prev.clone()),
            });
            if d.prev_kv {
                resp.prev_kvs.push(prev);
            }
        }
        resp
    }

    fn run(&mut self, model: &Model, req: &TxnRequest) -> TxnResponse {
        let ok = req
            .compare
            .iter()
            .all(|c| model.compare(model.current(), c));
        self.path_ok.push(ok);
        let mut responses = Vec::new();
        for op in if ok { &req.success } else { &req.failure } {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(if r.revision > 0 {
                    range_in(&model.states[r.revision as usize], r)
                } else {
                    range_in(&self.state, r)
                }),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d)),
                RequestOp::Txn(t) => ResponseOp::Txn(self.run(model, t)),
            });
        }
        TxnResponse {
            succeeded: ok,
            responses,
        }
    }
}

// ------------------------------------------------------------ generators

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

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        8 => put_request().prop_map(Command::Put),
        2 => delete_request().prop_map(Command::DeleteRange),
        4 => txn_request().prop_map(Command::Txn),
        // A percentage of the revision reached, scaled when the step runs.
        1 => (-1i64..=100).prop_map(|revision| Command::Compact { revision }),
        2 => (prop_oneof![9 => 1i64..4, 1 => Just(0i64)], 1i64..100)
            .prop_map(|(id, ttl_secs)| Command::LeaseGrant { id, ttl_secs }),
        1 => (0i64..4).prop_map(|id| Command::LeaseRevoke { id }),
    ]
}

/// The reads done after each step.
#[derive(Clone, Debug)]
struct Probe {
    ranges: Vec<RangeRequest>,
    changes: (Vec<u8>, Vec<u8>, i64, usize),
}

fn probe() -> impl Strategy<Value = Probe> {
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

// ------------------------------------------------------------ the checks

fn check_step(store: &mut Store, model: &mut Model, cmd: &Command, probe: &Probe) {
    if let Command::Txn(t) = cmd {
        let got = store.txn_read(t).map_err(|e| from_store(&e));
        assert_eq!(got, model.txn_read(t), "txn_read of {t:?}");
        assert_eq!(
            Store::is_read_only_txn(t),
            !format!("{t:?}").contains("Put(") && !format!("{t:?}").contains("DeleteRange(")
        );
    }
    let applied = store.apply(cmd);
    let expected = model.apply(cmd);
    store.check_invariants();
    match (&applied.result, expected) {
        (Ok(got), Ok((want, events))) => {
            assert_eq!(got, &want, "response to {cmd:?}");
            assert_eq!(applied.events, events, "events of {cmd:?}");
        }
        (Err(got), Err(want)) => {
            assert_eq!(from_store(got), want, "error of {cmd:?}");
            assert!(applied.events.is_empty());
        }
        (got, want) => panic!("{cmd:?}: store {got:?}, model {want:?}"),
    }
    assert_eq!(applied.revision, model.revision());
    assert_eq!(store.revision(), model.revision());
    assert_eq!(store.compact_revision(), model.compact_revision);
    assert_eq!(store.key_count(), model.current().len());
    let leases: Vec<Lease> = model
        .leases
        .iter()
        .map(|(&id, &ttl_secs)| Lease { id, ttl_secs })
        .collect();
    assert_eq!(store.leases(), leases);
    for id in 0..4 {
        assert_eq!(store.lease_ttl(id), model.leases.get(&id).copied());
        if model.leases.contains_key(&id) {
            assert_eq!(
                store.lease_keys(id),
                model.lease_keys(id),
                "keys of lease {id}"
            );
        }
    }
    for req in &probe.ranges {
        let got = store.range(req).map_err(|e| from_store(&e));
        assert_eq!(got, model.range(req), "range {req:?}");
    }
    // Every kept revision, plus the one just below the compaction.
    for rev in (model.compact_revision - 1).max(0)..=model.revision() + 1 {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        let got = store.range(&req).map_err(|e| from_store(&e));
        assert_eq!(got, model.range(&req), "full range at {rev}");
    }
    let (k, e, start, max) = &probe.changes;
    let got = store
        .changes(k, e, *start, *max)
        .map_err(|e| from_store(&e));
    assert_eq!(got, model.changes(k, e, *start, *max), "changes {probe:?}");
    let from = model.compact_revision.max(1);
    let got = store
        .changes(&[0], &[0], from, usize::MAX)
        .map_err(|e| from_store(&e));
    assert_eq!(
        got,
        model.changes(&[0], &[0], from, usize::MAX),
        "all changes"
    );
}

fn snapshot(store: &Store) -> Vec<u8> {
    let mut buf = Vec::new();
    store.write_snapshot(&mut buf).expect("write to a Vec");
    buf
}

fn assert_same_store(a: &Store, b: &Store) {
    assert_eq!(a.revision(), b.revision());
    assert_eq!(a.compact_revision(), b.compact_revision());
    assert_eq!(a.leases(), b.leases());
    assert_eq!(a.key_count(), b.key_count());
    assert_eq!(a.approx_size_bytes(), b.approx_size_bytes());
    for l in a.leases() {
        assert_eq!(a.lease_keys(l.id), b.lease_keys(l.id));
    }
    for rev in a.compact_revision().max(1)..=a.revision() {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        assert_eq!(a.range(&req).unwrap(), b.range(&req).unwrap());
        assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap());
    }
    let from = a.compact_revision().max(1);
    assert_eq!(
        a.changes(&[0], &[0], from, usize::MAX).unwrap(),
        b.changes(&[0], &[0], from, usize::MAX).unwrap()
    );
}

/// `hash_kv` refuses the revisions a range refuses, and the hash at a
/// revision never changes while the compaction revision stays: later writes
/// must not leak into it.
fn check_hashes(store: &Store, model: &Model, seen: &mut BTreeMap<i64, (u32, i64)>) {
    for rev in (model.compact_revision - 1).max(0)..=model.revision() + 1 {
        let got = store.hash_kv(rev).map_err(|e| from_store(&e));
        match (got, model.read_revision(rev)) {
            (Ok(hash), Ok(_)) if rev > 0 => {
                assert_eq!(hash.1, model.compact_revision);
                if let Some(before) = seen.insert(rev, hash) {
                    if before.1 == hash.1 {
                        assert_eq!(before, hash, "hash at {rev} changed");
                    }
                }
            }
            (Ok(_), Ok(_)) => {}
            (got, want) => assert_eq!(got.map(|_| ()), want.map(|_| ()), "hash_kv at {rev}"),
        }
    }
}

/// Maps a percentage in `0..=100` onto `0..=reached + 1`; negatives stay.
fn scale(percent: i64, reached: i64) -> i64 {
    if percent < 0 {
        percent
    } else {
        percent * (reached + 1) / 100
    }
}

fn run(steps: &[(Command, Probe)]) -> Store {
    let mut store = Store::new();
    let mut model = Model::new();
    let mut hashes = BTreeMap::new();
    for (cmd, probe) in steps {
        // Compaction and probe revisions are generated as percentages of the
        // revision reached, so they land on kept, compacted and future ones.
        let reached = model.revision();
        let cmd = match cmd {
            Command::Compact { revision } => Command::Compact {
                revision: scale(*revision, reached),
            },
            other => other.clone(),
        };
        let mut probe = probe.clone();
        for r in &mut probe.ranges {
            r.revision = scale(r.revision, reached);
        }
        probe.changes.2 = scale(probe.changes.2, reached);
        check_step(&mut store, &mut model, &cmd, &probe);
        check_hashes(&store, &model, &mut hashes);
    }
    store
}

proptest! {
    // PROPTEST_CASES raises the count for a longer hunt; 512 by default.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(steps in prop::collection::vec((command(), probe()), 1..60)) {
        let store = run(&steps);
        let bytes = snapshot(&store);
        let restored = Store::read_snapshot(&mut bytes.as_slice()).expect("own snapshot loads");
        restored.check_invariants();
        assert_same_store(&store, &restored);
        prop_assert_eq!(snapshot(&restored), bytes);
    }

    #[test]
    fn flipped_snapshot_byte_is_always_detected(
        steps in prop::collection::vec((command(), probe()), 1..25),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 300),
    ) {
        let store = run(&steps);
        let bytes = snapshot(&store);
        for (at, mask) in flips {
            let mut bad = bytes.clone();
            let pos = at.index(bad.len());
            bad[pos] ^= mask;
            let loaded = Store::read_snapshot(&mut bad.as_slice());
            prop_assert!(loaded.is_err(), "flip {mask:#x} at {pos} of {} loaded", bytes.len());
        }
    }
}
