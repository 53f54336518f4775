//! Coordination from the shell: `nines lease ...`, `nines lock NAME -- CMD`,
//! `nines elect NAME [PROPOSAL]`, and `nines run --elect NAME -- CMD`, which
//! runs CMD only while this supervisor holds the election (active-passive
//! failover for any process), fenced by the leader key's revision.

use std::io::Write;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, LockOptions, ResignOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `nines lease ...`
#[derive(Args, Debug)]
pub struct LeaseArgs {
    #[command(subcommand)]
    op: LeaseOp,
}

#[derive(Subcommand, Debug)]
enum LeaseOp {
    /// Create a lease with a TTL in seconds.
    Grant {
        /// TTL in seconds.
        ttl: i64,
    },
    /// Revoke a lease (its keys are deleted).
    Revoke {
        /// Lease id (hex).
        id: String,
    },
    /// Keep a lease alive until interrupted (or once).
    Keepalive {
        /// Lease id (hex).
        id: String,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Remaining TTL of a lease.
    Ttl {
        /// Lease id (hex).
        id: String,
        /// List the attached keys too.
        #[arg(long)]
        keys: bool,
    },
    /// List leases.
    List,
}

fn lease_id(s: &str) -> anyhow::Result<i64> {
    i64::from_str_radix(s, 16)
        .with_context(|| format!("bad lease id {s:?}: expected hex, as `nines lease grant` prints"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Runs `nines lease`.
pub fn run_lease(args: LeaseArgs, endpoints: &[String]) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let mut c = crate::connect(endpoints).await?;
        let mut out = std::io::stdout().lock();
        match args.op {
            LeaseOp::Grant { ttl } => {
                let r = c.lease_grant(ttl, None).await?;
                writeln!(out, "lease {:x} granted with TTL({}s)", r.id(), r.ttl())?;
            }
            LeaseOp::Revoke { id } => {
                let id = lease_id(&id)?;
                c.lease_revoke(id).await?;
                writeln!(out, "lease {id:x} revoked")?;
            }
            LeaseOp::Keepalive { id, once } => {
                let id = lease_id(&id)?;
                let (mut k, mut s) = c.lease_keep_alive(id).await?;
                loop {
                    k.keep_alive().await?;
                    match s.message().await? {
                        Some(r) if r.ttl() > 0 => {
                            writeln!(out, "lease {id:x} keepalived with TTL({})", r.ttl())?
                        }
                        _ => bail!("lease {id:x} expired or revoked"),
                    }
                    out.flush()?;
                    if once {
                        break;
                    }
                    tokio::select! {
                        () = crate::shutdown_signal() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            LeaseOp::Ttl { id, keys } => {
                let id = lease_id(&id)?;
                let opts = keys.then(|| etcd_client::LeaseTimeToLiveOptions::new().with_keys());
                let r = c.lease_time_to_live(id, opts).await?;
                if r.ttl() == -1 {
                    writeln!(out, "lease {id:x} already expired")?;
                } else {
                    write!(
                        out,
                        "lease {id:x} granted with TTL({}s), remaining({}s)",
                        r.granted_ttl(),
                        r.ttl()
                    )?;
                    if keys {
                        let ks: Vec<String> = r
                            .keys()
                            .iter()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .collect();
                        write!(out, ", attached keys([{}])", ks.join(" "))?;
                    }
                    writeln!(out)?;
                }
            }
            LeaseOp::List => {
                let r = c.leases().await?;
                writeln!(out, "found {} leases", r.leases().len())?;
                for l in r.leases() {
                    writeln!(out, "{:x}", l.id())?;
                }
            }
        }
        Ok(())
    })
}

/// A lease kept alive in the background, with the local time before which
/// it is certainly still valid on the cluster.
struct Session {
    id: i64,
    ttl: Duration,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// Sent-time of the last acknowledged renewal plus the TTL: the lease
    /// cannot expire before this instant.
    valid_until: Instant,
}

impl Session {
    async fn open(c: &mut Client, ttl_secs: i64) -> anyhow::Result<Session> {
        let sent = Instant::now();
        let g = c
            .lease_grant(ttl_secs, None)
            .await
            .context("cannot grant a session lease")?;
        let (keeper, stream) = c.lease_keep_alive(g.id()).await?;
        let ttl = Duration::from_secs(g.ttl().max(1) as u64);
        Ok(Session {
            id: g.id(),
            ttl,
            keeper,
            stream,
            valid_until: sent + ttl,
        })
    }

    /// Renews once; false when the lease is gone or the renewal failed.
    async fn renew(&mut self) -> bool {
        let sent = Instant::now();
        if self.keeper.keep_alive().await.is_err() {
            return false;
        }
        match tokio::time::timeout(self.ttl / 3, self.stream.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                self.valid_until = sent + Duration::from_secs(r.ttl() as u64);
                true
            }
            _ => false,
        }
    }
}

/// `nines lock NAME -- CMD...`
#[derive(Args, Debug)]
pub struct LockArgs {
    /// Lock name.
    name: String,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    /// Command to run while holding the lock (without one: hold until Ctrl-C).
    #[arg(last = true)]
    command: Vec<String>,
}

/// Runs `nines lock`.
pub fn run_lock(args: LockArgs, endpoints: &[String]) -> anyhow::Result<()> {
    if args.name.is_empty() {
        bail!("the lock name is empty");
    }
    runtime()?.block_on(async move {
        let mut c = crate::connect(endpoints).await?;
        let mut s = Session::open(&mut c, args.ttl).await?;
        let lock = c
            .lock(args.name.clone(), Some(LockOptions::new().with_lease(s.id)))
            .await?;
        let key = String::from_utf8_lossy(lock.key()).into_owned();
        let status = if args.command.is_empty() {
            println!("{key}");
            hold(&mut s, None).await?
        } else {
            let child = spawn(&args.command, &[("NINES_LOCK_KEY", key.clone())])?;
            hold(&mut s, Some(child)).await?
        };
        let _ = c.unlock(key).await;
        let _ = c.lease_revoke(s.id).await;
        exit_with(status)
    })
}

fn spawn(cmd: &[String], env: &[(&str, String)]) -> anyhow::Result<Child> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn()
        .with_context(|| format!("cannot run {:?}", cmd[0]))
}

/// Keeps the session alive while the child runs (or until Ctrl-C without
/// one). Stops the child before the lease could expire if renewals fail.
async fn hold(s: &mut Session, mut child: Option<Child>) -> anyhow::Result<Option<ExitStatus>> {
    let grace = Duration::from_secs(2).min(s.ttl / 4);
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        if let Some(ch) = child.as_mut() {
            if let Some(st) = ch.try_wait()? {
                return Ok(Some(st));
            }
        }
        let renewed = s.renew().await;
        if !renewed && Instant::now() + grace * 2 >= s.valid_until {
            if let Some(ch) = child.as_mut() {
                terminate(ch, grace);
            }
            bail!("lost the session lease {:x}; the command was stopped", s.id);
        }
        tokio::select! {
            () = &mut stop => {
                if let Some(ch) = child.as_mut() { terminate(ch, grace); }
                return Ok(None);
            }
            () = tokio::time::sleep(s.ttl / 6) => {}
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn exit_with(status: Option<ExitStatus>) -> anyhow::Result<()> {
    match status {
        Some(st) if !st.success() => std::process::exit(st.code().unwrap_or(1)),
        _ => Ok(()),
    }
}

/// `nines elect NAME [PROPOSAL]`
#[derive(Args, Debug)]
pub struct ElectArgs {
    /// Election name.
    name: String,
    /// Campaign with this value; without it, observe the leader.
    proposal: Option<String>,
    /// Observe only (print each new leader).
    #[arg(short = 'l', long)]
    listen: bool,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
}

/// Runs `nines elect`.
pub fn run_elect(args: ElectArgs, endpoints: &[String]) -> anyhow::Result<()> {
    if args.name.is_empty() {
        bail!("the election name is empty");
    }
    runtime()?.block_on(async move {
        let mut c = crate::connect(endpoints).await?;
        match (args.listen, args.proposal) {
            (false, Some(p)) => {
                let mut s = Session::open(&mut c, args.ttl).await?;
                let r = c.campaign(args.name.clone(), p.clone(), s.id).await?;
                let leader = r.leader().context("no leader key in the campaign answer")?.clone();
                println!("{}\n{p}", String::from_utf8_lossy(leader.key()));
                let _ = hold(&mut s, None).await;
                let _ = c.resign(Some(ResignOptions::new().with_leader(leader))).await;
                let _ = c.lease_revoke(s.id).await;
                Ok(())
            }
            _ => {
                let mut stream = c.observe(args.name.clone()).await?;
                let stop = crate::shutdown_signal();
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        () = &mut stop => return Ok(()),
                        m = stream.message() => match m? {
                            Some(r) => if let Some(kv) = r.kv() {
                                println!("{}\n{}", String::from_utf8_lossy(kv.key()), String::from_utf8_lossy(kv.value()));
                            },
                            None => return Ok(()),
                        }
                    }
                }
            }
        }
    })
}

/// `nines run --elect NAME -- CMD...`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Election to win before running CMD.
    #[arg(long)]
    elect: String,
    /// Session (lease) TTL in seconds: a standby takes over within about this.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    /// Seconds between SIGTERM and SIGKILL when stopping CMD.
    #[arg(long, default_value_t = 2)]
    grace: u64,
    /// Value to campaign with (default: host and pid).
    #[arg(long)]
    value: Option<String>,
    /// The command.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs `nines run --elect`: campaign, run CMD while leader, stop it the
/// moment leadership or the lease is lost (or may be), campaign again.
pub fn run_elected(args: RunArgs, endpoints: &[String]) -> anyhow::Result<()> {
    crate::init_logging();
    if args.elect.is_empty() {
        bail!("--elect needs a name");
    }
    let value = args
        .value
        .clone()
        .unwrap_or_else(|| format!("pid {}", std::process::id()));
    runtime()?.block_on(async move {
        let stop = crate::shutdown_signal();
        tokio::pin!(stop);
        for round in 0u64..u64::MAX {
            let attempt = async {
                let mut c = crate::connect(endpoints).await?;
                let mut s = Session::open(&mut c, args.ttl).await?;
                tracing::info!(lease = %format!("{:x}", s.id), round, "campaigning");
                // Keep the session alive while waiting for leadership.
                let mut campaigner = c.clone();
                let campaign = campaigner.campaign(args.elect.clone(), value.clone(), s.id);
                tokio::pin!(campaign);
                let won = loop {
                    tokio::select! {
                        r = &mut campaign => break r?,
                        () = tokio::time::sleep(s.ttl / 6) => {
                            if !s.renew().await && Instant::now() >= s.valid_until {
                                bail!("session lease expired while campaigning");
                            }
                        }
                    }
                };
                let leader = won.leader().context("no leader key in the campaign answer")?.clone();
                let token = leader.rev();
                tracing::info!(fencing_token = token, "won the election; starting the command");
                let mut child = spawn(&args.command, &[
                    ("NINES_FENCING_TOKEN", token.to_string()),
                    ("NINES_LEADER_KEY", String::from_utf8_lossy(leader.key()).into_owned()),
                ])?;
                let grace = Duration::from_secs(args.grace);
                loop {
                    if let Some(st) = child.try_wait()? {
                        let _ = c.resign(Some(ResignOptions::new().with_leader(leader))).await;
                        let _ = c.lease_revoke(s.id).await;
                        return Ok(Some(st));
                    }
                    let renewed = s.renew().await;
                    // Stop the command while the lease is still certainly
                    // valid, so two commands never run with valid leases.
                    if !renewed && Instant::now() + grace + s.ttl / 3 >= s.valid_until {
                        tracing::warn!("cannot renew the session lease; stopping the command");
                        terminate(&mut child, grace);
                        return Ok(None);
                    }
                    tokio::time::sleep(s.ttl / 6).await;
                }
            };
            tokio::select! {
                () = &mut stop => return Ok(()),
                r = attempt => match r {
                    Ok(Some(status)) => return exit_with(Some(status)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "election round failed; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    })
}
