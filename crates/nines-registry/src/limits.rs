//! Every bound of the registry in one place: sizes of what may be
//! registered, timing ranges of checks, and the sizes of answers. Input from
//! the network is checked against these before anything is stored.

use std::time::Duration;

/// Longest service name (a DNS label).
pub const NAME_BYTES_MAX: usize = 63;
/// Longest instance id.
pub const ID_BYTES_MAX: usize = 128;
/// Most tags on one instance.
pub const TAGS_MAX: usize = 32;
/// Longest tag (a DNS label).
pub const TAG_BYTES_MAX: usize = 63;
/// Most metadata entries on one instance.
pub const META_ENTRIES_MAX: usize = 64;
/// Longest metadata key.
pub const META_KEY_BYTES_MAX: usize = 128;
/// Most metadata bytes (keys and values) on one instance.
pub const META_BYTES_MAX: usize = 4096;
/// Longest HTTP check URL.
pub const URL_BYTES_MAX: usize = 2048;
/// Largest registration body accepted over HTTP.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Shortest interval of an active check.
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_millis(100);
/// Longest interval of an active check.
pub const CHECK_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Most consecutive results `rise` or `fall` may ask for.
pub const RISE_FALL_MAX: i64 = 100;
/// Shortest TTL of a TTL check: the store's shortest lease.
pub const TTL_MIN: Duration = Duration::from_secs(2);
/// Longest TTL of a TTL check.
pub const TTL_MAX: Duration = Duration::from_secs(86_400);
/// Longest `deregister_after`.
pub const DEREGISTER_AFTER_MAX: Duration = Duration::from_secs(30 * 86_400);
/// Longest `wait` of a blocking query.
pub const BLOCKING_WAIT_MAX: Duration = Duration::from_secs(600);
/// Most blocking queries waiting at once on one member; more get 429.
pub const BLOCKING_QUERIES_MAX: usize = 4096;
/// `wait` of a blocking query that names none.
pub const BLOCKING_WAIT_DEFAULT: Duration = Duration::from_secs(300);
/// TTL of a checker's presence lease, in seconds: a dead member's checks
/// move to the others after at most this long.
pub const CHECKER_LEASE_TTL_SECS: i64 = 2;
/// How often a checker renews its presence lease.
pub const CHECKER_KEEPALIVE: Duration = Duration::from_millis(500);
/// How often a checker re-reads ownership, TTLs and deregistration times
/// even when nothing changed.
pub const RECONCILE_PERIOD: Duration = Duration::from_millis(200);
/// Most HTTP response bytes a check reads (only the status line matters).
pub const CHECK_RESPONSE_BYTES_MAX: usize = 4096;
/// UDP DNS answers without EDNS fit in this many bytes (RFC 1035).
pub const DNS_UDP_BYTES_DEFAULT: u16 = 512;
/// Most records in one DNS answer.
pub const DNS_RECORDS_MAX: usize = 256;

const _: () = assert!(CHECKER_KEEPALIVE.as_millis() * 3 < CHECKER_LEASE_TTL_SECS as u128 * 1000);
const _: () = assert!(META_KEY_BYTES_MAX < META_BYTES_MAX);
const _: () = assert!(META_BYTES_MAX < BODY_BYTES_MAX);
const _: () = assert!(BLOCKING_WAIT_DEFAULT.as_secs() <= BLOCKING_WAIT_MAX.as_secs());
