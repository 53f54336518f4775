//! Gateway request outcomes as the store keeps them: per service, per
//! minute and per hour, one key per gateway holding the bucket's total
//! (`{"requests", "failed"}`) under
//! `/nines/availability/requests/SERVICE/{m,h}/START_MS/GATEWAY`. Minutes
//! are kept 2 days (the report's 1 h and 24 h windows), hours 31 days (7 d
//! and 30 d), so a report reads a few thousand keys, not 43 200 per
//! gateway. [`DeltaTracker`] turns samples of cumulative counters into
//! increments, robust to a counter that starts over; [`Buckets`] adds them
//! up and says which totals changed since they were written. Pure
//! arithmetic plus the reads the report needs; the writing is
//! [`crate::gateway_report`]'s.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};

use crate::store::{prefix_end, Registry};

/// Request buckets: `REQUESTS SERVICE/{m,h}/START_MS/GATEWAY` = [`Outcomes`].
pub const REQUESTS: &str = "/nines/availability/requests/";
/// Services that ever had gateway traffic: `REQUEST_SERVICES SERVICE` = "".
pub const REQUEST_SERVICES: &str = "/nines/availability/request-services/";
/// Most counter sources remembered; beyond it, unseen ones are forgotten.
const SOURCES_REMEMBERED_MAX: usize = 10_000;
/// Most buckets kept in memory while the store cannot be written.
const BUCKETS_HELD_MAX: usize = 10_000;
/// Most bytes of a gateway or service name in a key.
const NAME_BYTES_MAX: usize = 128;

const _: () = assert!(Resolution::Hour.retention_ms() > 30 * 86_400_000);
const _: () = assert!(Resolution::Minute.retention_ms() > 86_400_000);

/// The two sizes of bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    /// One minute, kept 2 days: the 1 h and 24 h windows.
    Minute,
    /// One hour, kept 31 days: the 7 d and 30 d windows.
    Hour,
}

impl Resolution {
    /// Both resolutions; every request counts in one bucket of each.
    pub const ALL: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

    /// The length of a bucket.
    pub const fn length_ms(self) -> u64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
        }
    }

    /// How long buckets are kept.
    pub const fn retention_ms(self) -> u64 {
        match self {
            Resolution::Minute => 2 * 86_400_000,
            Resolution::Hour => 31 * 86_400_000,
        }
    }

    /// The start of the bucket holding `at_ms`.
    pub fn start(self, at_ms: u64) -> u64 {
        at_ms - at_ms % self.length_ms()
    }

    /// The resolution a report window of `length_ms` is summed from.
    pub fn for_window(length_ms: u64) -> Resolution {
        if length_ms <= 86_400_000 {
            Resolution::Minute
        } else {
            Resolution::Hour
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Resolution::Minute => "m",
            Resolution::Hour => "h",
        }
    }
}

/// One bucket of one service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketId {
    /// The service (or cluster) name.
    pub service: String,
    /// Its size.
    pub resolution: Resolution,
    /// Its start, ms since the Unix epoch.
    pub start_ms: u64,
}

impl BucketId {
    /// The bucket of `resolution` holding `at_ms`.
    pub fn at(service: &str, resolution: Resolution, at_ms: u64) -> BucketId {
        BucketId {
            service: service.to_owned(),
            resolution,
            start_ms: resolution.start(at_ms),
        }
    }

    /// Its key for `gateway`.
    pub fn key(&self, gateway: &str) -> String {
        format!(
            "{}{:020}/{gateway}",
            bucket_prefix(&self.service, self.resolution),
            self.start_ms
        )
    }
}

/// The prefix of `service`'s buckets of `resolution`.
pub fn bucket_prefix(service: &str, resolution: Resolution) -> String {
    format!("{REQUESTS}{service}/{}/", resolution.tag())
}

/// Requests and how many of them failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Requests.
    pub requests: u64,
    /// Failed requests (5xx answered, or upstream failures).
    pub failed: u64,
}

impl Outcomes {
    /// Adds `other` (saturating).
    pub fn add(&mut self, other: Outcomes) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failed = self.failed.saturating_add(other.failed);
    }

    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.requests == 0 && self.failed == 0
    }
}

/// `name` as it may appear in a key: ASCII letters, digits, `-`, `_`, `.`
/// and `:` are kept, anything else becomes `_` (registry service names pass
/// unchanged).
pub fn key_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(NAME_BYTES_MAX);
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Turns samples of cumulative counters into increments. A counter that went
/// down started over (a restarted process, a backend rebuilt), so the whole
/// new value is the increment; a source seen for the first time counts from
/// zero, since gateway counters start at zero.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    last: HashMap<String, Outcomes>,
}

impl DeltaTracker {
    /// The increment of `source` since its previous sample.
    pub fn delta(&mut self, source: &str, current: Outcomes) -> Outcomes {
        let last = self
            .last
            .insert(source.to_owned(), current)
            .unwrap_or_default();
        if current.requests < last.requests || current.failed < last.failed {
            current
        } else {
            Outcomes {
                requests: current.requests - last.requests,
                failed: current.failed - last.failed,
            }
        }
    }

    /// Forgets sources not in `seen` once more than the bound are known. A
    /// source that vanished keeps its last value until then, so one that
    /// comes back with the same counters is not counted twice.
    pub fn bound(&mut self, seen: &HashSet<String>) {
        if self.last.len() > SOURCES_REMEMBERED_MAX {
            self.last.retain(|source, _| seen.contains(source));
        }
    }
}

/// The totals of one gateway's buckets, and which of them changed since
/// they were last written.
#[derive(Debug, Default)]
pub struct Buckets {
    totals: BTreeMap<BucketId, Outcomes>,
    dirty: BTreeSet<BucketId>,
}

impl Buckets {
    /// Adds `delta` to `service`'s buckets (one per resolution) holding `at_ms`.
    pub fn add(&mut self, service: &str, at_ms: u64, delta: Outcomes) {
        if delta.is_zero() {
            return;
        }
        for resolution in Resolution::ALL {
            let id = BucketId::at(service, resolution, at_ms);
            self.totals.entry(id.clone()).or_default().add(delta);
            self.dirty.insert(id);
        }
    }

    /// Adds a total read back from the store (a previous run's share).
    pub fn seed(&mut self, id: &BucketId, stored: Outcomes) {
        self.totals.entry(id.clone()).or_default().add(stored);
    }

    /// Up to `max` changed buckets with their totals, in key order.
    pub fn changed(&self, max: usize) -> Vec<(BucketId, Outcomes)> {
        self.dirty
            .iter()
            .take(max)
            .map(|id| (id.clone(), self.totals[id]))
            .collect()
    }

    /// Marks `written` as stored and forgets stored buckets that ended
    /// before `now_ms`. Holds at most [`BUCKETS_HELD_MAX`] unwritten
    /// buckets, dropping the oldest.
    pub fn written(&mut self, written: &[BucketId], now_ms: u64) {
        for id in written {
            self.dirty.remove(id);
        }
        self.totals
            .retain(|id, _| id.start_ms >= id.resolution.start(now_ms) || self.dirty.contains(id));
        while self.dirty.len() > BUCKETS_HELD_MAX {
            let oldest = self
                .dirty
                .iter()
                .min_by_key(|id| id.start_ms)
                .cloned()
                .expect("non-empty");
            self.dirty.remove(&oldest);
            self.totals.remove(&oldest);
        }
    }
}

/// The buckets of `resolution` of `service` (all gateways summed) holding
/// `from_ms` or later, oldest first, read page by page at one revision.
pub async fn fetch_buckets(
    registry: &Registry,
    service: &str,
    resolution: Resolution,
    from_ms: u64,
) -> Result<Vec<(u64, Outcomes)>, etcd_client::Error> {
    const PAGE_KEYS: i64 = 10_000;
    let prefix = bucket_prefix(service, resolution);
    let range_end = prefix_end(&prefix);
    let mut from = format!("{prefix}{:020}", resolution.start(from_ms)).into_bytes();
    let mut revision = 0;
    let mut sums: BTreeMap<u64, Outcomes> = BTreeMap::new();
    let mut client = registry.client();
    // Bounded: 2 days of minutes for 1000 gateways is 288 pages.
    for _ in 0..10_000 {
        let mut options = GetOptions::new()
            .with_range(range_end.clone())
            .with_limit(PAGE_KEYS);
        if revision != 0 {
            options = options.with_revision(revision);
        }
        let response = client.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let start = key
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.split('/').next())
                .and_then(|digits| digits.parse::<u64>().ok());
            let outcomes = serde_json::from_slice::<Outcomes>(kv.value());
            if let (Some(start), Ok(outcomes)) = (start, outcomes) {
                sums.entry(start).or_default().add(outcomes);
            }
        }
        match response.kvs().last() {
            Some(last) if response.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok(sums.into_iter().collect())
}

/// Every service that ever had gateway traffic, by name.
pub async fn fetch_request_services(
    registry: &Registry,
) -> Result<Vec<String>, etcd_client::Error> {
    let response = registry
        .client()
        .get(
            REQUEST_SERVICES,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok())
        .filter_map(|k| k.strip_prefix(REQUEST_SERVICES))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(requests: u64, failed: u64) -> Outcomes {
        Outcomes { requests, failed }
    }

    #[test]
    fn deltas_follow_a_counter_and_survive_its_reset() {
        let mut d = DeltaTracker::default();
        assert_eq!(
            d.delta("a", o(10, 1)),
            o(10, 1),
            "first sight counts from zero"
        );
        assert_eq!(d.delta("a", o(15, 1)), o(5, 0));
        assert_eq!(d.delta("a", o(15, 1)), o(0, 0));
        // The process restarted: the counter starts over at 3.
        assert_eq!(d.delta("a", o(3, 2)), o(3, 2));
        assert_eq!(d.delta("a", o(4, 2)), o(1, 0));
        // Only failures went down (a rebuilt backend): also a reset.
        d.delta("b", o(100, 50));
        assert_eq!(d.delta("b", o(120, 0)), o(120, 0));
        // Sources are independent.
        assert_eq!(d.delta("c", o(7, 7)), o(7, 7));
    }

    #[test]
    fn a_vanished_source_that_returns_is_not_counted_twice() {
        let mut d = DeltaTracker::default();
        d.delta("backend/web/127.0.0.1:1", o(40, 4));
        d.bound(&HashSet::new());
        assert_eq!(d.delta("backend/web/127.0.0.1:1", o(41, 4)), o(1, 0));
    }

    fn id(resolution: Resolution, start_ms: u64) -> BucketId {
        BucketId {
            service: "web".into(),
            resolution,
            start_ms,
        }
    }

    #[test]
    fn buckets_hold_a_minute_and_an_hour_total_and_forget_written_past_ones() {
        use Resolution::{Hour, Minute};
        let mut b = Buckets::default();
        let m = 60_000;
        let h = 1_000 * Hour.length_ms();
        b.add("web", h + 10, o(5, 1));
        b.add("web", h + m - 1, o(2, 0));
        b.add("web", h + m, o(1, 1));
        b.add("api", h + 5, o(0, 0));
        let changed = b.changed(10);
        assert_eq!(
            changed,
            [
                (id(Minute, h), o(7, 1)),
                (id(Minute, h + m), o(1, 1)),
                (id(Hour, h), o(8, 2)),
            ]
        );
        // All written during the second minute: the first minute is done,
        // the second minute and the hour keep accumulating their totals.
        let ids: Vec<_> = changed.into_iter().map(|(id, _)| id).collect();
        b.written(&ids, h + m + 1);
        assert!(b.changed(10).is_empty());
        b.add("web", h + m + 2, o(3, 0));
        assert_eq!(
            b.changed(10),
            [(id(Minute, h + m), o(4, 1)), (id(Hour, h), o(11, 2))]
        );
        // A restart's first buckets add what the previous run stored.
        b.seed(&id(Minute, h + m), o(10, 10));
        assert_eq!(b.changed(10)[0].1, o(14, 11));
    }

    #[test]
    fn unwritten_buckets_stay_until_written() {
        let mut b = Buckets::default();
        b.add("web", 0, o(1, 0));
        b.written(&[], 10 * Resolution::Hour.length_ms());
        assert_eq!(
            b.changed(10),
            [
                (id(Resolution::Minute, 0), o(1, 0)),
                (id(Resolution::Hour, 0), o(1, 0))
            ]
        );
    }

    #[test]
    fn names_in_keys_are_safe_and_bucket_keys_sort_by_time() {
        assert_eq!(key_name("web-1.svc_a"), "web-1.svc_a");
        assert_eq!(key_name("a/b c"), "a_b_c");
        assert_eq!(key_name(""), "_");
        let key = |start| id(Resolution::Minute, start).key("g");
        assert!(key(999) < key(1000));
        assert_eq!(
            key(60_000),
            "/nines/availability/requests/web/m/00000000000000060000/g"
        );
        assert_eq!(Resolution::Minute.start(2 * 60_000 + 5), 2 * 60_000);
        assert_eq!(Resolution::for_window(3_600_000), Resolution::Minute);
        assert_eq!(Resolution::for_window(7 * 86_400_000), Resolution::Hour);
    }
}
