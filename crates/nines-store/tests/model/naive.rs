//! The naive model of etcd's MVCC semantics the store is checked against:
//! a full copy of the keyspace per revision and the events of each
//! revision, written for obviousness rather than speed. Transactions are
//! validated by enumerating every branch choice (the duplicate-key rule),
//! not by the store's interval check.

use std::collections::BTreeMap;

use nines_store::{
    AlarmAction, AlarmKind, Command, CommandResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, Event, EventKind, KeyValue, Lease, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    StoreError, TxnRequest, TxnResponse,
};

/// The keyspace at one revision.
pub type State = BTreeMap<Vec<u8>, KeyValue>;

/// Errors as the model predicts them (mirrors the store's variants).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelError {
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
    NoSpace,
}

pub fn from_store(e: &StoreError) -> ModelError {
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
        StoreError::NoSpace => ModelError::NoSpace,
        other => panic!("the model never expects {other:?}"),
    }
}

#[derive(Default)]
pub struct Model {
    /// `states[r]` is the keyspace at revision `r` (index 0 unused).
    pub states: Vec<State>,
    /// `events[r]` are the events of revision `r`.
    pub events: Vec<Vec<Event>>,
    /// Lease id to granted TTL.
    pub leases: BTreeMap<i64, i64>,
    /// The last compaction revision, 0 if none.
    pub compact_revision: i64,
    /// Members with a raised NOSPACE alarm.
    pub nospace: std::collections::BTreeSet<u64>,
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
    pub fn new() -> Model {
        Model {
            states: vec![State::new(), State::new()],
            events: vec![Vec::new(), Vec::new()],
            ..Model::default()
        }
    }

    pub fn revision(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    pub fn current(&self) -> &State {
        self.states.last().expect("at least revision 1")
    }

    pub fn read_revision(&self, requested: i64) -> Result<i64, ModelError> {
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

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, ModelError> {
        if req.key.is_empty() {
            return Err(ModelError::EmptyKey);
        }
        let rev = self.read_revision(req.revision)?;
        Ok(range_in(&self.states[rev as usize], req))
    }

    pub fn changes(
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

    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, ModelError> {
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

    pub fn apply(&mut self, cmd: &Command) -> Result<(CommandResponse, Vec<Event>), ModelError> {
        fn has_put(ops: &[RequestOp]) -> bool {
            ops.iter().any(|op| match op {
                RequestOp::Put(_) => true,
                RequestOp::Txn(t) => has_put(&t.success) || has_put(&t.failure),
                _ => false,
            })
        }
        let grows = match cmd {
            Command::Put(_) | Command::LeaseGrant { .. } => true,
            Command::Txn(t) => has_put(&t.success) || has_put(&t.failure),
            _ => false,
        };
        if grows && !self.nospace.is_empty() {
            return Err(ModelError::NoSpace);
        }
        let (response, txn) = match cmd {
            Command::Alarm { action, alarm } => {
                assert_eq!(
                    alarm.kind,
                    AlarmKind::NoSpace,
                    "the generator raises NOSPACE only"
                );
                let changed = match action {
                    AlarmAction::Activate => self.nospace.insert(alarm.member_id),
                    AlarmAction::Deactivate => self.nospace.remove(&alarm.member_id),
                };
                let list = if changed { vec![*alarm] } else { Vec::new() };
                return Ok((CommandResponse::Alarm(list), Vec::new()));
            }
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

    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
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
