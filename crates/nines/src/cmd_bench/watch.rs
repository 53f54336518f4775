//! `nines bench watch`: write throughput while many watchers follow one
//! prefix. Opens `--watchers` watchers on the prefix, `--watchers-per-stream`
//! of them on each watch stream (1 by default; etcd's clients put every watch
//! of a context on one stream, and etcd's own benchmark uses 100 per stream),
//! the streams spread over `--conns` connections, which go round the
//! endpoints), then `--clients`
//! writers put keys under it for `--duration`; reports the write rate and
//! whether every watcher received every acknowledged write, in order. With
//! `--watchers 0` it gives the baseline.
//!
//! The watchers speak the Watch method over HTTP/2 directly (the `h2`
//! crate): each DATA frame is split into gRPC messages where it lies, and a
//! message is read only for the fields the check needs (each event's
//! `mod_revision`, and whether the watch was canceled); each connection's
//! watchers share one task. So the client's own cost per event stays small
//! next to the servers' (it shares their cores). The same client runs
//! against etcd, so both sides gain alike.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Args;
use etcd_client::{Client, ConnectOptions};
use futures::stream::{SelectAll, StreamExt};
use futures::FutureExt;
use nines_server::pb::etcdserverpb::watch_request::RequestUnion;
use nines_server::pb::etcdserverpb::{WatchCreateRequest, WatchRequest};
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;
use serde::Serialize;

/// Most watchers one run may open.
const WATCHERS_MAX: usize = 100_000;

/// Arguments of `nines bench watch`.
#[derive(Args, Debug)]
pub struct WatchBenchArgs {
    /// Watchers on the prefix.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Watchers sharing one watch stream (the last stream may have fewer).
    #[arg(long, default_value_t = 1)]
    pub watchers_per_stream: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// gRPC connections for the watchers (the writers get their own 8).
    #[arg(long, default_value_t = 16)]
    pub conns: usize,
    /// How long the writers run.
    #[arg(long, value_parser = super::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    pub val_size: usize,
    /// The watched prefix (writes go under it).
    #[arg(long, default_value = "/bench-watch/")]
    pub prefix: String,
    /// Output format: text or json.
    #[arg(short = 'w', long = "write-out", default_value = "text")]
    pub write_out: String,
}

/// What a run measured.
#[derive(Serialize, Debug)]
pub struct WatchReport {
    watchers: usize,
    watchers_per_stream: usize,
    clients: usize,
    writes_acknowledged: u64,
    write_errors: u64,
    elapsed_s: f64,
    write_throughput_ops_s: f64,
    events_expected_per_watcher: u64,
    events_min_per_watcher: u64,
    /// Watchers that got every acknowledged write, in revision order, and
    /// were never canceled.
    watchers_complete: usize,
    /// Responses with events, over all watchers.
    responses_with_events: u64,
    /// Watchers that saw an event at or below a revision they had already
    /// seen (a duplicate or a reordering), or were canceled.
    watchers_broken: usize,
}

fn url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    let eps: Vec<String> = endpoints.iter().map(|e| url(e)).collect();
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(10));
    Client::connect(eps, Some(opts)).await.context("connecting")
}

/// What the check needs from one `WatchResponse`.
#[derive(Debug, Default)]
struct Summary {
    watch_id: i64,
    created: bool,
    canceled: bool,
    events: u64,
    first_revision: i64,
    last_revision: i64,
    /// The events' revisions strictly increase within the response.
    in_order: bool,
}

/// Reads a `WatchResponse` (field numbers of etcd's rpc.proto and kv.proto)
/// down to a [`Summary`], skipping keys and values instead of copying them.
fn summarize(mut buf: &[u8]) -> anyhow::Result<Summary> {
    let mut s = Summary {
        in_order: true,
        ..Default::default()
    };
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf)?;
        match (field, wire) {
            (2, WireType::Varint) => s.watch_id = decode_varint(&mut buf)? as i64,
            (3, WireType::Varint) => s.created = decode_varint(&mut buf)? != 0,
            // canceled
            (4, WireType::Varint) => s.canceled = decode_varint(&mut buf)? != 0,
            // events
            (11, WireType::LengthDelimited) => {
                let event = take_len_delimited(&mut buf)?;
                let rev = event_mod_revision(event)?;
                if s.events == 0 {
                    s.first_revision = rev;
                } else if rev <= s.last_revision {
                    s.in_order = false;
                }
                s.last_revision = rev;
                s.events += 1;
            }
            _ => skip_field(wire, field, &mut buf, DecodeContext::default())?,
        }
    }
    Ok(s)
}

fn take_len_delimited<'a>(buf: &mut &'a [u8]) -> anyhow::Result<&'a [u8]> {
    let len = usize::try_from(decode_varint(buf)?).context("length overflows")?;
    ensure!(len <= buf.len(), "field runs past the message");
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

/// `Event.kv.mod_revision` (Event field 2, KeyValue field 3).
fn event_mod_revision(mut event: &[u8]) -> anyhow::Result<i64> {
    let mut rev = None;
    while !event.is_empty() {
        let (field, wire) = decode_key(&mut event)?;
        if (field, wire) != (2, WireType::LengthDelimited) {
            skip_field(wire, field, &mut event, DecodeContext::default())?;
            continue;
        }
        let mut kv = take_len_delimited(&mut event)?;
        while !kv.is_empty() {
            let (field, wire) = decode_key(&mut kv)?;
            if (field, wire) == (3, WireType::Varint) {
                rev = Some(decode_varint(&mut kv)? as i64);
            } else {
                skip_field(wire, field, &mut kv, DecodeContext::default())?;
            }
        }
    }
    rev.context("event without kv.mod_revision")
}

/// Length of a gRPC message's prefix: a compression flag and a big-endian
/// length.
const GRPC_PREFIX_BYTES: usize = 5;
/// Largest watch response the client accepts (etcd's default request limit
/// is far below).
const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// HTTP/2 receive windows of a watch stream and of a connection (what
/// hyper's client, and so tonic's, asks for).
const STREAM_WINDOW_BYTES: u32 = 2 << 20;
const CONN_WINDOW_BYTES: u32 = 5 << 20;

/// Cuts the gRPC messages of one response stream out of its DATA frames.
/// A frame that holds whole messages is read where it lies; only a message
/// split across frames is copied, into `partial`.
#[derive(Default)]
struct GrpcSplitter {
    partial: BytesMut,
}

impl GrpcSplitter {
    /// Feeds `chunk` (the stream's next DATA frame) to `each` message by
    /// message; returns the first error `each` gives or a framing error.
    fn split(
        &mut self,
        mut chunk: Bytes,
        mut each: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if !self.partial.is_empty() {
            // Complete the split message first (and at most one more
            // prefix), then go on in the new frame.
            let need = message_len(&self.partial)?
                .map_or(GRPC_PREFIX_BYTES, |len| GRPC_PREFIX_BYTES + len);
            let take = (need - self.partial.len()).min(chunk.len());
            self.partial.extend_from_slice(&chunk[..take]);
            chunk.advance(take);
            match message_len(&self.partial)? {
                Some(len) if self.partial.len() == GRPC_PREFIX_BYTES + len => {
                    each(&self.partial[GRPC_PREFIX_BYTES..])?;
                    self.partial.clear();
                }
                // The prefix is whole now: take the rest of the message.
                Some(_) if !chunk.is_empty() => return self.split(chunk, each),
                _ => return Ok(()),
            }
        }
        let mut at: &[u8] = &chunk;
        while let Some(len) = message_len(at)? {
            if at.len() < GRPC_PREFIX_BYTES + len {
                break;
            }
            each(&at[GRPC_PREFIX_BYTES..GRPC_PREFIX_BYTES + len])?;
            at = &at[GRPC_PREFIX_BYTES + len..];
        }
        self.partial.extend_from_slice(at);
        Ok(())
    }
}

/// The length of the gRPC message `buf` starts with, once its prefix is
/// there.
fn message_len(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    if buf.len() < GRPC_PREFIX_BYTES {
        return Ok(None);
    }
    ensure!(
        buf[0] == 0,
        "a compressed watch response (none was asked for)"
    );
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    ensure!(len <= RESPONSE_BYTES_MAX, "a watch response of {len} bytes");
    Ok(Some(len))
}

/// `message` as one gRPC message: prefix, then the bytes.
fn grpc_frame(message: &impl Message, out: &mut BytesMut) {
    out.put_u8(0);
    out.put_u32(message.encoded_len() as u32);
    message.encode_raw(out);
}

/// An HTTP/2 connection to `endpoint` (its task drives the connection).
async fn h2_connect(endpoint: &str) -> anyhow::Result<(h2::client::SendRequest<Bytes>, String)> {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/')
        .to_string();
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .with_context(|| format!("connecting to {authority}: timed out"))?
    .with_context(|| format!("connecting to {authority}"))?;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONN_WINDOW_BYTES)
        .handshake::<_, Bytes>(tcp)
        .await
        .with_context(|| format!("HTTP/2 handshake with {authority}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((send, authority))
}

/// The end of etcd's prefix range for `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One watch stream: its request side (kept open, as a client's is) and its
/// responses.
struct WatchStream {
    _requests: h2::SendStream<Bytes>,
    responses: h2::RecvStream,
    splitter: GrpcSplitter,
}

impl WatchStream {
    /// The next DATA frame of the responses (its flow-control credit given
    /// back at once: the caller reads it before asking for another).
    async fn next_chunk(&mut self) -> Option<Result<Bytes, h2::Error>> {
        let chunk = self.responses.data().await;
        if let Some(Ok(chunk)) = &chunk {
            let _ = self.responses.flow_control().release_capacity(chunk.len());
        }
        chunk
    }
}

/// Opens one watch stream with `count` watchers on `prefix` from
/// `start_revision` and waits for the server to confirm each; returns the
/// stream and its watch ids in the order they were created.
async fn open_stream(
    conn: &(h2::client::SendRequest<Bytes>, String),
    prefix: &str,
    start_revision: i64,
    count: usize,
) -> anyhow::Result<(WatchStream, Vec<i64>)> {
    let (send, authority) = conn;
    let mut send = send
        .clone()
        .ready()
        .await
        .context("watch connection not ready")?;
    let request = http::Request::post(format!("http://{authority}/etcdserverpb.Watch/Watch"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .context("building the watch request")?;
    let (response, mut requests) = send
        .send_request(request, false)
        .context("opening a watch stream")?;
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            start_revision,
            ..Default::default()
        })),
    };
    let mut creates = BytesMut::new();
    for _ in 0..count {
        grpc_frame(&create, &mut creates);
    }
    requests
        .send_data(creates.freeze(), false)
        .context("sending the watch requests")?;
    let response = response.await.context("waiting for the watch stream")?;
    ensure!(
        response.status() == http::StatusCode::OK,
        "the watch stream was answered with HTTP {}",
        response.status()
    );
    if let Some(status) = response.headers().get("grpc-status") {
        bail!(
            "the watch stream was refused: grpc-status {status:?} {:?}",
            response.headers().get("grpc-message")
        );
    }
    let mut stream = WatchStream {
        _requests: requests,
        responses: response.into_body(),
        splitter: GrpcSplitter::default(),
    };
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let chunk = match stream.next_chunk().await {
            Some(chunk) => chunk.context("waiting for the watch")?,
            None => bail!("the watch stream ended at once"),
        };
        stream.splitter.split(chunk, |message| {
            match summarize(message)? {
                r if r.created && !r.canceled => ids.push(r.watch_id),
                r if r.created => bail!("the watch was refused"),
                _ => bail!("an event arrived before every watch was created"),
            }
            Ok(())
        })?;
    }
    Ok((stream, ids))
}

/// Per-watcher tallies shared with the connection tasks.
struct Tallies {
    responses: AtomicU64,
    events: Vec<AtomicU64>,
    broken: Vec<AtomicU64>,
}

/// One watch stream and the watcher index of each of its watch ids.
struct OpenStream {
    stream: WatchStream,
    watchers: HashMap<i64, usize>,
}

/// The summaries of the messages in each DATA frame of `stream`, frame by
/// frame; an error (a reset, a malformed message) ends it.
fn summaries(
    stream: WatchStream,
) -> Pin<Box<dyn futures::Stream<Item = anyhow::Result<Vec<Summary>>> + Send>> {
    Box::pin(futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        let chunk = match stream.next_chunk().await? {
            Ok(chunk) => chunk,
            Err(e) => return Some((Err(anyhow::Error::from(e)), None)),
        };
        let mut out = Vec::new();
        match stream.splitter.split(chunk, |message| {
            out.push(summarize(message)?);
            Ok(())
        }) {
            Ok(()) => Some((Ok(out), Some(stream))),
            Err(e) => Some((Err(e), None)),
        }
    }))
}

/// Follows every watcher of one connection in one task, checking that each
/// one's revisions strictly increase across responses. Counts are kept
/// locally and published to `tallies` whenever no response is waiting, so
/// the two client threads do not contend on shared counters per response.
async fn follow(streams: Vec<OpenStream>, tallies: Arc<Tallies>) {
    let mut last = vec![i64::MIN; tallies.events.len()];
    let mut all = SelectAll::new();
    let mut maps = Vec::new();
    let mut mine = Vec::new();
    for (n, s) in streams.into_iter().enumerate() {
        mine.extend(s.watchers.values().copied());
        maps.push(s.watchers);
        all.push(summaries(s.stream).map(move |r| (n, r)));
    }
    let mut events = vec![0u64; tallies.events.len()];
    let mut responses = 0u64;
    let mut published_responses = 0u64;
    while let Some(mut item) = all.next().await {
        loop {
            let (n, r) = item;
            match r {
                Err(_) => {
                    for &i in maps[n].values() {
                        tallies.broken[i].store(1, Ordering::Relaxed);
                    }
                }
                // A response for none of our watchers (a progress
                // notification) is skipped.
                Ok(list) => {
                    for s in list {
                        let Some(&i) = maps[n].get(&s.watch_id) else {
                            continue;
                        };
                        if s.canceled
                            || !s.in_order
                            || (s.events > 0 && s.first_revision <= last[i])
                        {
                            tallies.broken[i].store(1, Ordering::Relaxed);
                        }
                        if s.events > 0 {
                            responses += 1;
                            last[i] = s.last_revision;
                            events[i] += s.events;
                        }
                    }
                }
            }
            match all.next().now_or_never() {
                Some(Some(next)) => item = next,
                _ => break,
            }
        }
        for &i in &mine {
            tallies.events[i].store(events[i], Ordering::Relaxed);
        }
        tallies
            .responses
            .fetch_add(responses - published_responses, Ordering::Relaxed);
        published_responses = responses;
    }
}

/// Opens `watchers` watchers on `prefix` from `start_revision`,
/// `per_stream` to a stream, the streams over `conns` connections that go
/// round `endpoints`, and starts one task per connection that follows its
/// watchers.
async fn open_watchers(
    endpoints: Vec<String>,
    watchers: usize,
    per_stream: usize,
    conns: usize,
    prefix: String,
    start_revision: i64,
    tallies: Arc<Tallies>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut channels = Vec::new();
    for c in 0..conns {
        channels.push(h2_connect(&endpoints[c % endpoints.len()]).await?);
    }
    let mut per_conn: Vec<Vec<OpenStream>> = (0..conns).map(|_| Vec::new()).collect();
    let mut first = 0;
    for n in 0..watchers.div_ceil(per_stream) {
        let count = per_stream.min(watchers - first);
        let c = n % conns;
        let (stream, ids) = open_stream(&channels[c], &prefix, start_revision, count).await?;
        let watchers = ids.into_iter().zip(first..first + count).collect();
        per_conn[c].push(OpenStream { stream, watchers });
        first += count;
    }
    Ok(per_conn
        .into_iter()
        .map(|streams| tokio::spawn(follow(streams, Arc::clone(&tallies))))
        .collect())
}

/// Runs the benchmark.
pub async fn run(args: &WatchBenchArgs, endpoints: &[String]) -> anyhow::Result<WatchReport> {
    ensure!(
        args.watchers <= WATCHERS_MAX,
        "--watchers must be at most {WATCHERS_MAX}"
    );
    ensure!(
        (1..=10_000).contains(&args.clients),
        "--clients must be 1..=10000"
    );
    ensure!((1..=1024).contains(&args.conns), "--conns must be 1..=1024");
    ensure!(
        (1..=10_000).contains(&args.watchers_per_stream),
        "--watchers-per-stream must be 1..=10000"
    );
    ensure!(!endpoints.is_empty(), "no endpoints");
    let mut kv0 = connect(endpoints).await?;
    let start_rev = kv0
        .get("/", None)
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0)
        + 1;
    let tallies = Arc::new(Tallies {
        responses: AtomicU64::new(0),
        events: (0..args.watchers).map(|_| AtomicU64::new(0)).collect(),
        broken: (0..args.watchers).map(|_| AtomicU64::new(0)).collect(),
    });
    // The watchers run on threads of their own, as they would in processes
    // of their own: a writer's response is not queued behind their work.
    let watch_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-watchers")
        .enable_all()
        .build()
        .context("building the watchers' runtime")?;
    let watch_tasks = watch_runtime
        .spawn(open_watchers(
            endpoints.to_vec(),
            args.watchers,
            args.watchers_per_stream,
            args.conns,
            args.prefix.clone(),
            start_rev,
            Arc::clone(&tallies),
        ))
        .await
        .context("opening the watchers")??;
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut wconns = Vec::new();
    for _ in 0..8 {
        wconns.push(connect(endpoints).await?);
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    for w in 0..args.clients {
        let mut kv = wconns[w % wconns.len()].kv_client();
        let (acked, errors) = (acked.clone(), errors.clone());
        let prefix = args.prefix.clone();
        let value = vec![b'v'; args.val_size];
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline && n < u64::MAX {
                match kv
                    .put(format!("{prefix}{w}/{n}"), value.clone(), None)
                    .await
                {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    for t in writers {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = acked.load(Ordering::Relaxed);
    let events = |i: usize| tallies.events[i].load(Ordering::Relaxed);
    // Give the watchers time to drain, bounded.
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < drain_deadline && (0..args.watchers).any(|i| events(i) < expected) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in &watch_tasks {
        t.abort();
    }
    watch_runtime.shutdown_background();
    let broken = |i: usize| tallies.broken[i].load(Ordering::Relaxed) != 0;
    let min = (0..args.watchers).map(events).min().unwrap_or(expected);
    let complete = (0..args.watchers)
        .filter(|&i| events(i) >= expected && !broken(i))
        .count();
    Ok(WatchReport {
        watchers: args.watchers,
        watchers_per_stream: args.watchers_per_stream,
        clients: args.clients,
        writes_acknowledged: expected,
        write_errors: errors.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        write_throughput_ops_s: expected as f64 / elapsed,
        events_expected_per_watcher: expected,
        events_min_per_watcher: min,
        watchers_complete: complete,
        watchers_broken: (0..args.watchers).filter(|&i| broken(i)).count(),
        responses_with_events: tallies.responses.load(Ordering::Relaxed),
    })
}

/// Prints the report.
pub fn print(r: &WatchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!(
            "watch fan-out: {} watchers ({} per stream), {} writers, {:.1} s\nwrites      {} acknowledged, {} errors, {:.1} ops/s\nwatchers    {} of {} received all {} events in order (fewest: {}; broken: {})",
            r.watchers, r.watchers_per_stream, r.clients, r.elapsed_s, r.writes_acknowledged, r.write_errors, r.write_throughput_ops_s,
            r.watchers_complete, r.watchers, r.events_expected_per_watcher, r.events_min_per_watcher,
            r.watchers_broken
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nines_server::pb::etcdserverpb::{ResponseHeader, WatchResponse};
    use nines_server::pb::mvccpb::{Event, KeyValue};

    fn event(rev: i64) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: b"/p/k".to_vec(),
                create_revision: 1,
                mod_revision: rev,
                version: 1,
                value: vec![b'v'; 300],
                lease: 0,
            }),
            prev_kv: Some(KeyValue {
                key: b"/p/k".to_vec(),
                mod_revision: 1,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn summary_reads_revisions_and_order() {
        let resp = WatchResponse {
            header: Some(ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            watch_id: 3,
            events: vec![event(5), event(7), event(9)],
            ..Default::default()
        };
        let s = summarize(&resp.encode_to_vec()).expect("decodes");
        assert_eq!((s.events, s.first_revision, s.last_revision), (3, 5, 9));
        assert_eq!((s.watch_id, s.created), (3, false));
        assert!(s.in_order && !s.canceled);
        let resp = WatchResponse {
            events: vec![event(7), event(7)],
            canceled: true,
            ..Default::default()
        };
        let s = summarize(&resp.encode_to_vec()).expect("decodes");
        assert!(!s.in_order && s.canceled);
        assert!(summarize(&resp.encode_to_vec()[..20]).is_err());
    }

    #[test]
    fn messages_split_anywhere_across_frames_are_put_back_together() {
        let responses: Vec<WatchResponse> = (1..=4)
            .map(|n| WatchResponse {
                watch_id: n,
                events: (0..n).map(|k| event(10 * n + k)).collect(),
                ..Default::default()
            })
            .collect();
        let mut wire = BytesMut::new();
        for r in &responses {
            grpc_frame(r, &mut wire);
        }
        let wire = wire.freeze();
        // Every pair of cut points, so prefixes and bodies split anywhere.
        for a in 0..=wire.len() {
            for b in (a..=wire.len()).step_by(7) {
                let mut splitter = GrpcSplitter::default();
                let mut got = Vec::new();
                for piece in [wire.slice(..a), wire.slice(a..b), wire.slice(b..)] {
                    splitter
                        .split(piece, |m| {
                            let s = summarize(m)?;
                            got.push((s.watch_id, s.events, s.last_revision));
                            Ok(())
                        })
                        .expect("splits");
                }
                let want: Vec<_> = responses
                    .iter()
                    .map(|r| {
                        (
                            r.watch_id,
                            r.events.len() as u64,
                            10 * r.watch_id + r.watch_id - 1,
                        )
                    })
                    .collect();
                assert_eq!(got, want, "cut at {a} and {b}");
                assert!(splitter.partial.is_empty());
            }
        }
        let mut compressed = BytesMut::from(&wire[..]);
        compressed[0] = 1;
        let err = GrpcSplitter::default()
            .split(compressed.freeze(), |_| Ok(()))
            .expect_err("refused");
        assert!(err.to_string().contains("compressed"), "{err}");
    }

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
