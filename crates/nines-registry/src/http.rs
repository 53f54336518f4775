//! The registry's HTTP API (axum), merged into the member's `--http-addr`:
//!
//! - `PUT /v1/services/{name}/instances/{id}`: register (flat JSON body, see
//!   [`Registration`]); 400 with the field and the reason, nothing stored;
//! - `DELETE /v1/services/{name}/instances/{id}`: deregister (404 if unknown);
//! - `PUT /v1/services/{name}/instances/{id}/heartbeat`: a TTL heartbeat;
//! - `GET /v1/services`: every service with its instance counts;
//! - `GET /v1/services/{name}/instances?healthy=true&tag=T`: its instances;
//! - `GET /v1/services/{name}/instances/{id}`: one instance;
//! - `GET /v1/registry`: this member's DNS address and the live checkers.
//!
//! Reads come from the local catalog. A read with `?index=N` is a blocking
//! query: it is answered as soon as the service's index (the store revision
//! of its last change) passes N, or after `wait` (default 5 minutes) with
//! the same index. The index is also sent as the `X-Nines-Index` header.
//! Errors are `{"error": {"code", "message"}}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::catalog::{Catalog, InstanceView};
use crate::limits::{
    BLOCKING_QUERIES_MAX, BLOCKING_WAIT_DEFAULT, BLOCKING_WAIT_MAX, BODY_BYTES_MAX,
};
use crate::model::{parse_duration, validate_id, validate_name, Registration};
use crate::store::Registry;
use crate::RegistryError;

/// Longest a write waits for the local catalog to show it.
const READ_YOUR_WRITES: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    registry: Registry,
    catalog: watch::Receiver<Arc<Catalog>>,
    member: String,
    dns_addr: Option<SocketAddr>,
    /// Bounds the blocking queries waiting at once.
    blocking: Arc<tokio::sync::Semaphore>,
}

impl Api {
    /// The API of member `member` over `registry`, reading `catalog`.
    pub fn new(
        registry: Registry,
        catalog: watch::Receiver<Arc<Catalog>>,
        member: String,
        dns_addr: Option<SocketAddr>,
    ) -> Api {
        Api {
            registry,
            catalog,
            member,
            dns_addr,
            blocking: Arc::new(tokio::sync::Semaphore::new(BLOCKING_QUERIES_MAX)),
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> ApiError {
        let status = match &error {
            RegistryError::Invalid(_) | RegistryError::NotTtl { .. } => StatusCode::BAD_REQUEST,
            RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
            RegistryError::Conflict { .. } => StatusCode::CONFLICT,
            RegistryError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            RegistryError::Store(_) | RegistryError::Listen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RegistryError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = match status {
            StatusCode::BAD_REQUEST => "invalid_argument",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        ApiError::new(status, code, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The registry routes, ready to merge into the member's router.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/services", get(list_services))
        .route("/v1/services/{name}/instances", get(list_instances))
        .route(
            "/v1/services/{name}/instances/{id}",
            put(register).delete(deregister).get(get_instance),
        )
        .route(
            "/v1/services/{name}/instances/{id}/heartbeat",
            put(heartbeat),
        )
        // A missing name or id leaves an empty path segment; say so rather
        // than answer a bare 404.
        .route(
            "/v1/services//instances/{id}",
            put(missing_name).delete(missing_name),
        )
        .route(
            "/v1/services/{name}/instances/",
            put(missing_id).delete(missing_id),
        )
        .route("/v1/registry", get(registry_info))
        .layer(DefaultBodyLimit::disable())
        .with_state(api)
}

async fn missing_name() -> ApiError {
    ApiError::bad_request("name: the service name is missing")
}

async fn missing_id() -> ApiError {
    ApiError::bad_request("id: the instance id is missing")
}

async fn register(
    State(api): State<Api>,
    Path((name, id)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    // Read at most the limit: a huge body is refused without being buffered.
    let body: Bytes = axum::body::to_bytes(body, BODY_BYTES_MAX)
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "body: over the limit of {BODY_BYTES_MAX} bytes (or unreadable)"
            ))
        })?;
    let registration: Registration =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let instance = registration
        .validate(&name, &id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let revision = api.registry.register(instance).await?;
    crate::mirror::wait_revision(api.catalog.clone(), revision, READ_YOUR_WRITES).await;
    Ok(index_response(
        revision,
        json!({"service": name, "id": id, "index": revision}),
    ))
}

async fn deregister(
    State(api): State<Api>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    validate_id(&id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let revision = api.registry.deregister(&name, &id).await?.ok_or_else(|| {
        ApiError::from(RegistryError::NotFound {
            service: name.clone(),
            id: id.clone(),
        })
    })?;
    crate::mirror::wait_revision(api.catalog.clone(), revision, READ_YOUR_WRITES).await;
    Ok(index_response(
        revision,
        json!({"service": name, "id": id, "index": revision}),
    ))
}

async fn heartbeat(
    State(api): State<Api>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    validate_id(&id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    api.registry.heartbeat(&name, &id).await?;
    Ok(Json(json!({"service": name, "id": id})).into_response())
}

fn index_response(index: i64, body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&index.to_string()) {
        response.headers_mut().insert("x-nines-index", value);
    }
    response
}

/// `?index=N&wait=D` of a blocking query.
struct Blocking {
    index: i64,
    wait: Duration,
}

fn blocking(query: &HashMap<String, String>) -> Result<Option<Blocking>, ApiError> {
    let Some(index) = query.get("index") else {
        return Ok(None);
    };
    let index: i64 = index
        .parse()
        .ok()
        .filter(|i: &i64| *i >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("index: {index:?} is not a revision")))?;
    let wait = match query.get("wait") {
        Some(w) => parse_duration("wait", &serde_json::Value::String(w.clone()))
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .min(BLOCKING_WAIT_MAX),
        None => BLOCKING_WAIT_DEFAULT,
    };
    Ok(Some(Blocking { index, wait }))
}

/// The catalog to answer from: at once, or once `index_of` passes the
/// blocking query's index (or its wait ends).
async fn catalog_for(
    api: &Api,
    query: &HashMap<String, String>,
    index_of: impl Fn(&Catalog) -> i64,
) -> Result<Arc<Catalog>, ApiError> {
    let mut receiver = api.catalog.clone();
    if let Some(b) = blocking(query)? {
        let _permit = api.blocking.try_acquire().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("over {BLOCKING_QUERIES_MAX} blocking queries are waiting; retry later"),
            )
        })?;
        let _ = tokio::time::timeout(
            b.wait,
            receiver.wait_for(|c| c.loaded && index_of(c) > b.index),
        )
        .await;
    }
    let catalog = receiver.borrow().clone();
    if !catalog.loaded {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the registry is not loaded yet",
        ));
    }
    Ok(catalog)
}

async fn list_services(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let catalog = catalog_for(&api, &query, |c| c.index).await?;
    let services: Vec<_> = catalog
        .services()
        .map(|(name, s)| {
            let mut tags: Vec<&str> = s
                .registered()
                .flat_map(|(_, i)| i.tags.iter().map(String::as_str))
                .collect();
            tags.sort_unstable();
            tags.dedup();
            json!({
                "name": name,
                "instances": s.registered().count(),
                "passing": s.healthy(None).count(),
                "tags": tags,
                "index": s.index,
            })
        })
        .collect();
    Ok(index_response(
        catalog.index,
        json!({"index": catalog.index, "services": services}),
    ))
}

async fn list_instances(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let healthy_only = match query.get("healthy").map(String::as_str) {
        None | Some("false") => false,
        Some("true") | Some("") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "healthy: {other:?} is not true or false"
            )))
        }
    };
    let tag = query.get("tag").cloned();
    let catalog = catalog_for(&api, &query, |c| c.service_index(&name)).await?;
    let index = catalog.service_index(&name);
    let instances: Vec<InstanceView> = catalog.service(&name).map_or_else(Vec::new, |s| {
        s.registered()
            .filter(|(e, _)| !healthy_only || e.is_healthy())
            .filter(|(_, i)| tag.as_ref().is_none_or(|t| i.tags.contains(t)))
            .map(|(e, i)| InstanceView::new(e, i))
            .collect()
    });
    Ok(index_response(
        index,
        json!({"service": name, "index": index, "instances": instances}),
    ))
}

async fn get_instance(
    State(api): State<Api>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let catalog = catalog_for(&api, &HashMap::new(), |c| c.index).await?;
    let view = catalog
        .service(&name)
        .and_then(|s| s.instances.get(&id))
        .and_then(|e| e.instance.as_ref().map(|i| InstanceView::new(e, i)))
        .ok_or_else(|| {
            ApiError::from(RegistryError::NotFound {
                service: name.clone(),
                id: id.clone(),
            })
        })?;
    Ok(index_response(catalog.service_index(&name), json!(view)))
}

async fn registry_info(State(api): State<Api>) -> Response {
    let catalog = api.catalog.borrow().clone();
    let checkers: Vec<&str> = catalog.checkers().collect();
    Json(json!({
        "member": api.member,
        "dns_addr": api.dns_addr.map(|a| a.to_string()),
        "checkers": checkers,
        "revision": catalog.revision,
        "loaded": catalog.loaded,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_build_without_conflicts() {
        // The client connects lazily: no store is needed to build the router.
        let registry = Registry::connect(&["http://127.0.0.1:1".to_string()])
            .await
            .expect("lazy client");
        let (_sender, catalog) = watch::channel(Arc::new(Catalog::default()));
        let _router = router(Api::new(registry, catalog, "n1".into(), None));
    }

    #[test]
    fn blocking_parameters_are_checked() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(blocking(&q(&[])).unwrap().is_none());
        let b = blocking(&q(&[("index", "7"), ("wait", "2s")]))
            .unwrap()
            .unwrap();
        assert_eq!((b.index, b.wait), (7, Duration::from_secs(2)));
        let capped = blocking(&q(&[("index", "7"), ("wait", "2h")]))
            .unwrap()
            .unwrap();
        assert_eq!(capped.wait, BLOCKING_WAIT_MAX);
        assert!(blocking(&q(&[("index", "-1")])).is_err());
        assert!(blocking(&q(&[("index", "x")])).is_err());
        assert!(blocking(&q(&[("index", "1"), ("wait", "-5s")])).is_err());
    }
}
