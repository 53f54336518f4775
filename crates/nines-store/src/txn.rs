//! Transactions: etcd's validation (static checks on every branch, the
//! duplicate-key rule, then lease, key and revision checks on the branches
//! that will run), the branch path decided by the compares at the
//! pre-transaction revision, and execution in one revision. Validation is
//! complete before the first write, so a failing transaction changes nothing.

use std::collections::HashSet;

use crate::error::StoreError;
use crate::read::in_range;
use crate::store::{check_put_static, Store, WriteBatch};
use crate::types::{CommandResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse};

impl Store {
    /// Runs a read-only transaction at the current revision. Fails with
    /// `TxnHasWrites` if a branch that would run holds a put or a delete.
    ///
    /// # Errors
    /// As a transaction applied through [`Store::apply`] (`EmptyKey`,
    /// `DuplicateKey`, a range's `FutureRevision` or `Compacted`), and
    /// `TxnHasWrites`.
    pub fn txn_read(&self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        check_txn_static(req)?;
        let path = self.txn_path(req);
        if path_has_writes(req, &path) {
            return Err(StoreError::TxnHasWrites);
        }
        self.check_path_ranges(req, &path)?;
        self.read_txn(req, &path, &mut 0)
    }

    /// True when no branch, at any depth, holds a put or a delete.
    pub fn is_read_only_txn(req: &TxnRequest) -> bool {
        req.success.iter().chain(&req.failure).all(|op| match op {
            RequestOp::Range(_) => true,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
            RequestOp::Txn(t) => Store::is_read_only_txn(t),
        })
    }

    /// Validates and applies a transaction as one revision.
    pub(crate) fn apply_txn(
        &mut self,
        req: &TxnRequest,
    ) -> Result<(CommandResponse, Option<WriteBatch>), StoreError> {
        check_txn_static(req)?;
        let path = self.txn_path(req);
        self.check_path_puts(req, &path)?;
        self.check_path_ranges(req, &path)?;
        let mut batch = self.begin();
        let response = self.write_txn(&mut batch, req, &path, &mut 0);
        Ok((CommandResponse::Txn(response), Some(batch)))
    }

    /// Evaluates the compares of the transaction and of every nested
    /// transaction on the branches taken, all at the current revision (as
    /// etcd does: nested compares do not see the transaction's own writes).
    /// The result lists the outcomes in pre-order.
    fn txn_path(&self, req: &TxnRequest) -> Vec<bool> {
        let mut path = Vec::new();
        self.collect_path(req, &mut path);
        path
    }

    fn collect_path(&self, req: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = req
            .compare
            .iter()
            .all(|c| self.compare_holds(c, self.revision));
        path.push(succeeded);
        for op in branch(req, succeeded) {
            if let RequestOp::Txn(t) = op {
                self.collect_path(t, path);
            }
        }
    }

    /// Checks every put on the path: the key must exist for `ignore_*`, and
    /// a lease must exist (in that order, as etcd's transaction check).
    fn check_path_puts(&self, req: &TxnRequest, path: &[bool]) -> Result<(), StoreError> {
        walk_path(req, path, &mut 0, &mut |op| {
            if let RequestOp::Put(p) = op {
                self.check_put_target_exists(p)?;
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(StoreError::LeaseNotFound { id: p.lease });
                }
            }
            Ok(())
        })
    }

    /// Checks the revision of every range on the path against the store
    /// before the transaction.
    fn check_path_ranges(&self, req: &TxnRequest, path: &[bool]) -> Result<(), StoreError> {
        walk_path(req, path, &mut 0, &mut |op| {
            if let RequestOp::Range(r) = op {
                if r.revision > 0 {
                    self.read_revision(r.revision)?;
                }
            }
            Ok(())
        })
    }

    /// Executes a validated transaction's path into `batch`.
    fn write_txn(
        &mut self,
        batch: &mut WriteBatch,
        req: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> TxnResponse {
        let succeeded = path[*cursor];
        *cursor += 1;
        let mut responses = Vec::new();
        for op in branch(req, succeeded) {
            responses.push(match op {
                RequestOp::Range(r) => {
                    // A range at revision 0 sees the writes made so far.
                    let revision = if r.revision > 0 {
                        r.revision
                    } else {
                        batch.revision
                    };
                    ResponseOp::Range(self.range_at(r, revision))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put_key(batch, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(batch, d)),
                RequestOp::Txn(t) => ResponseOp::Txn(self.write_txn(batch, t, path, cursor)),
            });
        }
        TxnResponse {
            succeeded,
            responses,
        }
    }

    /// Executes a validated read-only path at the current revision.
    fn read_txn(
        &self,
        req: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<TxnResponse, StoreError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let mut responses = Vec::new();
        for op in branch(req, succeeded) {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let revision = if r.revision > 0 {
                        r.revision
                    } else {
                        self.revision
                    };
                    ResponseOp::Range(self.range_at(r, revision))
                }
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                    return Err(StoreError::TxnHasWrites)
                }
                RequestOp::Txn(t) => ResponseOp::Txn(self.read_txn(t, path, cursor)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

/// Calls `check` on every op of the branches the path takes, in order,
/// descending into nested transactions.
fn walk_path(
    req: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
    check: &mut dyn FnMut(&RequestOp) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let succeeded = path[*cursor];
    *cursor += 1;
    for op in branch(req, succeeded) {
        if let RequestOp::Txn(t) = op {
            walk_path(t, path, cursor, check)?;
        } else {
            check(op)?;
        }
    }
    Ok(())
}

fn path_has_writes(req: &TxnRequest, path: &[bool]) -> bool {
    walk_path(req, path, &mut 0, &mut |op| match op {
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => Err(StoreError::TxnHasWrites),
        _ => Ok(()),
    })
    .is_err()
}

/// The checks that need no state, over every branch: non-empty keys, the
/// put flags, then the duplicate-key rule on each top-level branch.
pub(crate) fn check_txn_static(req: &TxnRequest) -> Result<(), StoreError> {
    check_ops_static(req)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_ops_static(req: &TxnRequest) -> Result<(), StoreError> {
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(StoreError::EmptyKey),
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(StoreError::EmptyKey),
            RequestOp::Put(p) => check_put_static(p)?,
            RequestOp::Txn(t) => check_ops_static(t)?,
            _ => {}
        }
    }
    Ok(())
}

/// The delete ranges of a branch, as `(key, range_end)` pairs.
type Deletes<'a> = Vec<(&'a [u8], &'a [u8])>;

fn deleted(dels: &Deletes<'_>, key: &[u8]) -> bool {
    dels.iter().any(|(k, end)| in_range(key, k, end))
}

/// etcd's duplicate-key rule for one branch: no key is put twice, and no
/// key is put inside a range the branch (or a nested transaction on it)
/// deletes. A nested transaction's success and failure may put the same key,
/// since only one of them runs. Returns the branch's puts and deletes.
///
/// Two deliberate differences from etcd keep every key written at most once
/// per revision: a delete with `range_end == [0]` is treated as the range
/// `>= key` it deletes (etcd's check sees an empty interval), and a put in
/// one nested transaction followed by a delete covering it in a later
/// sibling is refused (etcd lets the delete overwrite the put).
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<&[u8]>, Deletes<'_>), StoreError> {
    let mut dels: Deletes<'_> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some((d.key.as_slice(), d.range_end.as_slice())),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<&[u8]> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(StoreError::DuplicateKey);
            }
        }
        // Stricter than etcd: a key put by an earlier nested transaction and
        // deleted by a later one would be written twice in one revision.
        if puts
            .iter()
            .any(|k| deleted(&dels_then, k) || deleted(&dels_else, k))
        {
            return Err(StoreError::DuplicateKey);
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if !puts.insert(p.key.as_slice()) || deleted(&dels, &p.key) {
            return Err(StoreError::DuplicateKey);
        }
    }
    Ok((puts, dels))
}
