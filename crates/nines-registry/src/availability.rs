//! Availability accounting per service. A service is up while at least one
//! of its registered instances is healthy; it is accounted from the first
//! time it is up. Every member follows the
//! registry's catalog and, when a service's state changes, records the
//! transition in the replicated store under
//! `/nines/availability/events/SERVICE/AT_MS` (the time the checker saw the
//! instance change, from its health record), written only if absent: members
//! that see the same change write the same key once, so no leader is needed,
//! the history survives failover and is in backups. SLO targets live under
//! `/nines/availability/slo/SERVICE`. Reports (availability over 1 h, 24 h,
//! 7 d and 30 d as a percentage and in nines, downtime, error budget left,
//! multi-window burn rates, incidents) are computed from the events when
//! asked, by the pure [`report`]. Beside these time-based figures, each window
//! carries the request-based ones: the requests gateways proxied to the
//! service and how many failed (the buckets of [`crate::request_buckets`],
//! written by [`crate::gateway_report`]), with their success ratio, nines
//! and error budget against the same SLO ([`attach_requests`]). This module never
//! touches instances or health records; it only reads the catalog and writes
//! its own keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::request_buckets::{Outcomes, Resolution};
use crate::store::{now_ms, Registry};

/// Transitions: `EVENTS SERVICE/AT_MS` (20 digits) = [`Transition`] JSON.
pub const EVENTS: &str = "/nines/availability/events/";
/// SLO targets: `SLOS SERVICE` = [`Slo`] JSON.
pub const SLOS: &str = "/nines/availability/slo/";
/// Most events read for one report (the latest ones).
pub const EVENTS_READ_MAX: i64 = 10_000;
/// Most events read when a member starts recording (all services).
const EVENTS_LOAD_MAX: i64 = 100_000;
/// Most incidents listed in a report (the latest ones).
pub const INCIDENTS_LISTED_MAX: usize = 50;
/// The report windows: name and length in milliseconds.
pub const WINDOWS: [(&str, u64); 4] = [
    ("1h", 3_600_000),
    ("24h", 86_400_000),
    ("7d", 604_800_000),
    ("30d", 2_592_000_000),
];
/// Multi-window burn-rate alerts as the SRE workbook sets them for a 30-day
/// budget: (name, long window ms, short window ms, burn-rate threshold).
pub const BURN_ALERTS: [(&str, u64, u64, f64); 2] = [
    ("page", 3_600_000, 300_000, 14.4),
    ("ticket", 21_600_000, 1_800_000, 6.0),
];
/// Pause before a failed write or read is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// One change of a service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Whether the service is up from `at_ms` on.
    pub up: bool,
    /// When it changed, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A service's availability objective.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Target availability in percent, e.g. 99.9.
    pub target_percent: f64,
}

/// The key of a transition of `service` at `at_ms`.
pub fn event_key(service: &str, at_ms: u64) -> String {
    format!("{EVENTS}{service}/{at_ms:020}")
}

/// The state of every service with registered instances in `catalog`: up
/// since the earliest healthy instance became healthy, or down since the
/// last one failed. Times come from health records (`now` where none is).
pub fn service_states(catalog: &Catalog, now: u64) -> BTreeMap<String, Transition> {
    let mut states = BTreeMap::new();
    for (name, service) in catalog.services() {
        let mut up_since: Option<u64> = None;
        let mut down_since: Option<u64> = None;
        for (entry, _) in service.registered() {
            let since = entry
                .health
                .as_ref()
                .map(|(h, _)| h.since_ms)
                .filter(|&t| t > 0)
                .unwrap_or(now)
                .min(now);
            if entry.is_healthy() {
                up_since = Some(up_since.map_or(since, |u| u.min(since)));
            } else {
                down_since = Some(down_since.map_or(since, |d| d.max(since)));
            }
        }
        let state = match (up_since, down_since) {
            (Some(at_ms), _) => Transition { up: true, at_ms },
            (None, Some(at_ms)) => Transition { up: false, at_ms },
            (None, None) => continue,
        };
        states.insert(name.clone(), state);
    }
    states
}

/// Records transitions while it lives; stops its task when dropped.
pub struct Recorder {
    task: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts recording the transitions of the services in `catalog`.
    pub fn spawn(registry: Registry, catalog: watch::Receiver<Arc<Catalog>>) -> Recorder {
        Recorder {
            task: tokio::spawn(record_transitions(registry, catalog)),
        }
    }
}

async fn record_transitions(registry: Registry, mut catalog: watch::Receiver<Arc<Catalog>>) {
    let mut last = loop {
        match load_last(&registry).await {
            Ok(last) => break last,
            Err(error) => {
                tracing::warn!(%error, "availability: cannot read past transitions yet");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    loop {
        let current = catalog.borrow_and_update().clone();
        let mut failed = false;
        if current.loaded {
            for (service, state) in service_states(&current, now_ms()) {
                let previous = last.get(&service).copied();
                if previous.is_some_and(|p| p.up == state.up) {
                    continue;
                }
                // Accounting starts when a service is first up: an instance
                // with an active check starts critical until its first
                // passing probes, which is not an outage.
                if previous.is_none() && !state.up {
                    continue;
                }
                // Invariant: a service's transitions are recorded in time order.
                let at_ms = state.at_ms.max(previous.map_or(0, |p| p.at_ms));
                let transition = Transition {
                    up: state.up,
                    at_ms,
                };
                match record(&registry, &service, transition).await {
                    Ok(()) => {
                        last.insert(service, transition);
                    }
                    Err(error) => {
                        tracing::warn!(%error, service, "availability: transition not recorded yet");
                        failed = true;
                    }
                }
            }
        }
        if failed {
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                changed = catalog.changed() => if changed.is_err() { return },
            }
        } else if catalog.changed().await.is_err() {
            return;
        }
    }
}

/// Writes `transition` unless that key exists (another member wrote it).
async fn record(
    registry: &Registry,
    service: &str,
    transition: Transition,
) -> Result<(), etcd_client::Error> {
    let key = event_key(service, transition.at_ms);
    let value = serde_json::to_vec(&transition).expect("a transition always serializes");
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value, None)]);
    registry.client().txn(txn).await.map(|_| ())
}

/// The last recorded transition of every service.
async fn load_last(registry: &Registry) -> Result<HashMap<String, Transition>, etcd_client::Error> {
    let response = registry
        .client()
        .get(
            EVENTS,
            Some(GetOptions::new().with_prefix().with_limit(EVENTS_LOAD_MAX)),
        )
        .await?;
    let mut last = HashMap::new();
    for kv in response.kvs() {
        let (Ok(key), Ok(t)) = (
            kv.key_str(),
            serde_json::from_slice::<Transition>(kv.value()),
        ) else {
            continue;
        };
        if let Some((service, _)) = key.strip_prefix(EVENTS).and_then(|k| k.rsplit_once('/')) {
            last.insert(service.to_owned(), t);
        }
    }
    Ok(last)
}

/// Availability over one window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowReport {
    /// The window's name (`1h`, `24h`, `7d`, `30d`).
    pub window: &'static str,
    /// Its length in seconds.
    pub window_seconds: u64,
    /// The part of it the service was tracked, in seconds.
    pub observed_seconds: f64,
    /// Time down within it, in seconds.
    pub downtime_seconds: f64,
    /// Availability over the observed part, in percent (absent if none).
    pub availability_percent: Option<f64>,
    /// `-log10(1 - availability)`; absent when there was no downtime.
    pub nines: Option<f64>,
    /// Error budget left, in percent of the budget (negative: overspent).
    pub error_budget_remaining_percent: Option<f64>,
    /// Rate of spending the budget (1 = exactly on budget).
    pub burn_rate: Option<f64>,
    /// What gateways saw of the service's requests in this window.
    pub gateway_requests: RequestWindowReport,
}

/// Request-based availability over one window, from gateway buckets (whole
/// minutes: a bucket that overlaps the window's start counts whole).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RequestWindowReport {
    /// Requests proxied to the service (0: no requests).
    pub requests: u64,
    /// Requests that failed (5xx answered, or upstream failures).
    pub failed: u64,
    /// Share of requests that succeeded, in percent (absent without requests).
    pub success_percent: Option<f64>,
    /// `-log10(failed / requests)`; absent without failures.
    pub nines: Option<f64>,
    /// Error budget left against the SLO, in percent of the budget.
    pub error_budget_remaining_percent: Option<f64>,
    /// Rate of spending the budget (failed share over allowed share).
    pub burn_rate: Option<f64>,
}

impl RequestWindowReport {
    /// The figures of `outcomes` against `slo_percent`.
    pub fn new(outcomes: Outcomes, slo_percent: Option<f64>) -> RequestWindowReport {
        let Outcomes { requests, failed } = outcomes;
        let failed = failed.min(requests);
        let failed_share = (requests > 0).then(|| failed as f64 / requests as f64);
        let burn = failed_share.and_then(|f| {
            let allowed = 1.0 - slo_percent? / 100.0;
            (allowed > 0.0).then(|| f / allowed)
        });
        RequestWindowReport {
            requests,
            failed,
            success_percent: failed_share.map(|f| (1.0 - f) * 100.0),
            // `0.0 - x` rather than `-x`: all failed is 0 nines, not -0.
            nines: failed_share.filter(|&f| f > 0.0).map(|f| 0.0 - f.log10()),
            error_budget_remaining_percent: burn.map(|b| (1.0 - b) * 100.0),
            burn_rate: burn,
        }
    }
}

/// One period of a service being down.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Incident {
    /// When it went down, ms since the Unix epoch.
    pub start_ms: u64,
    /// When it came back (absent: still down).
    pub end_ms: Option<u64>,
    /// How long it lasted (until now if still down), in ms.
    pub duration_ms: u64,
}

/// A multi-window burn-rate alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BurnAlert {
    /// `page` or `ticket`.
    pub name: &'static str,
    /// Burn rate over the long window.
    pub long_burn_rate: f64,
    /// Burn rate over the short window.
    pub short_burn_rate: f64,
    /// The threshold both must pass.
    pub threshold: f64,
    /// Whether both windows burn faster than the threshold.
    pub firing: bool,
}

/// A service's availability report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceReport {
    /// The service.
    pub service: String,
    /// When the report was made, ms since the Unix epoch.
    pub now_ms: u64,
    /// Whether it is up now.
    pub up: bool,
    /// Since when it has been tracked.
    pub tracked_since_ms: u64,
    /// Its SLO target, if set.
    pub slo_percent: Option<f64>,
    /// Availability over each window.
    pub windows: Vec<WindowReport>,
    /// Burn-rate alerts (only with an SLO).
    pub burn_alerts: Vec<BurnAlert>,
    /// Incidents, latest first.
    pub incidents: Vec<Incident>,
    /// Whether older events were left out (more than [`EVENTS_READ_MAX`]).
    pub events_truncated: bool,
}

/// Down intervals `[start, end)` from transitions in time order; the last
/// one ends at `now` if still open (end `None`).
fn down_intervals(events: &[Transition]) -> Vec<(u64, Option<u64>)> {
    let mut intervals = Vec::new();
    let mut down_since: Option<u64> = None;
    for t in events {
        match (t.up, down_since) {
            (false, None) => down_since = Some(t.at_ms),
            (true, Some(start)) => {
                intervals.push((start, Some(t.at_ms)));
                down_since = None;
            }
            _ => {}
        }
    }
    if let Some(start) = down_since {
        intervals.push((start, None));
    }
    intervals
}

/// Downtime in ms within `[from, to)`.
fn downtime_ms(intervals: &[(u64, Option<u64>)], from: u64, to: u64) -> u64 {
    intervals
        .iter()
        .map(|&(start, end)| {
            let end = end.unwrap_or(to).min(to);
            end.saturating_sub(start.max(from))
        })
        .sum()
}

/// (observed ms, downtime ms) over the `length_ms` before `now`.
fn window_figures(
    intervals: &[(u64, Option<u64>)],
    tracked_since: u64,
    now: u64,
    length_ms: u64,
) -> (u64, u64) {
    let from = now.saturating_sub(length_ms).max(tracked_since);
    let observed = now.saturating_sub(from);
    (observed, downtime_ms(intervals, from, now).min(observed))
}

fn burn_rate(observed: u64, down: u64, slo: f64) -> Option<f64> {
    let allowed = 1.0 - slo / 100.0;
    (observed > 0 && allowed > 0.0).then(|| (down as f64 / observed as f64) / allowed)
}

/// The report of `service` from its transitions (any order; repeats of the
/// same state are ignored), at `now`.
pub fn report(
    service: &str,
    events: &[Transition],
    slo: Option<Slo>,
    now: u64,
    events_truncated: bool,
) -> ServiceReport {
    let mut sorted: Vec<Transition> = events.iter().copied().filter(|t| t.at_ms <= now).collect();
    sorted.sort_by_key(|t| t.at_ms);
    sorted.dedup_by(|later, earlier| later.up == earlier.up);
    let tracked_since = sorted.first().map_or(now, |t| t.at_ms);
    let intervals = down_intervals(&sorted);
    let slo_percent = slo.map(|s| s.target_percent);
    let windows = WINDOWS
        .iter()
        .map(|&(window, length_ms)| {
            let (observed, down) = window_figures(&intervals, tracked_since, now, length_ms);
            let availability = (observed > 0).then(|| 1.0 - down as f64 / observed as f64);
            let burn = slo_percent.and_then(|s| burn_rate(observed, down, s));
            WindowReport {
                window,
                window_seconds: length_ms / 1000,
                observed_seconds: observed as f64 / 1000.0,
                downtime_seconds: down as f64 / 1000.0,
                availability_percent: availability.map(|a| a * 100.0),
                nines: availability
                    .filter(|&a| a < 1.0)
                    .map(|a| 0.0 - (1.0 - a).log10()),
                error_budget_remaining_percent: burn.map(|b| (1.0 - b) * 100.0),
                burn_rate: burn,
                gateway_requests: RequestWindowReport::default(),
            }
        })
        .collect();
    let burn_alerts = slo_percent
        .map(|s| {
            BURN_ALERTS
                .iter()
                .map(|&(name, long, short, threshold)| {
                    let rate = |len| {
                        let (observed, down) = window_figures(&intervals, tracked_since, now, len);
                        burn_rate(observed, down, s).unwrap_or(0.0)
                    };
                    let (long_burn_rate, short_burn_rate) = (rate(long), rate(short));
                    BurnAlert {
                        name,
                        long_burn_rate,
                        short_burn_rate,
                        threshold,
                        firing: long_burn_rate > threshold && short_burn_rate > threshold,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let incidents = intervals
        .iter()
        .rev()
        .take(INCIDENTS_LISTED_MAX)
        .map(|&(start_ms, end_ms)| Incident {
            start_ms,
            end_ms,
            duration_ms: end_ms.unwrap_or(now).saturating_sub(start_ms),
        })
        .collect();
    ServiceReport {
        service: service.to_owned(),
        now_ms: now,
        up: sorted.last().is_none_or(|t| t.up),
        tracked_since_ms: tracked_since,
        slo_percent,
        windows,
        burn_alerts,
        incidents,
        events_truncated,
    }
}

/// Fills each window's request-based figures of `report` from gateway
/// buckets (start ms, outcomes; any order): minute buckets for windows up
/// to 24 h, hour buckets beyond. A bucket counts in a window when any part
/// of it falls within it.
pub fn attach_requests(
    report: &mut ServiceReport,
    minutes: &[(u64, Outcomes)],
    hours: &[(u64, Outcomes)],
) {
    let now = report.now_ms;
    for (window, &(_, length_ms)) in report.windows.iter_mut().zip(WINDOWS.iter()) {
        let resolution = Resolution::for_window(length_ms);
        let buckets = match resolution {
            Resolution::Minute => minutes,
            Resolution::Hour => hours,
        };
        let from = now.saturating_sub(length_ms);
        let mut sum = Outcomes::default();
        for &(start, outcomes) in buckets {
            if start + resolution.length_ms() > from && start <= now {
                sum.add(outcomes);
            }
        }
        window.gateway_requests = RequestWindowReport::new(sum, report.slo_percent);
    }
}

/// The HTTP routes: `GET /v1/availability`, `GET /v1/availability/{service}`
/// and `PUT /v1/availability/{service}/slo` (`{"target_percent": 99.9}`).
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v1/availability", get(list))
        .route("/v1/availability/{service}", get(one))
        .route("/v1/availability/{service}/slo", put(set_slo))
        .with_state(registry)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn store_error(e: &etcd_client::Error) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        e.to_string(),
    )
}

fn valid_service(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= crate::limits::NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The latest events of `service` (oldest first) and whether older ones
/// were left out.
async fn read_events(
    registry: &Registry,
    service: &str,
) -> Result<(Vec<Transition>, bool), etcd_client::Error> {
    let prefix = format!("{EVENTS}{service}/");
    let response = registry
        .client()
        .get(
            prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_limit(EVENTS_READ_MAX),
            ),
        )
        .await?;
    let mut events: Vec<Transition> = response
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    events.reverse();
    Ok((events, response.more()))
}

async fn read_slo(registry: &Registry, service: &str) -> Result<Option<Slo>, etcd_client::Error> {
    let response = registry
        .client()
        .get(format!("{SLOS}{service}"), None)
        .await?;
    Ok(response
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
}

/// The report of `service` now, read through the etcd API: health
/// transitions and gateway request buckets of the longest window; `None`
/// when neither was recorded for it.
pub async fn fetch_report(
    registry: &Registry,
    service: &str,
) -> Result<Option<ServiceReport>, etcd_client::Error> {
    let now = now_ms();
    let (events, truncated) = read_events(registry, service).await?;
    let mut buckets = Vec::new();
    for resolution in Resolution::ALL {
        // From the start of the longest window this resolution serves.
        let longest_ms = WINDOWS
            .iter()
            .map(|&(_, length_ms)| length_ms)
            .filter(|&length_ms| Resolution::for_window(length_ms) == resolution)
            .max()
            .unwrap_or(0);
        let from = now.saturating_sub(longest_ms);
        buckets.push(
            crate::request_buckets::fetch_buckets(registry, service, resolution, from).await?,
        );
    }
    let (minutes, hours) = (&buckets[0], &buckets[1]);
    if events.is_empty() && minutes.is_empty() && hours.is_empty() {
        return Ok(None);
    }
    let slo = read_slo(registry, service).await?;
    let mut r = report(service, &events, slo, now, truncated);
    attach_requests(&mut r, minutes, hours);
    Ok(Some(r))
}

/// Every service with recorded availability (health transitions or gateway
/// requests), by name.
pub async fn fetch_services(registry: &Registry) -> Result<Vec<String>, etcd_client::Error> {
    let mut names: Vec<String> = load_last(registry).await?.into_keys().collect();
    names.extend(crate::request_buckets::fetch_request_services(registry).await?);
    names.sort();
    names.dedup();
    Ok(names)
}

async fn service_report(
    registry: &Registry,
    service: &str,
) -> Result<Option<ServiceReport>, Response> {
    fetch_report(registry, service)
        .await
        .map_err(|e| store_error(&e))
}

async fn one(State(registry): State<Registry>, Path(service): Path<String>) -> Response {
    if !valid_service(&service) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "bad service name",
        );
    }
    match service_report(&registry, &service).await {
        Ok(Some(r)) => Json(r).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no availability recorded for service {service:?}"),
        ),
        Err(response) => response,
    }
}

async fn list(
    State(registry): State<Registry>,
    Query(_q): Query<HashMap<String, String>>,
) -> Response {
    let services = match fetch_services(&registry).await {
        Ok(names) => names,
        Err(e) => return store_error(&e),
    };
    let mut reports = Vec::new();
    for service in services {
        match service_report(&registry, &service).await {
            Ok(Some(r)) => reports.push(r),
            Ok(None) => {}
            Err(response) => return response,
        }
    }
    Json(json!({ "services": reports })).into_response()
}

async fn set_slo(
    State(registry): State<Registry>,
    Path(service): Path<String>,
    body: Option<Json<Slo>>,
) -> Response {
    if !valid_service(&service) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "bad service name",
        );
    }
    let Some(Json(slo)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "body must be JSON like {\"target_percent\": 99.9}",
        );
    };
    if !(slo.target_percent > 0.0 && slo.target_percent < 100.0) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!(
                "target_percent {} is not between 0 and 100",
                slo.target_percent
            ),
        );
    }
    let value = serde_json::to_vec(&slo).expect("an SLO always serializes");
    match registry
        .client()
        .put(format!("{SLOS}{service}"), value, None)
        .await
    {
        Ok(_) => {
            Json(json!({"service": service, "target_percent": slo.target_percent})).into_response()
        }
        Err(e) => store_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    fn t(up: bool, at_ms: u64) -> Transition {
        Transition { up, at_ms }
    }

    #[test]
    fn an_outage_counts_exactly_its_length() {
        let now = 10 * H;
        let events = [t(true, 0), t(false, now - 30_000), t(true, now - 20_000)];
        let r = report("web", &events, None, now, false);
        assert_eq!(
            r.incidents,
            [Incident {
                start_ms: now - 30_000,
                end_ms: Some(now - 20_000),
                duration_ms: 10_000
            }]
        );
        let hour = &r.windows[0];
        assert_eq!(hour.window, "1h");
        assert_eq!(hour.downtime_seconds, 10.0);
        let a = hour.availability_percent.expect("observed");
        assert!((a - (1.0 - 10.0 / 3600.0) * 100.0).abs() < 1e-9, "{a}");
        assert!(r.up);
        // The 24 h window saw the whole 10 h of tracking.
        assert_eq!(r.windows[1].observed_seconds, 36_000.0);
    }

    #[test]
    fn repeats_and_order_do_not_matter_and_an_open_outage_runs_to_now() {
        let now = 2 * H;
        let events = [t(false, H + 5), t(true, H), t(false, H + 10), t(true, 0)];
        let r = report("web", &events, None, now, false);
        assert!(!r.up);
        assert_eq!(r.incidents.len(), 1);
        assert_eq!(r.incidents[0].start_ms, H + 5);
        assert_eq!(r.incidents[0].end_ms, None);
        assert_eq!(r.incidents[0].duration_ms, H - 5);
    }

    #[test]
    fn error_budget_and_burn_alerts_follow_the_slo() {
        let now = 24 * H;
        // Down for 6 of the last 60 minutes: 10% down against 0.1% allowed.
        let events = [t(true, 0), t(false, now - 6 * 60_000)];
        let slo = Some(Slo {
            target_percent: 99.9,
        });
        let r = report("web", &events, slo, now, false);
        let hour = &r.windows[0];
        let burn = hour.burn_rate.expect("burn rate");
        assert!((burn - 100.0).abs() < 1e-6, "{burn}");
        assert!(hour.error_budget_remaining_percent.expect("budget") < 0.0);
        assert!(r.burn_alerts.iter().any(|a| a.name == "page" && a.firing));
        // Without downtime there is nothing to burn and no nines figure.
        let calm = report("web", &[t(true, 0)], slo, now, false);
        assert_eq!(calm.windows[0].burn_rate, Some(0.0));
        assert_eq!(calm.windows[0].nines, None);
        assert!(calm.burn_alerts.iter().all(|a| !a.firing));
    }

    #[test]
    fn nines_of_one_minute_down_in_an_hour() {
        let now = 5 * H;
        let r = report(
            "web",
            &[t(true, 0), t(false, now - 36_000), t(true, now - 32_400)],
            None,
            now,
            false,
        );
        // 3.6 s down of 3600 s: 99.9%, three nines.
        let n = r.windows[0].nines.expect("nines");
        assert!((n - 3.0).abs() < 1e-9, "{n}");
    }

    #[test]
    fn request_figures_count_the_buckets_of_each_window() {
        let now = 100 * H + 30_000;
        let slo = Some(Slo {
            target_percent: 99.0,
        });
        let mut r = report("web", &[t(true, 0)], slo, now, false);
        let minute = |ago: u64| Resolution::Minute.start(now - ago);
        let hour = |ago: u64| Resolution::Hour.start(now - ago);
        let o = |requests, failed| Outcomes { requests, failed };
        let minutes = [
            // The current minute and one 30 minutes ago: in every window.
            (minute(0), o(100, 2)),
            (minute(30 * 60_000), o(100, 0)),
            // Two hours ago: not in the last hour.
            (minute(2 * H), o(800, 0)),
            // Older than a day: hour buckets only.
            (minute(30 * H), o(5, 5)),
        ];
        let hours = [
            (hour(0), o(200, 2)),
            (hour(2 * H), o(800, 0)),
            // Three days ago: only in 7 d and 30 d.
            (hour(72 * H), o(1000, 1000)),
        ];
        attach_requests(&mut r, &minutes, &hours);
        let hour = &r.windows[0].gateway_requests;
        assert_eq!((hour.requests, hour.failed), (200, 2));
        assert!((hour.success_percent.expect("requests") - 99.0).abs() < 1e-9);
        assert!((hour.nines.expect("failures") - 2.0).abs() < 1e-9);
        // 1% failed against 1% allowed: burning exactly the budget.
        assert!((hour.burn_rate.expect("slo") - 1.0).abs() < 1e-9);
        assert!(hour.error_budget_remaining_percent.expect("slo").abs() < 1e-6);
        let day = &r.windows[1].gateway_requests;
        assert_eq!((day.requests, day.failed), (1000, 2));
        let week = &r.windows[2].gateway_requests;
        assert_eq!((week.requests, week.failed), (2000, 1002));
    }

    #[test]
    fn no_requests_means_no_request_figures() {
        let mut r = report("web", &[t(true, 0)], None, H, false);
        attach_requests(&mut r, &[], &[]);
        let w = &r.windows[0].gateway_requests;
        assert_eq!(w.requests, 0);
        assert_eq!(w.success_percent, None);
        assert_eq!(w.nines, None);
        // Without failures there is no nines figure; without an SLO no budget.
        let all_bad = RequestWindowReport::new(
            Outcomes {
                requests: 3,
                failed: 3,
            },
            None,
        );
        assert_eq!(all_bad.nines.map(f64::to_bits), Some(0.0f64.to_bits()));
        let all_good = RequestWindowReport::new(
            Outcomes {
                requests: 10,
                failed: 0,
            },
            None,
        );
        assert_eq!(all_good.success_percent, Some(100.0));
        assert_eq!(all_good.nines, None);
        assert_eq!(all_good.burn_rate, None);
    }

    #[test]
    fn event_keys_sort_by_time() {
        assert!(event_key("web", 999) < event_key("web", 1000));
        assert_eq!(
            event_key("web", 7),
            "/nines/availability/events/web/00000000000000000007"
        );
    }
}
