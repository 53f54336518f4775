//! The `nines` binary: command-line parsing and wiring only. Each subcommand
//! lives in its own `cmd_*` module; the work is done by the library crates.

mod backup_schedule;
mod cmd_avail;
mod cmd_backup;
mod cmd_bench;
mod cmd_chaos;
mod cmd_coord;
mod cmd_gateway;
mod cmd_kv;
mod cmd_member;
mod cmd_playground;
mod cmd_server;
mod cmd_service;
mod cmd_snapshot;
mod cmd_status;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the request paths allocate many
/// small short-lived buffers across threads, where glibc's malloc spent a
/// tenth of a member's CPU (see ARCHITECTURE.md, Dependencies).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// nines: keeps services answering while machines fail.
#[derive(Parser, Debug)]
#[command(name = "nines", version, about)]
struct Cli {
    /// Comma-separated client endpoints (host:port) of the cluster.
    #[arg(
        long,
        global = true,
        env = "NINES_ENDPOINTS",
        default_value = "127.0.0.1:2379",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one cluster member.
    Server(Box<cmd_server::ServerArgs>),
    /// Run a local cluster on loopback in one command, with demo backends
    /// behind a gateway and the dashboard.
    Playground(cmd_playground::PlaygroundArgs),
    /// Key-value operations.
    Kv(cmd_kv::KvArgs),
    /// Membership: list, add, remove, promote, update.
    Member(cmd_member::MemberArgs),
    /// Members, leader, term, revision and health of each endpoint.
    Status(cmd_status::StatusArgs),
    /// Leases: grant, revoke, keepalive, ttl, list.
    Lease(cmd_coord::LeaseArgs),
    /// Run a command while holding a distributed lock.
    Lock(cmd_coord::LockArgs),
    /// Campaign in an election, or observe its leader.
    Elect(cmd_coord::ElectArgs),
    /// Run a command only while this process wins an election (failover).
    Run(cmd_coord::RunArgs),
    /// Save a member's snapshot, or restore one into a new member's data dir.
    Snapshot(cmd_snapshot::SnapshotArgs),
    /// Availability calculator for designs: series, parallel, k-of-n.
    Avail(cmd_avail::AvailArgs),
    /// Service registry: register, deregister, list, health, heartbeat.
    Service(cmd_service::ServiceArgs),
    /// Run the load-balancing gateway.
    Gateway(cmd_gateway::GatewayArgs),
    /// Run a small HTTP backend for demos and tests.
    DemoBackend(cmd_gateway::DemoBackendArgs),
    /// Bounded fault-injection run with a verdict.
    Chaos(Box<cmd_chaos::ChaosArgs>),
    /// Load generators.
    Bench(cmd_bench::BenchArgs),
    /// Backups: create (full, diff, incr), list, verify, restore, prune.
    Backup(cmd_backup::BackupArgs),
}

/// Logs to stderr; `NINES_LOG` (e.g. `debug`, `nines_raft=debug`) sets the filter.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NINES_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=error,hickory_server=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Connects an etcd v3 client to `endpoints` (host:port or URLs).
pub(crate) async fn connect(endpoints: &[String]) -> anyhow::Result<etcd_client::Client> {
    cmd_kv::connect_client(endpoints).await
}

fn main() {
    if let Err(e) = run() {
        // The chain of causes, without a backtrace: errors say what went
        // wrong and what to do.
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let endpoints = cli.endpoints;
    match cli.command {
        Command::Server(args) => cmd_server::run(*args),
        Command::Playground(args) => cmd_playground::run(args),
        Command::Kv(args) => cmd_kv::run(args, &endpoints),
        Command::Member(args) => cmd_member::run(args, &endpoints),
        Command::Status(args) => cmd_status::run(args, &endpoints),
        Command::Lease(args) => cmd_coord::run_lease(args, &endpoints),
        Command::Lock(args) => cmd_coord::run_lock(args, &endpoints),
        Command::Elect(args) => cmd_coord::run_elect(args, &endpoints),
        Command::Run(args) => cmd_coord::run_elected(args, &endpoints),
        Command::Snapshot(args) => cmd_snapshot::run(args, &endpoints),
        Command::Avail(args) => cmd_avail::run(args, &endpoints),
        Command::Service(args) => cmd_service::run(args, &endpoints),
        Command::Gateway(args) => cmd_gateway::run_gateway(args, &endpoints),
        Command::DemoBackend(args) => cmd_gateway::run_demo_backend(args),
        Command::Chaos(args) => cmd_chaos::run(*args),
        Command::Bench(args) => cmd_bench::run(args, &endpoints),
        Command::Backup(args) => cmd_backup::run(args, &endpoints),
    }
}
