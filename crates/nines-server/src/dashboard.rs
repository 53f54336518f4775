//! The web dashboard at `/` of `--http-addr`: static HTML, JavaScript and CSS
//! compiled into the binary (`assets/`, no build step), and `GET
//! /v1/dashboard`, the JSON the page polls every second. That view is this
//! member's: its Raft status, plus each other member's answer to etcd's
//! `Maintenance.Status` on its client URL (the same call `etcdctl endpoint
//! status` makes), asked concurrently with a short deadline, so a dead
//! member shows as unreachable instead of stalling the page. It reads; it
//! never proposes anything to Raft.
//!
//! The page's other panels read routes that other crates add to the same
//! HTTP server through [`crate::Extensions`]: the registry's `/v1/services`
//! and `/v1/availability`, the gateways' published status at `/v1/gateways`
//! (requests per second are computed in the page from the counters' deltas
//! between two reports) and `/v1/backups` (the chain of sets and the last
//! run). Each panel says so when its route is absent (404) or its list is
//! empty, so a member without a registry or backups still serves the page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use nines_raft::{RaftNode, ServerState};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::StatusRequest;

/// How long the dashboard waits for another member's status. The page polls
/// every second, so an answer later than this is stale anyway.
pub const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(600);
/// How long connecting to another member's client URL may take.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// One member as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberRow {
    /// Member id, hex.
    pub id: String,
    /// Its `--name`.
    pub name: String,
    /// The client URL it was asked on (absent before it published one).
    pub client_url: Option<String>,
    /// `leader`, `follower`, `candidate`, `learner` or `unreachable`.
    pub role: String,
    /// Whether it is a learner (non-voting).
    pub is_learner: bool,
    /// Whether it answered and knows a leader.
    pub healthy: bool,
    /// Its Raft term, if it answered.
    pub term: Option<u64>,
    /// Index of its last log entry, if it answered.
    pub raft_index: Option<u64>,
    /// Index of its last applied entry, if it answered.
    pub applied_index: Option<u64>,
    /// Entries it has yet to apply, against the highest log index seen.
    pub index_lag: Option<u64>,
    /// Its store revision, if it answered.
    pub revision: Option<i64>,
    /// Bytes its store holds, if it answered.
    pub db_size_bytes: Option<i64>,
    /// Why it could not be asked, if it could not.
    pub error: Option<String>,
}

/// The answer of `GET /v1/dashboard`.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardView {
    /// The member serving this view.
    pub member: String,
    /// Cluster id, hex.
    pub cluster_id: String,
    /// The leader's name as this member knows it.
    pub leader: Option<String>,
    /// This member's Raft term.
    pub term: u64,
    /// This member's store revision.
    pub revision: i64,
    /// Voters that answered and know a leader.
    pub voters_healthy: usize,
    /// Voters in the configuration.
    pub voters: usize,
    /// Whether the healthy voters make a quorum.
    pub quorum: bool,
    /// Every member, in id order.
    pub members: Vec<MemberRow>,
}

#[derive(Clone)]
struct DashboardState {
    node: RaftNode,
    /// Status clients by client URL, kept between polls so a poll costs one
    /// request per member, not one connection.
    clients: Arc<Mutex<HashMap<String, MaintenanceClient<Channel>>>>,
}

/// The dashboard's routes: `/`, its assets and `/v1/dashboard`.
pub fn routes(node: RaftNode) -> Router {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/dashboard/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/v1/dashboard", get(view))
        .with_state(DashboardState {
            node,
            clients: Arc::default(),
        })
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "unreachable",
    }
}

impl DashboardState {
    /// A status client for `url`, reused across polls. Connecting is lazy:
    /// nothing here waits on the network.
    fn client(&self, url: &str) -> Result<MaintenanceClient<Channel>, String> {
        let mut clients = self.clients.lock().expect("dashboard clients lock");
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("bad client URL {url}: {e}"))?
            .connect_timeout(PEER_CONNECT_TIMEOUT)
            .timeout(PEER_STATUS_TIMEOUT)
            .connect_lazy();
        let client = MaintenanceClient::new(channel);
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops clients of URLs no member has any more.
    fn forget_others(&self, urls: &[String]) {
        let mut clients = self.clients.lock().expect("dashboard clients lock");
        clients.retain(|url, _| urls.contains(url));
    }
}

/// Asks the member at `url` for its status and fills in `row`.
async fn ask(state: DashboardState, mut row: MemberRow, member_id: u64) -> MemberRow {
    let Some(url) = row.client_url.clone() else {
        row.role = "unreachable".into();
        row.error = Some("no client URL published yet".into());
        return row;
    };
    let answer = match state.client(&url) {
        Ok(mut client) => {
            tokio::time::timeout(PEER_STATUS_TIMEOUT, client.status(StatusRequest {}))
                .await
                .map_err(|_| "no answer in time".to_owned())
                .and_then(|r| r.map_err(|s| s.message().to_owned()))
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(st) => {
            let st = st.into_inner();
            row.role = if row.is_learner {
                "learner"
            } else if st.leader == member_id {
                "leader"
            } else {
                "follower"
            }
            .into();
            row.healthy = st.leader != 0;
            row.term = Some(st.raft_term);
            row.raft_index = Some(st.raft_index);
            row.applied_index = Some(st.raft_applied_index);
            row.revision = st.header.map(|h| h.revision);
            row.db_size_bytes = Some(st.db_size);
        }
        Err(e) => {
            row.role = "unreachable".into();
            row.error = Some(e);
        }
    }
    row
}

async fn view(State(state): State<DashboardState>) -> Json<DashboardView> {
    let node = &state.node;
    let st = node.status();
    let (revision, db_size) = {
        let store = node.store();
        (store.revision(), store.approx_size_bytes())
    };
    let mut asks = Vec::new();
    let mut urls = Vec::new();
    let mut rows = Vec::new();
    for (id, member, is_learner) in &st.members {
        let mut row = MemberRow {
            id: format!("{id:x}"),
            name: member.name.clone(),
            client_url: member.client_urls.first().cloned(),
            role: String::new(),
            is_learner: *is_learner,
            healthy: false,
            term: None,
            raft_index: None,
            applied_index: None,
            index_lag: None,
            revision: None,
            db_size_bytes: None,
            error: None,
        };
        urls.extend(row.client_url.clone());
        if *id == st.id {
            row.role = role_name(st.state).into();
            row.healthy = st.leader.is_some();
            row.term = Some(st.term);
            row.raft_index = Some(st.last_log_index);
            row.applied_index = Some(st.applied_index);
            row.revision = Some(revision);
            row.db_size_bytes = Some(i64::try_from(db_size).unwrap_or(i64::MAX));
            rows.push(row);
        } else {
            asks.push(ask(state.clone(), row, *id));
        }
    }
    state.forget_others(&urls);
    rows.extend(futures::future::join_all(asks).await);
    let highest = rows.iter().filter_map(|r| r.raft_index).max().unwrap_or(0);
    for row in &mut rows {
        row.index_lag = row.applied_index.map(|a| highest.saturating_sub(a));
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let voters = rows.iter().filter(|r| !r.is_learner).count();
    let voters_healthy = rows.iter().filter(|r| !r.is_learner && r.healthy).count();
    let leader = st.leader.and_then(|l| {
        st.members
            .iter()
            .find(|(id, _, _)| *id == l)
            .map(|(_, m, _)| m.name.clone())
    });
    Json(DashboardView {
        member: node.name().to_owned(),
        cluster_id: format!("{:x}", node.cluster_id()),
        leader,
        term: st.term,
        revision,
        voters_healthy,
        voters,
        quorum: voters > 0 && voters_healthy > voters / 2,
        members: rows,
    })
}
