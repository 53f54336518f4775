//! The client workload: N clients, each a task with its own etcd connection,
//! issuing put (unique values), linearizable get and compare-and-swap (a txn
//! comparing the value, then putting) on a small set of keys, and recording
//! every request as an [`Operation`] with invoke and completion times from
//! one monotonic origin. A request that errors is classified as failed only
//! when the error proves it had no effect; anything else (timeouts, lost
//! connections, leader changes) is unknown. After an error a client moves
//! to the next member's endpoint.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use tokio::sync::watch;

use crate::history::{Command, Operation, Outcome, Response};
use crate::rng::SeededRng;

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Client endpoints (`127.0.0.1:PORT`) of the members.
    pub endpoints: Vec<String>,
    /// Number of keys; key `i` is `chaos/k{i}`.
    pub keys: usize,
    /// How long a client waits for an answer before calling it unknown.
    pub op_timeout: Duration,
    /// Out of 100 operations, how many are puts.
    pub put_percent: u64,
    /// Out of 100 operations, how many are compare-and-swaps (when the client
    /// knows a value to expect); the rest are gets.
    pub cas_percent: u64,
    /// Out of 100 operations, how many first go to a fresh ledger key (a
    /// write-once put under [`LEDGER_PREFIX`]) instead: every acknowledged
    /// ledger write must still be there at the end, which checks durability
    /// of every write rather than of the last one per key.
    pub ledger_percent: u64,
}

/// Prefix of the write-once ledger keys.
pub const LEDGER_PREFIX: &str = "chaos/ledger/";

/// Pause after a request that was not answered, before the next one.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The key name for key number `index`.
pub fn key_name(index: usize) -> String {
    format!("chaos/k{index}")
}

/// Runs one client until `stop` turns true; returns its operations.
pub async fn run_client(
    client_id: u32,
    config: WorkloadConfig,
    origin: Instant,
    mut rng: SeededRng,
    stop: watch::Receiver<bool>,
) -> Vec<Operation> {
    let mut history = Vec::new();
    let mut endpoint = client_id as usize % config.endpoints.len();
    let mut connection: Option<Client> = None;
    let mut last_seen: Vec<Option<String>> = vec![None; config.keys];
    let mut sequence = 0u64;
    while !*stop.borrow() {
        let client = match &mut connection {
            Some(client) => client,
            None => match connect(&config.endpoints[endpoint], config.op_timeout).await {
                Some(client) => connection.insert(client),
                None => {
                    endpoint = (endpoint + 1) % config.endpoints.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let key_index = rng.below(config.keys as u64) as usize;
        let mut key = key_name(key_index);
        let roll = rng.below(100);
        let to_ledger = rng.below(100) < config.ledger_percent;
        sequence += 1;
        let fresh_value = format!("{client_id}-{sequence}");
        let command = if to_ledger {
            key = format!("{LEDGER_PREFIX}{fresh_value}");
            Command::Put { value: fresh_value }
        } else if roll < config.put_percent {
            Command::Put { value: fresh_value }
        } else if roll < config.put_percent + config.cas_percent {
            match &last_seen[key_index] {
                Some(expected) => Command::Cas {
                    expected: expected.clone(),
                    new: fresh_value,
                },
                None => Command::Get,
            }
        } else {
            Command::Get
        };
        let invoke = origin.elapsed();
        let outcome = execute(client, &key, &command, config.op_timeout).await;
        let complete = origin.elapsed();
        match (&command, &outcome) {
            _ if to_ledger => {}
            (Command::Put { value }, Outcome::Ok(_))
            | (Command::Cas { new: value, .. }, Outcome::Ok(Response::Cas(true))) => {
                last_seen[key_index] = Some(value.clone());
            }
            (Command::Get, Outcome::Ok(Response::Get(seen))) => {
                last_seen[key_index] = seen.clone();
            }
            (Command::Cas { .. }, Outcome::Ok(Response::Cas(false))) => {
                last_seen[key_index] = None;
            }
            _ => {}
        }
        let answered = matches!(outcome, Outcome::Ok(_));
        history.push(Operation {
            client: client_id,
            key,
            command,
            invoke_ns: invoke.as_nanos() as u64,
            complete_ns: complete.as_nanos() as u64,
            outcome,
        });
        if !answered {
            // The member may be down, paused or cut off: try the next one,
            // after a short pause so a refused connection does not spin.
            connection = None;
            endpoint = (endpoint + 1) % config.endpoints.len();
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    history
}

/// A client for one endpoint, or `None` if it cannot be set up quickly.
pub async fn connect(endpoint: &str, op_timeout: Duration) -> Option<Client> {
    let options = ConnectOptions::new()
        .with_timeout(op_timeout)
        .with_connect_timeout(op_timeout);
    tokio::time::timeout(op_timeout, Client::connect([endpoint], Some(options)))
        .await
        .ok()?
        .ok()
}

/// Sends one request and classifies its result.
pub async fn execute(
    client: &mut Client,
    key: &str,
    command: &Command,
    op_timeout: Duration,
) -> Outcome {
    let request = async {
        match command {
            Command::Put { value } => client
                .put(key, value.as_str(), None)
                .await
                .map(|_| Response::Put),
            Command::Get => client.get(key, None).await.map(|answer| {
                let value = answer
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                Response::Get(value)
            }),
            Command::Cas { expected, new } => {
                let txn = Txn::new()
                    .when([Compare::value(key, CompareOp::Equal, expected.as_str())])
                    .and_then([TxnOp::put(key, new.as_str(), None)]);
                client
                    .txn(txn)
                    .await
                    .map(|answer| Response::Cas(answer.succeeded()))
            }
        }
    };
    match tokio::time::timeout(op_timeout, request).await {
        Ok(Ok(response)) => Outcome::Ok(response),
        Ok(Err(error)) => classify(&error),
        Err(_) => Outcome::Unknown,
    }
}

/// Failed only for errors that guarantee the request had no effect: it was
/// refused as invalid, or refused before being proposed (no leader, too many
/// requests), or never left the client (connection refused). Everything
/// else may have been applied.
fn classify(error: &etcd_client::Error) -> Outcome {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let code = status.code() as i32;
            if NO_EFFECT_CODES.contains(&code)
                || (code == UNAVAILABLE && never_sent_or_refused(status.message()))
            {
                Outcome::Failed
            } else {
                Outcome::Unknown
            }
        }
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// gRPC status codes (numbered as in the gRPC specification) with which a
/// server refuses a request before acting on it: invalid argument, not
/// found, already exists, permission denied, resource exhausted, failed
/// precondition, out of range, unimplemented, unauthenticated.
const NO_EFFECT_CODES: [i32; 9] = [3, 5, 6, 7, 8, 9, 11, 12, 16];

/// gRPC status code `Unavailable`: only some of its messages prove the
/// request was not proposed.
const UNAVAILABLE: i32 = 14;

fn never_sent_or_refused(message: &str) -> bool {
    [
        "etcdserver: no leader",
        "etcdserver: not capable",
        "Connection refused",
        "tcp connect error",
    ]
    .iter()
    .any(|marker| message.contains(marker))
}

/// Most keys asked for per page when reading the ledger.
const LEDGER_PAGE_KEYS: i64 = 1000;

/// Reads every key under `prefix` (linearizable range reads, page by page);
/// `None` if any page fails or times out.
pub async fn read_prefix(
    client: &mut Client,
    prefix: &str,
    op_timeout: Duration,
) -> Option<BTreeMap<String, String>> {
    let mut end = prefix.as_bytes().to_vec();
    // The prefix ends in '/', so bumping its last byte gives the range end.
    let last = end.last_mut()?;
    *last += 1;
    let mut start = prefix.as_bytes().to_vec();
    let mut found = BTreeMap::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(LEDGER_PAGE_KEYS);
        let page = tokio::time::timeout(op_timeout, client.get(start.clone(), Some(options)))
            .await
            .ok()?
            .ok()?;
        for kv in page.kvs() {
            found.insert(
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            );
        }
        match page.kvs().last() {
            Some(kv) if page.more() => {
                start = kv.key().to_vec();
                start.push(0);
            }
            _ => return Some(found),
        }
    }
}
