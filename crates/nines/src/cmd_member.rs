//! `nines member`: list, add, remove, promote and update cluster members
//! through etcd's Cluster API. `add` prints the flags the new member must
//! start with, as etcdctl does. Ids are hexadecimal, as etcd prints them.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use etcd_client::{Member, MemberAddOptions};

/// `nines member`
#[derive(Args, Debug)]
pub struct MemberArgs {
    #[command(subcommand)]
    command: MemberCommand,
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// List members: id, status, name, peer and client URLs, learner.
    List {
        /// Output format: table or json.
        #[arg(short = 'w', long = "write-out", default_value = "table")]
        write_out: String,
    },
    /// Add a member; start it with the printed flags and
    /// `--initial-cluster-state existing`.
    Add {
        /// The new member's name (its `--name`).
        name: String,
        /// The new member's peer URLs, comma-separated.
        #[arg(long = "peer-urls", value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (no vote until promoted).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member by id (hex).
    Remove {
        /// Member id, hexadecimal.
        id: String,
    },
    /// Promote a learner to a voter once it is in sync.
    Promote {
        /// Member id, hexadecimal.
        id: String,
    },
    /// Replace a member's peer URLs.
    Update {
        /// Member id, hexadecimal.
        id: String,
        /// The new peer URLs, comma-separated.
        #[arg(long = "peer-urls", value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
    },
}

/// Runs `nines member ...`.
pub fn run(args: MemberArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut c = crate::connect(endpoints).await?;
        let mut out = std::io::stdout().lock();
        match args.command {
            MemberCommand::List { write_out } => {
                let resp = c.member_list().await.context("member list")?;
                print_members(&mut out, resp.members(), &write_out)?;
            }
            MemberCommand::Add {
                name,
                peer_urls,
                learner,
            } => {
                let opts = learner.then(|| MemberAddOptions::new().with_is_learner());
                let resp = c
                    .member_add(peer_urls.clone(), opts)
                    .await
                    .context("member add")?;
                let id = resp.member().map(|m| m.id()).unwrap_or(0);
                let cluster = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
                let kind = if learner { "learner " } else { "" };
                writeln!(
                    out,
                    "Added {kind}member {name} ({id:x}) to cluster {cluster:x}"
                )?;
                writeln!(out)?;
                writeln!(out, "Start it with:")?;
                writeln!(out, "  --name {name}")?;
                writeln!(
                    out,
                    "  --initial-cluster {}",
                    initial_cluster(resp.member_list(), id, &name)
                )?;
                writeln!(
                    out,
                    "  --initial-advertise-peer-urls {}",
                    peer_urls.join(",")
                )?;
                writeln!(out, "  --initial-cluster-state existing")?;
            }
            MemberCommand::Remove { id } => {
                let id = parse_id(&id)?;
                let resp = c.member_remove(id).await.context("member remove")?;
                let cluster = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
                writeln!(out, "Removed member {id:x} from cluster {cluster:x}")?;
            }
            MemberCommand::Promote { id } => {
                let id = parse_id(&id)?;
                let resp = c.member_promote(id).await.context("member promote")?;
                let cluster = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
                writeln!(out, "Promoted member {id:x} in cluster {cluster:x}")?;
            }
            MemberCommand::Update { id, peer_urls } => {
                let id = parse_id(&id)?;
                let resp = c
                    .member_update(id, peer_urls)
                    .await
                    .context("member update")?;
                let cluster = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
                writeln!(out, "Updated member {id:x} in cluster {cluster:x}")?;
            }
        }
        anyhow::Ok(())
    })
}

/// `name=url,...` for every member, the new one under its future name.
fn initial_cluster(members: &[Member], new_id: u64, new_name: &str) -> String {
    members
        .iter()
        .flat_map(|m| {
            let name = if m.id() == new_id {
                new_name.to_string()
            } else {
                m.name().to_string()
            };
            m.peer_urls()
                .iter()
                .map(move |u| format!("{name}={u}"))
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_id(s: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("bad member id {s:?}: expected hexadecimal"))
}

fn print_members(out: &mut impl Write, members: &[Member], format: &str) -> anyhow::Result<()> {
    if format == "json" {
        let rows: Vec<_> = members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": format!("{:x}", m.id()),
                    "name": m.name(),
                    "started": !m.name().is_empty(),
                    "peer_urls": m.peer_urls(),
                    "client_urls": m.client_urls(),
                    "is_learner": m.is_learner(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<17} {:<10} {:<10} {:<28} {:<28} LEARNER",
        "ID", "STATUS", "NAME", "PEER URLS", "CLIENT URLS"
    )?;
    for m in members {
        let status = if m.name().is_empty() {
            "unstarted"
        } else {
            "started"
        };
        writeln!(
            out,
            "{:<17} {:<10} {:<10} {:<28} {:<28} {}",
            format!("{:x}", m.id()),
            status,
            m.name(),
            m.peer_urls().join(","),
            m.client_urls().join(","),
            m.is_learner()
        )?;
    }
    Ok(())
}
