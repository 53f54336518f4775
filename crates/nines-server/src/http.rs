//! The HTTP API on `--http-addr`: health and readiness, the cluster view, and
//! (only when the member runs with `--unsafe-fault-injection`) the fault
//! switches chaos runs use. JSON in, JSON out; errors as
//! `{"error": {"code", "message"}}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use nines_raft::RaftNode;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone)]
struct HttpState {
    node: RaftNode,
    fault_injection: bool,
}

/// The HTTP API's routes.
pub fn router(node: RaftNode, fault_injection: bool) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/v1/cluster", get(cluster))
        .route("/v1/debug/faults", put(set_faults))
        .with_state(HttpState {
            node,
            fault_injection,
        })
}

/// An error body with a fitting status.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

async fn health(State(s): State<HttpState>) -> Response {
    let st = s.node.status();
    match st.leader {
        Some(leader) => {
            Json(json!({"health": "true", "leader": format!("{leader:x}")})).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"health": "false", "reason": "no leader"})),
        )
            .into_response(),
    }
}

/// Ready: a leader is known and this member's client URLs are published, so
/// it is fully visible in member lists.
async fn ready(State(s): State<HttpState>) -> Response {
    if s.node.status().leader.is_none() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "no leader is known",
        );
    }
    if !s.node.is_published() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_published",
            "client URLs not yet published",
        );
    }
    Json(json!({"ready": true})).into_response()
}

#[derive(Serialize)]
struct MemberView {
    id: String,
    name: String,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    is_learner: bool,
    is_leader: bool,
}

async fn cluster(State(s): State<HttpState>) -> Response {
    let st = s.node.status();
    let revision = s.node.store().revision();
    let leader_name = st
        .members
        .iter()
        .find(|(id, _, _)| Some(*id) == st.leader)
        .map(|(_, n, _)| n.name.clone());
    let members: Vec<MemberView> = st
        .members
        .iter()
        .map(|(id, n, learner)| MemberView {
            id: format!("{id:x}"),
            name: n.name.clone(),
            peer_urls: n.peer_urls.clone(),
            client_urls: n.client_urls.clone(),
            is_learner: *learner,
            is_leader: Some(*id) == st.leader,
        })
        .collect();
    Json(json!({
        "cluster_id": format!("{:x}", s.node.cluster_id()),
        "member_id": format!("{:x}", st.id),
        "name": s.node.name(),
        "leader": leader_name,
        "term": st.term,
        "revision": revision,
        "raft_index": st.last_log_index,
        "applied_index": st.applied_index,
        "state": format!("{:?}", st.state),
        "members": members,
    }))
    .into_response()
}

/// The fault set a chaos run asks for.
#[derive(Deserialize)]
struct FaultSet {
    #[serde(default)]
    blocked_peers: Vec<String>,
    #[serde(default)]
    fail_fsync: bool,
}

async fn set_faults(State(s): State<HttpState>, body: Option<Json<FaultSet>>) -> Response {
    if !s.fault_injection {
        return error(
            StatusCode::NOT_FOUND,
            "fault_injection_disabled",
            "fault injection is off; start the member with --unsafe-fault-injection",
        );
    }
    let Some(Json(f)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be JSON like {\"blocked_peers\": [\"n2\"], \"fail_fsync\": false}",
        );
    };
    if let Err(e) = s.node.set_blocked_peers(&f.blocked_peers) {
        return error(StatusCode::BAD_REQUEST, "unknown_member", e);
    }
    if f.fail_fsync {
        s.node.fail_next_fsync();
    }
    Json(json!({"blocked_peers": f.blocked_peers, "fail_fsync": f.fail_fsync})).into_response()
}
