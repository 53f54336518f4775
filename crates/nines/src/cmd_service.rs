//! `nines service register/deregister/list/health/heartbeat`: the registry
//! from the shell, over the etcd API of `--endpoints` through
//! nines-registry (the same validation and writes as the HTTP API).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use nines_registry::{InstanceView, Registration, Registry};

/// `nines service ...`.
#[derive(Args, Debug)]
pub struct ServiceArgs {
    #[command(subcommand)]
    op: ServiceOp,
    /// Output format: `simple` or `json`.
    #[arg(long, short = 'w', global = true, default_value = "simple")]
    write_out: String,
}

/// The instance flags of `register` (the HTTP body's names).
#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Service name.
    #[arg(long)]
    name: String,
    /// Instance id.
    #[arg(long)]
    id: String,
    /// IP address.
    #[arg(long)]
    address: String,
    /// Port.
    #[arg(long)]
    port: i64,
    /// Weight (default 1).
    #[arg(long)]
    weight: Option<i64>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Metadata KEY=VALUE (repeatable).
    #[arg(long = "meta")]
    meta: Vec<String>,
    /// Check kind: none, ttl, http or tcp.
    #[arg(long)]
    check: Option<String>,
    /// URL of an http check.
    #[arg(long)]
    check_url: Option<String>,
    /// Expected status of an http check (default: any 2xx).
    #[arg(long)]
    check_status: Option<i64>,
    /// Address of a tcp check (default: address:port).
    #[arg(long)]
    check_addr: Option<String>,
    /// TTL of a ttl check, e.g. 10s.
    #[arg(long)]
    ttl: Option<String>,
    /// Interval of an active check, e.g. 1s.
    #[arg(long, allow_hyphen_values = true)]
    interval: Option<String>,
    /// Timeout of an active check, e.g. 500ms.
    #[arg(long, allow_hyphen_values = true)]
    timeout: Option<String>,
    /// Consecutive successes to become passing.
    #[arg(long)]
    rise: Option<i64>,
    /// Consecutive failures to become critical.
    #[arg(long)]
    fall: Option<i64>,
    /// Deregister after being critical this long, e.g. 1m.
    #[arg(long)]
    deregister_after: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ServiceOp {
    /// Register (or replace) an instance.
    Register(Box<RegisterArgs>),
    /// Remove an instance.
    Deregister {
        /// Service name.
        #[arg(long)]
        name: String,
        /// Instance id.
        #[arg(long)]
        id: String,
    },
    /// List services with their instance counts.
    List,
    /// The instances of a service and their health.
    Health {
        /// Service name.
        name: String,
        /// Only passing instances.
        #[arg(long)]
        passing: bool,
    },
    /// Heartbeat a TTL instance once, or every `--every` until stopped.
    Heartbeat {
        /// Service name.
        #[arg(long)]
        name: String,
        /// Instance id.
        #[arg(long)]
        id: String,
        /// Keep heartbeating at this interval (e.g. 1s).
        #[arg(long)]
        every: Option<String>,
    },
}

fn text(value: Option<String>) -> Option<serde_json::Value> {
    value.map(serde_json::Value::String)
}

impl RegisterArgs {
    fn registration(&self) -> anyhow::Result<Registration> {
        let mut meta = std::collections::BTreeMap::new();
        for pair in &self.meta {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--meta {pair:?} is not KEY=VALUE"))?;
            meta.insert(k.to_string(), v.to_string());
        }
        Ok(Registration {
            name: None,
            id: None,
            address: Some(self.address.clone()),
            port: Some(self.port),
            weight: self.weight,
            tags: self.tags.clone(),
            meta,
            check: self.check.clone(),
            check_url: self.check_url.clone(),
            check_status: self.check_status,
            check_addr: self.check_addr.clone(),
            ttl: text(self.ttl.clone()),
            interval: text(self.interval.clone()),
            timeout: text(self.timeout.clone()),
            rise: self.rise,
            fall: self.fall,
            deregister_after: text(self.deregister_after.clone()),
        })
    }
}

/// Runs `nines service ...`.
pub fn run(args: ServiceArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build runtime")?;
    runtime.block_on(run_async(args, endpoints))
}

async fn run_async(args: ServiceArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let json = match args.write_out.as_str() {
        "json" => true,
        "simple" => false,
        other => bail!("-w must be simple or json, not {other:?}"),
    };
    let client = crate::connect(endpoints).await?;
    let registry = Registry::new(client);
    match args.op {
        ServiceOp::Register(r) => {
            // Validate before touching the store: bad input stores nothing.
            let instance = r.registration()?.validate(&r.name, &r.id)?;
            let revision = registry.register(instance).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"service": r.name, "id": r.id, "index": revision})
                );
            } else {
                println!("registered {}/{} at revision {revision}", r.name, r.id);
            }
        }
        ServiceOp::Deregister { name, id } => match registry.deregister(&name, &id).await? {
            Some(revision) => println!("deregistered {name}/{id} at revision {revision}"),
            None => bail!("instance {id:?} of service {name:?} is not registered"),
        },
        ServiceOp::List => list(&registry, json).await?,
        ServiceOp::Health { name, passing } => health(&registry, &name, passing, json).await?,
        ServiceOp::Heartbeat { name, id, every } => {
            registry.heartbeat(&name, &id).await?;
            match every {
                None => println!("heartbeat {name}/{id}"),
                Some(every) => heartbeat_loop(&registry, &name, &id, every).await?,
            }
        }
    }
    Ok(())
}

async fn list(registry: &Registry, json: bool) -> anyhow::Result<()> {
    let catalog = registry.load().await?;
    let rows: Vec<_> = catalog
        .services()
        .map(|(name, service)| {
            serde_json::json!({
                "name": name,
                "instances": service.registered().count(),
                "passing": service.healthy(None).count(),
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"index": catalog.index, "services": rows})
        );
        return Ok(());
    }
    for row in rows {
        println!(
            "{}\t{} instances\t{} passing",
            row["name"].as_str().unwrap_or(""),
            row["instances"],
            row["passing"]
        );
    }
    Ok(())
}

async fn health(registry: &Registry, name: &str, passing: bool, json: bool) -> anyhow::Result<()> {
    let catalog = registry.load().await?;
    let views: Vec<InstanceView> = catalog.service(name).map_or_else(Vec::new, |s| {
        s.registered()
            .filter(|(e, _)| !passing || e.is_healthy())
            .map(|(e, i)| InstanceView::new(e, i))
            .collect()
    });
    if json {
        let index = catalog.service_index(name);
        println!(
            "{}",
            serde_json::json!({"service": name, "index": index, "instances": views})
        );
        return Ok(());
    }
    for v in views {
        println!(
            "{}\t{}:{}\t{}\t{}",
            v.id, v.address, v.port, v.status, v.output
        );
    }
    Ok(())
}

/// Heartbeats every `every` until SIGINT/SIGTERM; a failed heartbeat is
/// reported and the next one tried (the store may be between leaders).
async fn heartbeat_loop(
    registry: &Registry,
    name: &str,
    id: &str,
    every: String,
) -> anyhow::Result<()> {
    let every = nines_registry::model::parse_duration("every", &serde_json::Value::String(every))?
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return Ok(()),
        }
        if let Err(error) = registry.heartbeat(name, id).await {
            eprintln!("heartbeat {name}/{id}: {error}");
        }
    }
}
