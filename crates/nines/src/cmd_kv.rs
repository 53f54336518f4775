//! `nines kv`: put, get, del, txn and compact from the shell, over the etcd
//! v3 API. Output follows etcdctl's simple format so scripts carry over.

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp,
};

/// `nines kv ...`
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(subcommand)]
    op: KvOp,
    /// Output format: simple or json.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    write_out: String,
}

#[derive(Subcommand, Debug)]
enum KvOp {
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach to this lease (hex id).
        #[arg(long)]
        lease: Option<String>,
        /// Print the previous key-value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read a key or a range.
    Get {
        /// The key (or the start of the range).
        key: String,
        /// End of the range, exclusive.
        range_end: Option<String>,
        /// Every key with this prefix.
        #[arg(long)]
        prefix: bool,
        /// Every key from this one on.
        #[arg(long)]
        from_key: bool,
        /// Read at this revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// At most this many keys.
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Keys only.
        #[arg(long)]
        keys_only: bool,
        /// Values only.
        #[arg(long)]
        print_value_only: bool,
        /// Count only.
        #[arg(long)]
        count_only: bool,
        /// Serve from the local member (may be stale).
        #[arg(long)]
        serializable: bool,
        /// Sort order: ASCEND or DESCEND.
        #[arg(long)]
        order: Option<String>,
    },
    /// Delete a key or a range.
    Del {
        /// The key.
        key: String,
        /// End of the range, exclusive.
        range_end: Option<String>,
        /// Every key with this prefix.
        #[arg(long)]
        prefix: bool,
        /// Every key from this one on.
        #[arg(long)]
        from_key: bool,
        /// Print the deleted key-values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Run a transaction read from stdin, in etcdctl's format: compares, a
    /// blank line, success operations, a blank line, failure operations.
    Txn,
    /// Print changes to a key or range as they happen (etcdctl's format).
    Watch {
        /// The key (or the start of the range).
        key: String,
        /// End of the range, exclusive.
        range_end: Option<String>,
        /// Every key with this prefix.
        #[arg(long)]
        prefix: bool,
        /// Replay history from this revision.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print the previous key-value of each event.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Drop history before a revision.
    Compact {
        /// The revision.
        revision: i64,
    },
}

/// Runs `nines kv`.
pub fn run(args: KvArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args, endpoints))
}

async fn run_async(args: KvArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let mut client = crate::connect(endpoints).await?;
    let json = args.write_out == "json";
    let mut out = std::io::stdout().lock();
    match args.op {
        KvOp::Put {
            key,
            value,
            lease,
            prev_kv,
        } => {
            let mut opts = PutOptions::new();
            if let Some(l) = lease {
                opts = opts.with_lease(
                    i64::from_str_radix(&l, 16).context("--lease must be a hex lease id")?,
                );
            }
            if prev_kv {
                opts = opts.with_prev_key();
            }
            let resp = client.put(key, value, Some(opts)).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"header": header_json(resp.header())})
                )?;
            } else {
                writeln!(out, "OK")?;
                if let Some(kv) = resp.prev_key() {
                    out.write_all(kv.key())?;
                    writeln!(out)?;
                    out.write_all(kv.value())?;
                    writeln!(out)?;
                }
            }
        }
        KvOp::Get {
            key,
            range_end,
            prefix,
            from_key,
            rev,
            limit,
            keys_only,
            print_value_only,
            count_only,
            serializable,
            order,
        } => {
            let mut opts = GetOptions::new().with_revision(rev).with_limit(limit);
            opts = range_opts_get(opts, range_end, prefix, from_key);
            if keys_only {
                opts = opts.with_keys_only();
            }
            if count_only {
                opts = opts.with_count_only();
            }
            if serializable {
                opts = opts.with_serializable();
            }
            match order.as_deref() {
                Some("ASCEND") => opts = opts.with_sort(SortTarget::Key, SortOrder::Ascend),
                Some("DESCEND") => opts = opts.with_sort(SortTarget::Key, SortOrder::Descend),
                Some(o) => bail!("--order must be ASCEND or DESCEND, not {o}"),
                None => {}
            }
            let resp = client.get(key, Some(opts)).await?;
            if json {
                let kvs: Vec<_> = resp.kvs().iter().map(kv_json).collect();
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"header": header_json(resp.header()), "kvs": kvs, "more": resp.more(), "count": resp.count()})
                )?;
            } else if count_only {
                writeln!(out, "{}", resp.count())?;
            } else {
                for kv in resp.kvs() {
                    if !print_value_only {
                        out.write_all(kv.key())?;
                        writeln!(out)?;
                    }
                    if !keys_only {
                        out.write_all(kv.value())?;
                        writeln!(out)?;
                    }
                }
            }
        }
        KvOp::Del {
            key,
            range_end,
            prefix,
            from_key,
            prev_kv,
        } => {
            let mut opts = DeleteOptions::new();
            if let Some(end) = range_end {
                opts = opts.with_range(end);
            } else if prefix {
                opts = opts.with_prefix();
            } else if from_key {
                opts = opts.with_from_key();
            }
            if prev_kv {
                opts = opts.with_prev_key();
            }
            let resp = client.delete(key, Some(opts)).await?;
            if json {
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({"header": header_json(resp.header()), "deleted": resp.deleted()})
                )?;
            } else {
                writeln!(out, "{}", resp.deleted())?;
                for kv in resp.prev_kvs() {
                    out.write_all(kv.key())?;
                    writeln!(out)?;
                    out.write_all(kv.value())?;
                    writeln!(out)?;
                }
            }
        }
        KvOp::Txn => {
            let txn = parse_txn(std::io::stdin().lock())?;
            let resp = client.txn(txn).await?;
            writeln!(
                out,
                "{}",
                if resp.succeeded() {
                    "SUCCESS"
                } else {
                    "FAILURE"
                }
            )?;
            for op in resp.op_responses() {
                writeln!(out)?;
                match op {
                    etcd_client::TxnOpResponse::Put(_) => writeln!(out, "OK")?,
                    etcd_client::TxnOpResponse::Delete(d) => writeln!(out, "{}", d.deleted())?,
                    etcd_client::TxnOpResponse::Get(g) => {
                        for kv in g.kvs() {
                            out.write_all(kv.key())?;
                            writeln!(out)?;
                            out.write_all(kv.value())?;
                            writeln!(out)?;
                        }
                    }
                    etcd_client::TxnOpResponse::Txn(_) => writeln!(out, "(nested txn)")?,
                }
            }
        }
        KvOp::Watch {
            key,
            range_end,
            prefix,
            rev,
            prev_kv,
        } => {
            let mut opts = etcd_client::WatchOptions::new().with_start_revision(rev);
            if let Some(end) = range_end {
                opts = opts.with_range(end);
            } else if prefix {
                opts = opts.with_prefix();
            }
            if prev_kv {
                opts = opts.with_prev_key();
            }
            let mut stream = client.watch(key, Some(opts)).await?;
            let stop = crate::shutdown_signal();
            tokio::pin!(stop);
            loop {
                let resp = tokio::select! {
                    () = &mut stop => break,
                    m = stream.message() => match m? { Some(r) => r, None => break },
                };
                if resp.canceled() {
                    bail!("watch was canceled ({})", resp.cancel_reason());
                }
                for e in resp.events() {
                    let kind = match e.event_type() {
                        etcd_client::EventType::Put => "PUT",
                        etcd_client::EventType::Delete => "DELETE",
                    };
                    writeln!(out, "{kind}")?;
                    if let Some(p) = e.prev_kv() {
                        out.write_all(p.key())?;
                        writeln!(out)?;
                        out.write_all(p.value())?;
                        writeln!(out)?;
                    }
                    if let Some(kv) = e.kv() {
                        out.write_all(kv.key())?;
                        writeln!(out)?;
                        out.write_all(kv.value())?;
                        writeln!(out)?;
                    }
                }
                out.flush()?;
            }
        }
        KvOp::Compact { revision } => {
            client.compact(revision, None).await?;
            writeln!(out, "compacted revision {revision}")?;
        }
    }
    Ok(())
}

fn range_opts_get(
    opts: GetOptions,
    range_end: Option<String>,
    prefix: bool,
    from_key: bool,
) -> GetOptions {
    if let Some(end) = range_end {
        opts.with_range(end)
    } else if prefix {
        opts.with_prefix()
    } else if from_key {
        opts.with_from_key()
    } else {
        opts
    }
}

fn header_json(h: Option<&etcd_client::ResponseHeader>) -> serde_json::Value {
    match h {
        Some(h) => {
            serde_json::json!({"cluster_id": h.cluster_id(), "member_id": h.member_id(), "revision": h.revision(), "raft_term": h.raft_term()})
        }
        None => serde_json::Value::Null,
    }
}

fn kv_json(kv: &etcd_client::KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": String::from_utf8_lossy(kv.key()),
        "create_revision": kv.create_revision(),
        "mod_revision": kv.mod_revision(),
        "version": kv.version(),
        "value": String::from_utf8_lossy(kv.value()),
        "lease": kv.lease(),
    })
}

/// Parses etcdctl's interactive txn format.
fn parse_txn(input: impl BufRead) -> anyhow::Result<Txn> {
    let mut sections: Vec<Vec<String>> = vec![Vec::new()];
    for line in input.lines().take(10_000) {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            if sections.len() == 3 {
                break;
            }
            sections.push(Vec::new());
            continue;
        }
        sections
            .last_mut()
            .expect("one section")
            .push(line.to_string());
    }
    sections.resize(3, Vec::new());
    let compares = sections[0]
        .iter()
        .map(|l| parse_compare(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let success = sections[1]
        .iter()
        .map(|l| parse_op(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let failure = sections[2]
        .iter()
        .map(|l| parse_op(l))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Txn::new().when(compares).and_then(success).or_else(failure))
}

/// Splits a line into words, honouring double quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    // e.g. value("key") = "v"   mod("key") > "5"
    let open = line.find('(').context("compare needs TARGET(\"KEY\")")?;
    let close = line
        .rfind(')')
        .context("compare needs a closing parenthesis")?;
    let target = line[..open].trim();
    let key = line[open + 1..close].trim().trim_matches('"').to_string();
    let rest = words(&line[close + 1..]);
    if rest.len() != 2 {
        bail!("compare {line:?} needs an operator and a value");
    }
    let op = match rest[0].as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        ">" => CompareOp::Greater,
        "<" => CompareOp::Less,
        o => bail!("unknown compare operator {o:?}"),
    };
    let num = || {
        rest[1]
            .parse::<i64>()
            .with_context(|| format!("{target} compares with a number, not {:?}", rest[1]))
    };
    Ok(match target {
        "value" | "val" => Compare::value(key, op, rest[1].clone()),
        "version" | "ver" => Compare::version(key, op, num()?),
        "create" | "c" => Compare::create_revision(key, op, num()?),
        "mod" | "m" => Compare::mod_revision(key, op, num()?),
        "lease" => Compare::lease(key, op, num()?),
        t => bail!("unknown compare target {t:?}"),
    })
}

fn parse_op(line: &str) -> anyhow::Result<TxnOp> {
    let w = words(line);
    match w.first().map(String::as_str) {
        Some("put") if w.len() >= 3 => Ok(TxnOp::put(w[1].clone(), w[2].clone(), None)),
        Some("get") if w.len() >= 2 => {
            let opts = if w.iter().any(|x| x == "--prefix") {
                Some(GetOptions::new().with_prefix())
            } else {
                None
            };
            Ok(TxnOp::get(w[1].clone(), opts))
        }
        Some("del") if w.len() >= 2 => {
            let opts = if w.iter().any(|x| x == "--prefix") {
                Some(DeleteOptions::new().with_prefix())
            } else {
                None
            };
            Ok(TxnOp::delete(w[1].clone(), opts))
        }
        _ => bail!("unknown txn operation {line:?}: use put KEY VALUE, get KEY, del KEY"),
    }
}

/// Connects to the cluster with the etcd client.
pub async fn connect_client(endpoints: &[String]) -> anyhow::Result<Client> {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|e| {
            if e.contains("://") {
                e.clone()
            } else {
                format!("http://{e}")
            }
        })
        .collect();
    let eps = reachable(eps).await;
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(std::time::Duration::from_secs(3))
        .with_timeout(std::time::Duration::from_secs(10));
    Client::connect(eps, Some(opts))
        .await
        .with_context(|| format!("cannot connect to {}", endpoints.join(",")))
}

/// The endpoints that accept a TCP connection now (probed together, 1 s
/// each), in their given order; all of them when none does, so the error
/// names them. The client balances requests over its endpoints without
/// skipping a dead one, so a member that is down would otherwise fail a
/// share of the commands.
async fn reachable(eps: Vec<String>) -> Vec<String> {
    if eps.len() < 2 {
        return eps;
    }
    let probes = eps.iter().map(|e| async move {
        let authority = e.split_once("://").map_or(e.as_str(), |(_, rest)| rest);
        let authority = authority.split('/').next().unwrap_or(authority);
        let probe = tokio::net::TcpStream::connect(authority.to_string());
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), probe).await,
            Ok(Ok(_))
        )
    });
    let up = futures::future::join_all(probes).await;
    let live: Vec<String> = eps
        .iter()
        .zip(up)
        .filter(|(_, up)| *up)
        .map(|(e, _)| e.clone())
        .collect();
    if live.is_empty() {
        eps
    } else {
        live
    }
}
