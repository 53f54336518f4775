//! The gateway's TOML configuration: parsing, defaults and validation.
//!
//! This module owns the config shape of DESIGN.md ("Gateway config") and
//! turns every mistake into a [`ConfigError`] naming the file, the line, the
//! column and the reason. It builds nothing at run time: the proxy reads the
//! validated [`Config`] and never re-checks it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("{path}:{line}:{column}: {reason}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file parsed, but a value is not allowed (unknown cluster, bad weight...).
    #[error("{path}:{line}:{column}: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, when it points at one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Parse { line, .. } | ConfigError::Invalid { line, .. } => Some(*line),
        }
    }
}

/// A whole gateway config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// The listeners, in file order.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// The clusters, in file order.
    #[serde(default, rename = "cluster")]
    pub clusters: Vec<ClusterConfig>,
}

/// The `[gateway]` table.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Tokio worker threads; `None` means the number of cores.
    pub worker_threads: Option<usize>,
    /// Address of the admin listener (`/admin/backends`, `/admin/reload`, `/metrics`).
    pub admin: Option<SocketAddr>,
    /// Whether to write one structured access-log event per request.
    #[serde(default)]
    pub access_log: bool,
    /// How long graceful shutdown waits for connections to finish.
    #[serde(default, deserialize_with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
}

/// Protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
    Http,
    /// Raw TCP: bytes are proxied unchanged.
    Tcp,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in metrics and to keep a listener across reloads.
    pub name: Spanned<String>,
    /// Address to bind.
    pub bind: Spanned<SocketAddr>,
    /// `http` or `tcp`.
    pub protocol: Protocol,
    /// Routes, first match wins (http only).
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    /// Default cluster when no route matches (http), or the cluster (tcp).
    pub cluster: Option<Spanned<String>>,
    /// Time allowed for a client to send a complete request head.
    #[serde(default, deserialize_with = "opt_duration")]
    pub header_read_timeout: Option<Duration>,
    /// Idle keep-alive connections are closed after this long.
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Limit on a whole request, from head to the end of the response head.
    #[serde(default, deserialize_with = "opt_duration")]
    pub request_timeout: Option<Duration>,
    /// Largest request head in bytes.
    pub header_bytes_max: Option<usize>,
    /// Largest number of request header fields.
    pub header_count_max: Option<usize>,
    /// Largest request body in bytes.
    pub body_bytes_max: Option<u64>,
}

/// One `[[listener.route]]`: every matcher given must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name shown in the route's metrics; without one they show its match.
    pub name: Option<String>,
    /// Host (without port), compared case-insensitively.
    pub host: Option<String>,
    /// The path must start with this.
    pub path_prefix: Option<String>,
    /// The path must equal this.
    pub path: Option<String>,
    /// Each header must be present with exactly this value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The method must be one of these.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Target cluster.
    pub cluster: Spanned<String>,
}

impl RouteConfig {
    /// How metrics name the route: its `name`, or else its matchers as
    /// configured (`host=example.com path_prefix=/api`), or `*` when it has
    /// none. Counters are kept across reloads by this label.
    pub fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host={host}"));
        }
        if let Some(path) = &self.path {
            parts.push(format!("path={path}"));
        }
        if let Some(prefix) = &self.path_prefix {
            parts.push(format!("path_prefix={prefix}"));
        }
        for (name, value) in &self.headers {
            parts.push(format!("header:{name}={value}"));
        }
        if !self.methods.is_empty() {
            parts.push(format!("method={}", self.methods.join("|")));
        }
        if parts.is_empty() {
            "*".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// Balancing algorithm of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceKind {
    /// Plain round robin, ignoring weights.
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm).
    WeightedRoundRobin,
    /// Fewest active connections relative to weight.
    LeastConnections,
    /// Peak EWMA latency with power-of-two choices.
    LeastResponseTime,
    /// Hash of the client address modulo the backend list.
    IpHash,
    /// Maglev consistent hashing on `hash_key`.
    ConsistentHash,
    /// Uniform random choice.
    Random,
    /// Two random choices, the one with fewer active connections wins.
    PowerOfTwo,
}

/// One backend of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Address of the backend.
    pub addr: Spanned<SocketAddr>,
    /// Relative weight, 1 by default.
    #[serde(default = "default_weight")]
    pub weight: Spanned<u32>,
}

fn default_weight() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// One `[[cluster]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name referenced by routes.
    pub name: Spanned<String>,
    /// The balancing algorithm.
    #[serde(default = "default_balance")]
    pub balance: BalanceKind,
    /// Where consistent hashing finds its key: `source_ip`, `header:NAME`, `cookie:NAME`, `path`.
    pub hash_key: Option<Spanned<String>>,
    /// Static backends.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// A registry service to follow instead of static backends.
    pub service: Option<String>,
    /// Active health checks.
    pub health: Option<HealthConfig>,
    /// Passive outlier detection.
    pub passive: Option<PassiveConfig>,
    /// Retries on failure.
    pub retry: Option<RetryConfig>,
    /// Time allowed to open a connection to a backend.
    #[serde(default, deserialize_with = "opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Time allowed for a backend to send its response head.
    #[serde(default, deserialize_with = "opt_duration")]
    pub response_timeout: Option<Duration>,
    /// Most concurrent requests per backend (circuit breaking); 0 means no limit.
    #[serde(default)]
    pub backend_connections_max: u32,
    /// How long a request waits when every backend is at its limit.
    #[serde(default, deserialize_with = "opt_duration")]
    pub queue_timeout: Option<Duration>,
    /// Cookie naming the backend a client sticks to.
    pub sticky_cookie: Option<String>,
    /// A backend coming back gets a share of traffic that grows over this time.
    #[serde(default, deserialize_with = "opt_duration")]
    pub slow_start: Option<Duration>,
}

fn default_balance() -> BalanceKind {
    BalanceKind::RoundRobin
}

/// Kind of active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    /// An HTTP GET whose status must be the expected one.
    Http,
    /// A TCP connect.
    Tcp,
}

/// `[cluster.health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `http` or `tcp`.
    pub kind: HealthKind,
    /// Path for http checks.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Expected status for http checks; any 2xx when absent.
    pub expect_status: Option<u16>,
    /// Time between checks.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// Time allowed for one check.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Successes in a row that bring a backend back.
    pub rise: Spanned<u32>,
    /// Failures in a row that take a backend out.
    pub fall: Spanned<u32>,
}

fn default_health_path() -> String {
    "/".to_owned()
}

/// `[cluster.passive]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Failures in a row (connect failure, reset, timeout) that eject a backend.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Whether a 5xx response counts as a failure.
    #[serde(default)]
    pub count_5xx: bool,
    /// Base ejection time; it grows with repeated ejections.
    #[serde(default = "default_ejection_time", deserialize_with = "duration")]
    pub ejection_time: Duration,
}

fn default_consecutive_failures() -> u32 {
    3
}

fn default_ejection_time() -> Duration {
    Duration::from_secs(10)
}

/// What makes a request eligible for a retry on another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The backend refused or did not accept the connection.
    ConnectFailure,
    /// The connection broke before a response head arrived.
    Reset,
    /// No response head within `response_timeout`.
    Timeout,
    /// Any 5xx status.
    #[serde(rename = "5xx")]
    Status5xx,
    /// 502 Bad Gateway.
    #[serde(rename = "502")]
    Status502,
    /// 503 Service Unavailable.
    #[serde(rename = "503")]
    Status503,
    /// 504 Gateway Timeout.
    #[serde(rename = "504")]
    Status504,
}

/// `[cluster.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Total attempts including the first one.
    pub attempts: Spanned<u32>,
    /// Conditions that allow a retry.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
    /// Retry non-idempotent methods too (connect failures are always retried).
    #[serde(default)]
    pub all_methods: bool,
    /// Retries allowed as a percentage of requests (per second window).
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the percentage.
    #[serde(default = "default_budget_min")]
    pub budget_min_per_sec: u32,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Timeout]
}

fn default_budget_percent() -> u32 {
    20
}

fn default_budget_min() -> u32 {
    10
}

/// Where consistent hashing and sticky choices find their key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client address.
    SourceIp,
    /// A request header (lower-case name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// The request path.
    Path,
}

impl HashKey {
    /// Parses `source_ip`, `header:NAME`, `cookie:NAME` or `path`.
    pub fn parse(text: &str) -> Option<HashKey> {
        match text {
            "source_ip" => Some(HashKey::SourceIp),
            "path" => Some(HashKey::Path),
            _ => {
                if let Some(name) = text.strip_prefix("header:") {
                    http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                    Some(HashKey::Header(name.to_ascii_lowercase()))
                } else if let Some(name) = text.strip_prefix("cookie:") {
                    (!name.is_empty()).then(|| HashKey::Cookie(name.to_owned()))
                } else {
                    None
                }
            }
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| {
            let (line, column) = line_column(text, error.span().map_or(0, |span| span.start));
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                reason: error.message().to_owned(),
            }
        })?;
        config.validate().map_err(|(span, reason)| {
            let (line, column) = line_column(text, span.start);
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                reason,
            }
        })?;
        Ok(config)
    }

    /// Checks references and ranges; returns the span at fault and the reason.
    fn validate(&self) -> Result<(), (Range<usize>, String)> {
        if self.gateway.worker_threads == Some(0) {
            return Err((0..0, "gateway.worker_threads must be at least 1".into()));
        }
        let mut cluster_names = HashSet::new();
        for cluster in &self.clusters {
            let name = cluster.name.get_ref();
            if !cluster_names.insert(name.as_str()) {
                return Err((
                    cluster.name.span(),
                    format!("duplicate cluster name {name:?}"),
                ));
            }
            validate_cluster(cluster)?;
        }
        let mut listener_names = HashSet::new();
        let mut binds = HashSet::new();
        for listener in &self.listeners {
            let name = listener.name.get_ref();
            if !listener_names.insert(name.as_str()) {
                return Err((
                    listener.name.span(),
                    format!("duplicate listener name {name:?}"),
                ));
            }
            // Port 0 asks the system for a free port, so it never clashes.
            let bind = *listener.bind.get_ref();
            if bind.port() != 0 && !binds.insert(bind) {
                return Err((
                    listener.bind.span(),
                    "two listeners bind the same address".into(),
                ));
            }
            if bind.port() != 0 && self.gateway.admin == Some(bind) {
                return Err((
                    listener.bind.span(),
                    "listener binds the admin address".into(),
                ));
            }
            let refs = listener
                .route
                .iter()
                .map(|route| &route.cluster)
                .chain(listener.cluster.iter());
            for cluster in refs {
                if !cluster_names.contains(cluster.get_ref().as_str()) {
                    let reason = format!("unknown cluster {:?}", cluster.get_ref());
                    return Err((cluster.span(), reason));
                }
            }
            match listener.protocol {
                Protocol::Tcp if listener.cluster.is_none() => {
                    return Err((
                        listener.name.span(),
                        "a tcp listener needs `cluster`".into(),
                    ));
                }
                Protocol::Tcp if !listener.route.is_empty() => {
                    return Err((listener.name.span(), "a tcp listener has no routes".into()));
                }
                Protocol::Http if listener.route.is_empty() && listener.cluster.is_none() => {
                    return Err((
                        listener.name.span(),
                        "an http listener needs a route or `cluster`".into(),
                    ));
                }
                _ => {}
            }
            for route in &listener.route {
                for method in &route.methods {
                    if http::Method::from_bytes(method.as_bytes()).is_err() {
                        return Err((route.cluster.span(), format!("invalid method {method:?}")));
                    }
                }
                for header in route.headers.keys() {
                    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                        return Err((
                            route.cluster.span(),
                            format!("invalid header name {header:?}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn validate_cluster(cluster: &ClusterConfig) -> Result<(), (Range<usize>, String)> {
    let name_span = cluster.name.span();
    if cluster.backends.is_empty() && cluster.service.is_none() {
        return Err((name_span, "a cluster needs `backends` or `service`".into()));
    }
    let mut addrs = HashSet::new();
    for backend in &cluster.backends {
        if *backend.weight.get_ref() == 0 || *backend.weight.get_ref() > 10_000 {
            let span = if backend.weight.span().is_empty() {
                backend.addr.span()
            } else {
                backend.weight.span()
            };
            return Err((span, "weight must be between 1 and 10000".into()));
        }
        if !addrs.insert(*backend.addr.get_ref()) {
            return Err((backend.addr.span(), "duplicate backend address".into()));
        }
    }
    match (&cluster.hash_key, cluster.balance) {
        (Some(key), _) if HashKey::parse(key.get_ref()).is_none() => {
            let reason = format!(
                "invalid hash_key {:?}: expected source_ip, header:NAME, cookie:NAME or path",
                key.get_ref()
            );
            return Err((key.span(), reason));
        }
        (None, BalanceKind::ConsistentHash) => {
            return Err((name_span, "consistent_hash needs `hash_key`".into()));
        }
        _ => {}
    }
    if let Some(health) = &cluster.health {
        for count in [&health.rise, &health.fall] {
            if *count.get_ref() == 0 || *count.get_ref() > 1000 {
                return Err((
                    count.span(),
                    "rise and fall must be between 1 and 1000".into(),
                ));
            }
        }
        if health.interval.is_zero() || health.timeout.is_zero() {
            return Err((
                name_span,
                "health interval and timeout must be positive".into(),
            ));
        }
    }
    if let Some(retry) = &cluster.retry {
        if *retry.attempts.get_ref() == 0 || *retry.attempts.get_ref() > 10 {
            return Err((
                retry.attempts.span(),
                "attempts must be between 1 and 10".into(),
            ));
        }
    }
    Ok(())
}

/// Converts a byte offset into a 1-based line and column.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |at| at + 1);
    (line, offset - line_start + 1)
}

/// Parses `250ms`, `2s`, `1m`, `1h` or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" | "" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(number.checked_mul(3600)?)),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationText {
    Text(String),
    Millis(u64),
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match DurationText::deserialize(deserializer)? {
        DurationText::Millis(ms) => Ok(Duration::from_millis(ms)),
        DurationText::Text(text) => parse_duration(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: expected e.g. \"500ms\" or \"2s\""
            ))
        }),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALLEST: &str = r#"
[gateway]
worker_threads = 2            # default: number of cores

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
protocol = "http"             # or "tcp"

[[listener.route]]            # optional; first match wins
path_prefix = "/"
cluster = "web"

[[cluster]]
name = "web"
balance = "round_robin"
backends = [{ addr = "127.0.0.1:8081", weight = 1 }, { addr = "127.0.0.1:8082" }]

[cluster.health]
kind = "http"                 # or "tcp"
path = "/"
interval = "500ms"
timeout = "300ms"
rise = 2
fall = 2

[cluster.retry]
attempts = 3
on = ["connect-failure", "reset", "timeout"]
"#;

    #[test]
    fn a_route_is_labelled_by_its_name_or_else_its_match() {
        let text = format!(
            "{SMALLEST}\n[[listener]]\nname = \"more\"\nbind = \"127.0.0.1:8090\"\nprotocol = \"http\"\n\
             [[listener.route]]\nname = \"api\"\npath_prefix = \"/api\"\ncluster = \"web\"\n\
             [[listener.route]]\nhost = \"example.com\"\npath = \"/x\"\nmethods = [\"GET\", \"HEAD\"]\n\
             headers = {{ x-env = \"prod\" }}\ncluster = \"web\"\n\
             [[listener.route]]\ncluster = \"web\"\n"
        );
        let config = Config::parse(Path::new("gw.toml"), &text).expect("valid");
        let labels: Vec<String> = config.listeners[1]
            .route
            .iter()
            .map(RouteConfig::label)
            .collect();
        assert_eq!(
            labels,
            [
                "api",
                "host=example.com path=/x header:x-env=prod method=GET|HEAD",
                "*"
            ]
        );
        assert_eq!(config.listeners[0].route[0].label(), "path_prefix=/");
    }

    #[test]
    fn design_example_parses() {
        let config =
            Config::parse(Path::new("gw.toml"), SMALLEST).expect("the DESIGN.md example is valid");
        assert_eq!(config.gateway.worker_threads, Some(2));
        assert_eq!(config.listeners[0].route[0].cluster.get_ref(), "web");
        let cluster = &config.clusters[0];
        assert_eq!(cluster.backends.len(), 2);
        assert_eq!(*cluster.backends[1].weight.get_ref(), 1);
        let health = cluster.health.as_ref().expect("health");
        assert_eq!(health.interval, Duration::from_millis(500));
        assert_eq!(
            *cluster.retry.as_ref().expect("retry").attempts.get_ref(),
            3
        );
    }

    #[test]
    fn unknown_cluster_names_the_line() {
        let text = SMALLEST.replace("cluster = \"web\"", "cluster = \"nope\"");
        let error = Config::parse(Path::new("gw.toml"), &text).expect_err("unknown cluster");
        let message = error.to_string();
        assert!(message.starts_with("gw.toml:12:"), "{message}");
        assert!(message.contains("unknown cluster \"nope\""), "{message}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let text = SMALLEST.replace("rise = 2", "rise = = 2");
        let error = Config::parse(Path::new("gw.toml"), &text).expect_err("bad syntax");
        assert_eq!(error.line(), Some(24), "{error}");
    }

    #[test]
    fn bad_duration_and_balance_are_refused() {
        let text = SMALLEST.replace("\"500ms\"", "\"5 parsecs\"");
        let error = Config::parse(Path::new("gw.toml"), &text).expect_err("bad duration");
        assert_eq!(error.line(), Some(22), "{error}");
        assert!(error.to_string().contains("invalid duration"), "{error}");
        let text = SMALLEST.replace("round_robin", "fastest");
        let error = Config::parse(Path::new("gw.toml"), &text).expect_err("bad balance");
        assert_eq!(error.line(), Some(16), "{error}");
    }

    #[test]
    fn zero_weight_and_bad_hash_key_are_refused() {
        let text = SMALLEST.replace("weight = 1", "weight = 0");
        let error = Config::parse(Path::new("gw.toml"), &text).expect_err("zero weight");
        assert!(error.to_string().contains("gw.toml:17:"), "{error}");
        let text = SMALLEST.replace(
            "balance = \"round_robin\"",
            "balance = \"consistent_hash\"\nhash_key = \"body\"",
        );
        let error = Config::parse(Path::new("gw.toml"), &text).expect_err("bad hash key");
        assert!(error.to_string().contains("invalid hash_key"), "{error}");
        assert_eq!(error.line(), Some(17), "{error}");
    }

    #[test]
    fn full_example_parses() {
        let text = include_str!("../gateway.example.toml");
        let config =
            Config::parse(Path::new("gateway.example.toml"), text).expect("the example is valid");
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.clusters.len(), 3);
        assert_eq!(config.clusters[0].balance, BalanceKind::WeightedRoundRobin);
        assert_eq!(
            config.clusters[0].retry.as_ref().expect("retry").on.len(),
            6
        );
    }

    #[test]
    fn hash_keys_parse() {
        assert_eq!(HashKey::parse("source_ip"), Some(HashKey::SourceIp));
        assert_eq!(
            HashKey::parse("header:X-User"),
            Some(HashKey::Header("x-user".into()))
        );
        assert_eq!(
            HashKey::parse("cookie:sid"),
            Some(HashKey::Cookie("sid".into()))
        );
        assert_eq!(HashKey::parse("path"), Some(HashKey::Path));
        assert_eq!(HashKey::parse("cookie:"), None);
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("x"), None);
    }
}
