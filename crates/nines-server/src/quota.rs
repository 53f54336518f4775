//! The space quota (etcd's `--quota-backend-bytes`). A write that adds data
//! while the store is past its quota raises the NOSPACE alarm through Raft
//! (so every member refuses such writes, also after a restart) and fails
//! with etcd's "database space exceeded". Deletes and compaction still pass,
//! so an operator can free space, then disarm the alarm.

use nines_raft::RaftNode;
use nines_store::{added_bytes, AlarmAction, AlarmKind, AlarmMember, Command};
use tonic::Status;

use crate::errors;

/// Lets `cmd` through, or refuses it when the quota is reached, raising the
/// alarm the first time.
pub async fn check(node: &RaftNode, cmd: &Command) -> Result<(), Status> {
    let Some(cost) = added_bytes(cmd) else {
        return Ok(());
    };
    let (raised, size) = {
        let store = node.store();
        (
            store.has_alarm(AlarmKind::NoSpace),
            store.approx_size_bytes(),
        )
    };
    if raised {
        return Err(errors::no_space());
    }
    if size.saturating_add(cost) <= node.quota_bytes() {
        return Ok(());
    }
    tracing::warn!(
        size,
        quota = node.quota_bytes(),
        "space quota reached: raising the NOSPACE alarm"
    );
    let raise = Command::Alarm {
        action: AlarmAction::Activate,
        alarm: AlarmMember {
            member_id: node.id(),
            kind: AlarmKind::NoSpace,
        },
    };
    node.write(raise).await.map_err(|e| errors::write(&e))?;
    Err(errors::no_space())
}
