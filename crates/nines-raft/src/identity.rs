//! The data dir's identity file, `member.json`: which member of which
//! cluster the directory belongs to. A member refuses a data dir of another
//! member or another cluster instead of mixing their state.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::node::ClusterState;
use crate::types::NodeId;

#[derive(Serialize, Deserialize, PartialEq, Eq, Debug)]
struct Identity {
    name: String,
    member_id: NodeId,
    cluster_id: u64,
}

/// The (name, member id, cluster id) recorded in `dir/member.json`, if the
/// dir has one.
pub(crate) fn read(dir: &Path) -> Result<Option<(String, NodeId, u64)>, String> {
    let path = dir.join("member.json");
    match fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is unreadable ({e}); is this a nines data dir?",
                    path.display()
                )
            })?;
            Ok(Some((found.name, found.member_id, found.cluster_id)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Checks `dir/member.json` against this member, or writes it for a new dir.
pub(crate) fn check_or_write(
    dir: &Path,
    name: &str,
    member_id: NodeId,
    cluster_id: u64,
    state: ClusterState,
) -> Result<(), String> {
    let path = dir.join("member.json");
    match fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is unreadable ({e}); is this a nines data dir?",
                    path.display()
                )
            })?;
            if found.name != name || found.member_id != member_id {
                return Err(format!(
                    "data dir {} belongs to member {:?} ({:016x}), not to {:?} ({:016x}); use that member's --name and --initial-cluster, or another --data-dir",
                    dir.display(), found.name, found.member_id, name, member_id
                ));
            }
            if state == ClusterState::New && found.cluster_id != cluster_id {
                return Err(format!(
                    "data dir {} belongs to cluster {:016x}, but --initial-cluster describes cluster {:016x}; use the cluster's original --initial-cluster, or another --data-dir",
                    dir.display(), found.cluster_id, cluster_id
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
            let id = Identity {
                name: name.to_string(),
                member_id,
                cluster_id,
            };
            let bytes = serde_json::to_vec_pretty(&id).expect("identity encodes");
            let tmp = dir.join("member.json.tmp");
            fs::write(&tmp, bytes)
                .and_then(|()| fs::File::open(&tmp)?.sync_all())
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
