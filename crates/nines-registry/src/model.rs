//! What an instance is and what a registration may say. [`Registration`] is
//! the flat body of `PUT /v1/services/{name}/instances/{id}` and of
//! `nines service register`; [`Registration::validate`] turns it into an
//! [`Instance`] or a [`ValidationError`] naming the field, so bad input is
//! refused before anything is written. [`HealthRecord`] is the stored state
//! of an instance's check. Also the key layout under [`PREFIX`]. No I/O here.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limits::{
    CHECK_INTERVAL_MAX, CHECK_INTERVAL_MIN, DEREGISTER_AFTER_MAX, ID_BYTES_MAX, META_BYTES_MAX,
    META_ENTRIES_MAX, META_KEY_BYTES_MAX, NAME_BYTES_MAX, RISE_FALL_MAX, TAGS_MAX, TAG_BYTES_MAX,
    TTL_MAX, TTL_MIN, URL_BYTES_MAX,
};

/// Every registry key starts with this prefix.
pub const PREFIX: &str = "/nines/registry/";
/// Instances: `PREFIX services/NAME/instances/ID` = [`Instance`] JSON.
pub const SERVICES: &str = "/nines/registry/services/";
/// Check state: `PREFIX health/NAME/ID` = [`HealthRecord`] JSON.
pub const HEALTH: &str = "/nines/registry/health/";
/// TTL liveness: `PREFIX ttl/NAME/ID`, attached to the instance's lease.
pub const TTL: &str = "/nines/registry/ttl/";
/// Live checkers: `PREFIX checkers/MEMBER`, attached to the member's lease.
pub const CHECKERS: &str = "/nines/registry/checkers/";

/// The key of an instance record.
pub fn instance_key(service: &str, id: &str) -> String {
    format!("{SERVICES}{service}/instances/{id}")
}

/// The key of an instance's health record.
pub fn health_key(service: &str, id: &str) -> String {
    format!("{HEALTH}{service}/{id}")
}

/// The key kept alive by a TTL instance's heartbeats.
pub fn ttl_key(service: &str, id: &str) -> String {
    format!("{TTL}{service}/{id}")
}

/// The presence key of a checker (a member running checks).
pub fn checker_key(member: &str) -> String {
    format!("{CHECKERS}{member}")
}

/// How an instance's health is decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Check {
    /// No check: the instance is healthy while it is registered.
    None,
    /// The instance (or `nines service heartbeat`) must heartbeat within `ttl`.
    Ttl {
        /// How long a heartbeat keeps the instance healthy.
        ttl_ms: u64,
    },
    /// A GET of `url` must answer `status` (any 2xx when `None`).
    Http {
        /// The URL probed (http://IP:PORT/PATH).
        url: String,
        /// The status expected; any 2xx when absent.
        status: Option<u16>,
        /// Timing and thresholds.
        probe: Probe,
    },
    /// A TCP connection to `addr` must succeed.
    Tcp {
        /// The address probed.
        addr: std::net::SocketAddr,
        /// Timing and thresholds.
        probe: Probe,
    },
}

/// Timing and thresholds of an active check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Time between two probes, in milliseconds.
    pub interval_ms: u64,
    /// Longest a probe may take, in milliseconds.
    pub timeout_ms: u64,
    /// Consecutive successes that make a critical instance passing.
    pub rise: u32,
    /// Consecutive failures that make a passing instance critical.
    pub fall: u32,
}

impl Probe {
    /// The interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl Check {
    /// The active probe settings, for HTTP and TCP checks.
    pub fn probe(&self) -> Option<&Probe> {
        match self {
            Check::Http { probe, .. } | Check::Tcp { probe, .. } => Some(probe),
            Check::None | Check::Ttl { .. } => None,
        }
    }

    /// The lease TTL in whole seconds a TTL check uses (rounded up, at
    /// least the store's shortest lease).
    pub fn lease_ttl_secs(&self) -> Option<i64> {
        match self {
            Check::Ttl { ttl_ms } => Some(ttl_ms.div_ceil(1000).max(2) as i64),
            _ => None,
        }
    }
}

/// A registered instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Service name (a DNS label).
    pub service: String,
    /// Instance id, unique within the service.
    pub id: String,
    /// IP address clients connect to.
    pub address: IpAddr,
    /// Port clients connect to.
    pub port: u16,
    /// Relative weight (1..=65535), used by the gateway and in SRV answers.
    pub weight: u32,
    /// Tags, for filtering and `TAG.NAME.service.nines.`.
    pub tags: Vec<String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// How health is decided.
    pub check: Check,
    /// Remove the instance after it has been critical this long (ms).
    pub deregister_after_ms: Option<u64>,
    /// For TTL checks: the lease its heartbeats keep alive (0 = none yet).
    #[serde(default)]
    pub lease: i64,
}

impl Instance {
    /// The socket address clients connect to.
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.address, self.port)
    }
}

/// The state of an instance's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Healthy: served by DNS, discovery and the gateway.
    Passing,
    /// Unhealthy: hidden from healthy answers.
    Critical,
}

impl Status {
    /// The lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Critical => "critical",
        }
    }
}

/// The stored state of an instance's check; written only on a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    /// Current state.
    pub status: Status,
    /// Why (the last probe's result).
    pub output: String,
    /// Wall-clock time (ms since the Unix epoch) the state began.
    pub since_ms: u64,
    /// Which member wrote it.
    pub checker: String,
}

/// The body of a registration: flat JSON, the same names as the CLI flags.
/// Durations are strings such as `"500ms"`, `"1s"`, `"2m"` (or numbers of
/// seconds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Service name; taken from the URL path when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Instance id; taken from the URL path when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// IP address (IPv4 or IPv6 literal).
    #[serde(default)]
    pub address: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: Option<i64>,
    /// Weight (default 1).
    #[serde(default)]
    pub weight: Option<i64>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Metadata.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// `none` (default), `ttl`, `http` or `tcp`.
    #[serde(default)]
    pub check: Option<String>,
    /// URL for `http` checks.
    #[serde(default)]
    pub check_url: Option<String>,
    /// Expected status for `http` checks (default: any 2xx).
    #[serde(default)]
    pub check_status: Option<i64>,
    /// Address for `tcp` checks (default: address:port).
    #[serde(default)]
    pub check_addr: Option<String>,
    /// TTL of `ttl` checks.
    #[serde(default)]
    pub ttl: Option<serde_json::Value>,
    /// Interval of active checks (default 10s).
    #[serde(default)]
    pub interval: Option<serde_json::Value>,
    /// Timeout of active checks (default: the interval, at most 5s).
    #[serde(default)]
    pub timeout: Option<serde_json::Value>,
    /// Successes that make an instance passing (default 2).
    #[serde(default)]
    pub rise: Option<i64>,
    /// Failures that make an instance critical (default 2).
    #[serde(default)]
    pub fall: Option<i64>,
    /// Deregister after this long critical (default: never).
    #[serde(default)]
    pub deregister_after: Option<serde_json::Value>,
}

/// Why a registration was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field,
        reason: reason.into(),
    }
}

/// Checks a service name: a DNS label (a-z, 0-9, `-`), so it can be asked for
/// as `NAME.service.nines.`.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(invalid("name", "the service name is missing"));
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(invalid(
            "name",
            format!("{} bytes is over the limit of {NAME_BYTES_MAX}", name.len()),
        ));
    }
    let label_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !label_ok || name.starts_with('-') || name.ends_with('-') {
        return Err(invalid(
            "name",
            format!("{name:?} must be a DNS label: lowercase letters, digits and inner '-'"),
        ));
    }
    Ok(())
}

/// Checks an instance id: letters, digits, `.`, `_`, `-`.
pub fn validate_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() {
        return Err(invalid("id", "the instance id is missing"));
    }
    if id.len() > ID_BYTES_MAX {
        return Err(invalid(
            "id",
            format!("{} bytes is over the limit of {ID_BYTES_MAX}", id.len()),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "id",
            format!("{id:?} may hold only letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

/// Parses a duration: a string `"250ms"`, `"1.5s"`, `"2m"`, `"1h"`, or a
/// number of seconds. Negative, empty or unit-less strings are refused.
pub fn parse_duration(
    field: &'static str,
    value: &serde_json::Value,
) -> Result<Duration, ValidationError> {
    let (number, unit_ms) = match value {
        serde_json::Value::Number(n) => (
            n.as_f64()
                .ok_or_else(|| invalid(field, format!("{n} is not a number")))?,
            1000.0,
        ),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| c.is_ascii_alphabetic())
                .ok_or_else(|| invalid(field, format!("{s:?} needs a unit (ms, s, m, h)")))?;
            let (digits, unit) = s.split_at(split);
            let unit_ms = match unit {
                "ms" => 1.0,
                "s" => 1000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                other => return Err(invalid(field, format!("unknown unit {other:?} in {s:?}"))),
            };
            let number: f64 = digits
                .trim()
                .parse()
                .map_err(|_| invalid(field, format!("{s:?} is not a duration")))?;
            (number, unit_ms)
        }
        other => return Err(invalid(field, format!("{other} is not a duration"))),
    };
    if !number.is_finite() {
        return Err(invalid(field, "is not a finite duration"));
    }
    if number < 0.0 {
        return Err(invalid(field, format!("{value} is negative")));
    }
    let ms = number * unit_ms;
    if ms > 365.0 * 86_400_000.0 {
        return Err(invalid(field, format!("{value} is too long")));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

fn bounded_duration(
    field: &'static str,
    value: &serde_json::Value,
    min: Duration,
    max: Duration,
) -> Result<Duration, ValidationError> {
    let d = parse_duration(field, value)?;
    if d < min || d > max {
        return Err(invalid(
            field,
            format!("{value} must be between {min:?} and {max:?}"),
        ));
    }
    Ok(d)
}

fn bounded_int(
    field: &'static str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, ValidationError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(
            field,
            format!("{v} must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

impl Registration {
    /// Validates the body for instance `id` of service `name` (from the URL
    /// or the CLI; a body naming another service or id is refused).
    pub fn validate(&self, name: &str, id: &str) -> Result<Instance, ValidationError> {
        validate_name(name)?;
        validate_id(id)?;
        if self.name.as_deref().is_some_and(|n| n != name) {
            return Err(invalid(
                "name",
                "the body names another service than the URL",
            ));
        }
        if self.id.as_deref().is_some_and(|i| i != id) {
            return Err(invalid(
                "id",
                "the body names another instance than the URL",
            ));
        }
        let address_text = self
            .address
            .as_deref()
            .ok_or_else(|| invalid("address", "the address is missing"))?;
        let address: IpAddr = address_text.trim().parse().map_err(|_| {
            invalid(
                "address",
                format!("{address_text:?} is not an IPv4 or IPv6 address"),
            )
        })?;
        let port = self
            .port
            .ok_or_else(|| invalid("port", "the port is missing"))?;
        let port = bounded_int("port", Some(port), 0, 1, 65535)? as u16;
        let weight = bounded_int("weight", self.weight, 1, 1, 65535)? as u32;
        self.validate_tags_and_meta()?;
        let check = self.validate_check(address, port)?;
        let deregister_after_ms = self
            .deregister_after
            .as_ref()
            .map(|v| {
                bounded_duration(
                    "deregister_after",
                    v,
                    Duration::from_millis(0),
                    DEREGISTER_AFTER_MAX,
                )
            })
            .transpose()?
            .map(|d| d.as_millis() as u64);
        Ok(Instance {
            service: name.to_string(),
            id: id.to_string(),
            address,
            port,
            weight,
            tags: self.tags.clone(),
            meta: self.meta.clone(),
            check,
            deregister_after_ms,
            lease: 0,
        })
    }

    fn validate_tags_and_meta(&self) -> Result<(), ValidationError> {
        if self.tags.len() > TAGS_MAX {
            return Err(invalid(
                "tags",
                format!("{} tags is over the limit of {TAGS_MAX}", self.tags.len()),
            ));
        }
        for tag in &self.tags {
            if tag.len() > TAG_BYTES_MAX {
                return Err(invalid(
                    "tags",
                    format!(
                        "a tag of {} bytes is over the limit of {TAG_BYTES_MAX}",
                        tag.len()
                    ),
                ));
            }
            if validate_name(tag).is_err() {
                return Err(invalid(
                    "tags",
                    format!("{tag:?} must be a DNS label: lowercase letters, digits and inner '-'"),
                ));
            }
        }
        if self.meta.len() > META_ENTRIES_MAX {
            return Err(invalid(
                "meta",
                format!(
                    "{} entries is over the limit of {META_ENTRIES_MAX}",
                    self.meta.len()
                ),
            ));
        }
        let mut total = 0;
        for (k, v) in &self.meta {
            if k.is_empty() || k.len() > META_KEY_BYTES_MAX {
                return Err(invalid(
                    "meta",
                    format!("key {k:?} must be 1 to {META_KEY_BYTES_MAX} bytes"),
                ));
            }
            total += k.len() + v.len();
        }
        if total > META_BYTES_MAX {
            return Err(invalid(
                "meta",
                format!("{total} bytes is over the limit of {META_BYTES_MAX}"),
            ));
        }
        Ok(())
    }

    fn validate_probe(&self) -> Result<Probe, ValidationError> {
        let interval = match &self.interval {
            Some(v) => bounded_duration("interval", v, CHECK_INTERVAL_MIN, CHECK_INTERVAL_MAX)?,
            None => Duration::from_secs(10),
        };
        let timeout = match &self.timeout {
            Some(v) => bounded_duration("timeout", v, Duration::from_millis(10), interval)?,
            None => interval.min(Duration::from_secs(5)),
        };
        let rise = bounded_int("rise", self.rise, 2, 1, RISE_FALL_MAX)? as u32;
        let fall = bounded_int("fall", self.fall, 2, 1, RISE_FALL_MAX)? as u32;
        Ok(Probe {
            interval_ms: interval.as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
            rise,
            fall,
        })
    }

    fn validate_check(&self, address: IpAddr, port: u16) -> Result<Check, ValidationError> {
        let kind = self.check.as_deref().unwrap_or("none");
        match kind {
            "none" => Ok(Check::None),
            "ttl" => {
                let ttl = self
                    .ttl
                    .as_ref()
                    .ok_or_else(|| invalid("ttl", "a ttl check needs `ttl`"))?;
                let ttl = bounded_duration("ttl", ttl, TTL_MIN, TTL_MAX)?;
                Ok(Check::Ttl {
                    ttl_ms: ttl.as_millis() as u64,
                })
            }
            "http" => {
                let url = self.check_url.clone().unwrap_or_else(|| {
                    format!("http://{}/", std::net::SocketAddr::new(address, port))
                });
                validate_check_url(&url)?;
                let status = self
                    .check_status
                    .map(|s| bounded_int("check_status", Some(s), 200, 100, 599))
                    .transpose()?
                    .map(|s| s as u16);
                Ok(Check::Http {
                    url,
                    status,
                    probe: self.validate_probe()?,
                })
            }
            "tcp" => {
                let addr = match &self.check_addr {
                    Some(text) => text
                        .trim()
                        .parse()
                        .map_err(|_| invalid("check_addr", format!("{text:?} is not IP:PORT")))?,
                    None => std::net::SocketAddr::new(address, port),
                };
                Ok(Check::Tcp {
                    addr,
                    probe: self.validate_probe()?,
                })
            }
            other => Err(invalid(
                "check",
                format!("unknown check type {other:?}; use none, ttl, http or tcp"),
            )),
        }
    }
}

/// Checks an HTTP check URL: `http://IP:PORT/...` (the checker does not
/// resolve names).
pub fn validate_check_url(url: &str) -> Result<(), ValidationError> {
    if url.len() > URL_BYTES_MAX {
        return Err(invalid(
            "check_url",
            format!("{} bytes is over the limit of {URL_BYTES_MAX}", url.len()),
        ));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| invalid("check_url", format!("{url:?} is not a URL")))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "check_url",
            format!("{url:?} must start with http://"),
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("check_url", format!("{url:?} has no host")))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.parse::<IpAddr>().is_err() || authority.port_u16().is_none() {
        return Err(invalid(
            "check_url",
            format!("{url:?} must name an IP address and a port"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Registration {
        serde_json::from_str(json).expect("valid json")
    }

    #[test]
    fn http_registration_gets_defaults_and_probe() {
        let r = body(
            r#"{"address":"127.0.0.1","port":8081,"tags":["v1"],"check":"http",
                "check_url":"http://127.0.0.1:8081/health","interval":"1s","timeout":"500ms","rise":3,"fall":2}"#,
        );
        let i = r.validate("web", "web-1").expect("valid");
        assert_eq!(i.weight, 1);
        assert_eq!(
            i.check,
            Check::Http {
                url: "http://127.0.0.1:8081/health".into(),
                status: None,
                probe: Probe {
                    interval_ms: 1000,
                    timeout_ms: 500,
                    rise: 3,
                    fall: 2
                }
            }
        );
    }

    #[test]
    fn bad_registrations_name_the_field() {
        let cases = [
            (r#"{"address":"nope","port":1}"#, "address"),
            (r#"{"port":1}"#, "address"),
            (r#"{"address":"127.0.0.1"}"#, "port"),
            (r#"{"address":"127.0.0.1","port":70000}"#, "port"),
            (
                r#"{"address":"127.0.0.1","port":1,"check":"smoke"}"#,
                "check",
            ),
            (
                r#"{"address":"127.0.0.1","port":1,"check":"tcp","interval":"-1s"}"#,
                "interval",
            ),
            (r#"{"address":"127.0.0.1","port":1,"check":"ttl"}"#, "ttl"),
            (
                r#"{"address":"127.0.0.1","port":1,"check":"http","check_url":"ftp://x"}"#,
                "check_url",
            ),
            (r#"{"address":"127.0.0.1","port":1,"weight":0}"#, "weight"),
        ];
        for (json, field) in cases {
            let err = body(json).validate("web", "w1").expect_err(json);
            assert_eq!(err.field, field, "{json}: {err}");
        }
        let huge = format!(
            r#"{{"address":"127.0.0.1","port":1,"meta":{{"blob":"{}"}}}}"#,
            "x".repeat(100_000)
        );
        assert_eq!(body(&huge).validate("web", "w1").unwrap_err().field, "meta");
        assert_eq!(
            Registration::default()
                .validate("", "w1")
                .unwrap_err()
                .field,
            "name"
        );
        assert_eq!(
            Registration::default()
                .validate("Web_1", "w1")
                .unwrap_err()
                .field,
            "name"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        let d = |s: &str| parse_duration("x", &serde_json::Value::String(s.into()));
        assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(d("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(d("2m").unwrap(), Duration::from_secs(120));
        assert!(d("-1s").is_err());
        assert!(d("10").is_err());
        assert!(d("1y").is_err());
        assert_eq!(
            parse_duration("x", &serde_json::json!(3)).unwrap(),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn ttl_lease_rounds_up_to_the_store_minimum() {
        assert_eq!(Check::Ttl { ttl_ms: 500 }.lease_ttl_secs(), Some(2));
        assert_eq!(Check::Ttl { ttl_ms: 2500 }.lease_ttl_secs(), Some(3));
    }
}
