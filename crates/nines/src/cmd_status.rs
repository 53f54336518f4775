//! `nines status`: each endpoint's member, leader, term, revision, Raft
//! indexes, db size and health, in one table (or JSON).

use std::io::Write;

use clap::Args;

/// `nines status`
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Output format: table or json.
    #[arg(short = 'w', long = "write-out", default_value = "table")]
    write_out: String,
}

/// Runs `nines status`.
pub fn run(args: StatusArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut rows = Vec::new();
        let mut failures = 0;
        for ep in endpoints {
            let one = [ep.clone()];
            let res = async {
                let mut c = crate::connect(&one).await?;
                let st = c.status().await?;
                let members = c.member_list().await?;
                anyhow::Ok((st, members))
            }
            .await;
            match res {
                Ok((st, members)) => {
                    let h = st.header().cloned();
                    let member_id = h.as_ref().map(|h| h.member_id()).unwrap_or(0);
                    let name = members
                        .members()
                        .iter()
                        .find(|m| m.id() == member_id)
                        .map(|m| m.name().to_string())
                        .unwrap_or_default();
                    let leader_name = members
                        .members()
                        .iter()
                        .find(|m| m.id() == st.leader())
                        .map(|m| m.name().to_string())
                        .unwrap_or_else(|| "-".into());
                    rows.push(serde_json::json!({
                        "endpoint": ep,
                        "name": name,
                        "id": format!("{member_id:x}"),
                        "is_leader": member_id == st.leader() && st.leader() != 0,
                        "leader": leader_name,
                        "term": st.raft_term(),
                        "raft_index": st.raft_index(),
                        "applied_index": st.raft_applied_index(),
                        "revision": h.as_ref().map(|h| h.revision()).unwrap_or(0),
                        "db_size": st.db_size(),
                        "health": st.leader() != 0,
                    }));
                }
                Err(e) => {
                    failures += 1;
                    rows.push(serde_json::json!({"endpoint": ep, "error": format!("{e:#}"), "health": false}));
                }
            }
        }
        let mut out = std::io::stdout().lock();
        if args.write_out == "json" {
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        } else {
            writeln!(out, "{:<22} {:<8} {:<17} {:<7} {:<8} {:>6} {:>10} {:>10} {:>9} {:>10}  HEALTH",
                "ENDPOINT", "NAME", "ID", "LEADER", "IS LEAD", "TERM", "RAFT IDX", "APPLIED", "REVISION", "DB SIZE")?;
            for r in &rows {
                if let Some(e) = r.get("error") {
                    writeln!(out, "{:<22} unreachable: {}", r["endpoint"].as_str().unwrap_or(""), e.as_str().unwrap_or(""))?;
                    continue;
                }
                let f = |k: &str| match &r[k] {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                writeln!(
                    out,
                    "{:<22} {:<8} {:<17} {:<7} {:<8} {:>6} {:>10} {:>10} {:>9} {:>10}  {}",
                    f("endpoint"),
                    f("name"),
                    f("id"),
                    f("leader"),
                    f("is_leader"),
                    f("term"),
                    f("raft_index"),
                    f("applied_index"),
                    f("revision"),
                    f("db_size"),
                    if r["health"] == true { "healthy" } else { "no leader" }
                )?;
            }
        }
        if failures > 0 {
            anyhow::bail!("{failures} of {} endpoints unreachable", endpoints.len());
        }
        Ok(())
    })
}
