//! `nines avail "EXPR"`: an availability calculator for designs. EXPR is a
//! component (`99.9%`, or `mtbf=1000h,mttr=1h`) or a combination, nested
//! freely: `series(A, B, ...)`, `parallel(A, B, ...)`, `KofN(A)` such as
//! `2of3(99%)` (k of n identical components must be up, e.g. a quorum).
//! Prints the availability, the number of nines, the downtime per year,
//! month and week, and the formula used.
//!
//! `nines avail report [--service NAME] [--window 30d]`: what services
//! actually delivered, from the history the cluster recorded (the same
//! figures as `GET /v1/availability`), read over the etcd API: the
//! time-based figures from health transitions and, on a line below each
//! service, the request-based ones from what gateways proxied.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};

/// `nines avail "EXPR"` or `nines avail report`
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AvailArgs {
    #[command(subcommand)]
    command: Option<AvailCommand>,
    /// The design, e.g. `series(99.99%, 2of3(99.9%))`.
    expr: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AvailCommand {
    /// Recorded availability of the registry's services.
    Report(ReportArgs),
}

/// `nines avail report`
#[derive(Args, Debug)]
struct ReportArgs {
    /// Only this service (default: every service with a recorded history).
    #[arg(long)]
    service: Option<String>,
    /// The window: 1h, 24h, 7d or 30d.
    #[arg(long, default_value = "30d")]
    window: String,
    /// Output format: `table` or `json` (the full reports).
    #[arg(short = 'w', long = "write-out", default_value = "table")]
    write_out: String,
}

/// A parsed design.
#[derive(Debug, Clone, PartialEq)]
enum Design {
    /// One component with its availability (0..=1).
    Component(f64),
    /// All must be up.
    Series(Vec<Design>),
    /// At least one must be up.
    Parallel(Vec<Design>),
    /// At least `k` of `n` identical copies must be up.
    KofN { k: u32, n: u32, of: Box<Design> },
}

impl Design {
    fn availability(&self) -> f64 {
        match self {
            Design::Component(a) => *a,
            Design::Series(v) => v.iter().map(Design::availability).product(),
            Design::Parallel(v) => 1.0 - v.iter().map(|d| 1.0 - d.availability()).product::<f64>(),
            Design::KofN { k, n, of } => {
                let a = of.availability();
                (*k..=*n)
                    .map(|i| binomial(*n, i) * a.powi(i as i32) * (1.0 - a).powi((n - i) as i32))
                    .sum()
            }
        }
    }

    fn formula(&self) -> String {
        match self {
            Design::Component(a) => format!("{a}"),
            Design::Series(v) => v
                .iter()
                .map(|d| d.formula())
                .collect::<Vec<_>>()
                .join(" x "),
            Design::Parallel(v) => format!(
                "1 - {}",
                v.iter()
                    .map(|d| format!("(1 - {})", d.formula()))
                    .collect::<Vec<_>>()
                    .join(" x ")
            ),
            Design::KofN { k, n, of } => {
                format!(
                    "sum over i={k}..{n} of C({n},i) a^i (1-a)^({n}-i), a = {}",
                    of.formula()
                )
            }
        }
    }
}

fn binomial(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

/// Splits `s` at top-level commas (not inside parentheses).
fn split_args(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            bail!("unbalanced parentheses in {s:?}");
        }
        if c == ',' && depth == 0 {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if depth != 0 {
        bail!("unbalanced parentheses in {s:?}");
    }
    out.push(cur);
    // `mtbf=X,mttr=Y` is one component even though it holds a comma.
    let mut merged: Vec<String> = Vec::new();
    for part in out.into_iter().map(|p| p.trim().to_string()) {
        if part.starts_with("mttr=") {
            if let Some(last) = merged.last_mut() {
                if last.starts_with("mtbf=") && !last.contains("mttr=") {
                    last.push(',');
                    last.push_str(&part);
                    continue;
                }
            }
        }
        merged.push(part);
    }
    Ok(merged)
}

fn parse_hours(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("bad duration {s:?}: expected e.g. 1000h or 30m"))?;
    let hours = match unit {
        "h" | "" => v,
        "m" => v / 60.0,
        "s" => v / 3600.0,
        "d" => v * 24.0,
        "y" => v * 24.0 * 365.25,
        u => bail!("bad duration unit {u:?} in {s:?}: use s, m, h, d or y"),
    };
    Ok(hours)
}

fn parse(s: &str) -> anyhow::Result<Design> {
    let s = s.trim();
    if s.is_empty() {
        bail!("empty expression");
    }
    if let (false, Some(p)) = (s.contains('('), s.strip_suffix('%')) {
        let v: f64 = p
            .trim()
            .parse()
            .with_context(|| format!("bad percentage {s:?}"))?;
        if !(0.0..=100.0).contains(&v) {
            bail!("availability {s} is outside 0%..100%");
        }
        return Ok(Design::Component(v / 100.0));
    }
    if s.starts_with("mtbf=") {
        let (mtbf, mttr) = s
            .split_once(',')
            .context("a component by MTBF needs both: mtbf=1000h,mttr=1h")?;
        let mtbf = parse_hours(mtbf.trim().trim_start_matches("mtbf="))?;
        let mttr = mttr
            .trim()
            .strip_prefix("mttr=")
            .context("expected mttr=DURATION after the comma")?;
        let mttr = parse_hours(mttr)?;
        if mtbf <= 0.0 {
            bail!("MTBF must be positive");
        }
        if mttr < 0.0 {
            bail!("MTTR must not be negative");
        }
        return Ok(Design::Component(mtbf / (mtbf + mttr)));
    }
    let open = s.find('(').with_context(|| format!("cannot read {s:?}: expected 99.9%, mtbf=..,mttr=.., series(..), parallel(..) or KofN(..)"))?;
    if !s.ends_with(')') {
        bail!("{s:?} must end with ')'");
    }
    let name = s[..open].trim();
    let args = split_args(&s[open + 1..s.len() - 1])?
        .iter()
        .map(|a| parse(a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match name {
        "series" => Ok(Design::Series(args)),
        "parallel" => Ok(Design::Parallel(args)),
        _ => {
            let (k, n) = name.split_once("of").with_context(|| {
                format!("unknown function {name:?}: use series, parallel or KofN like 2of3")
            })?;
            let k: u32 = k.parse().with_context(|| format!("bad k in {name:?}"))?;
            let n: u32 = n.parse().with_context(|| format!("bad n in {name:?}"))?;
            if k == 0 || k > n || n > 1000 {
                bail!("{k}-of-{n} is impossible: need 1 <= k <= n <= 1000");
            }
            let [one] = <[Design; 1]>::try_from(args).map_err(|_| {
                anyhow::anyhow!("{name}(..) takes one component (the identical copies)")
            })?;
            Ok(Design::KofN {
                k,
                n,
                of: Box::new(one),
            })
        }
    }
}

/// Availability as a percentage with enough digits to show its nines.
fn percent(a: f64) -> String {
    let nines = if a >= 1.0 { 2.0 } else { -(1.0 - a).log10() };
    let decimals = ((nines - 1e-9).ceil() as i64 - 2).clamp(2, 12) as usize;
    format!("{:.*}%", decimals, a * 100.0)
}

fn downtime(minutes: f64) -> String {
    if minutes >= 1440.0 {
        format!("{:.2} days", minutes / 1440.0)
    } else if minutes >= 60.0 {
        format!("{:.2} hours", minutes / 60.0)
    } else if minutes >= 1.0 {
        format!("{minutes:.2} minutes")
    } else {
        format!("{:.2} seconds", minutes * 60.0)
    }
}

/// Runs `nines avail`.
pub fn run(args: AvailArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let expr = match (args.command, args.expr) {
        (Some(AvailCommand::Report(r)), _) => return run_report(r, endpoints),
        (None, Some(expr)) => expr,
        (None, None) => {
            bail!("give a design, e.g. nines avail \"2of3(99.9%)\", or: nines avail report")
        }
    };
    let design = parse(&expr)?;
    let a = design.availability();
    let u = 1.0 - a;
    let year_min = 365.25 * 24.0 * 60.0;
    println!("availability: {}", percent(a));
    if u > 0.0 {
        println!("nines: {:.2}", -u.log10());
    } else {
        println!("nines: infinite (no downtime)");
    }
    println!("downtime per year: {}", downtime(u * year_min));
    println!("downtime per month: {}", downtime(u * year_min / 12.0));
    println!("downtime per week: {}", downtime(u * 7.0 * 24.0 * 60.0));
    println!("formula: {}", design.formula());
    Ok(())
}

/// Prints what the services delivered over one window.
fn run_report(args: ReportArgs, endpoints: &[String]) -> anyhow::Result<()> {
    use nines_registry::availability::{fetch_report, fetch_services, WINDOWS};
    if !WINDOWS.iter().any(|(w, _)| *w == args.window) {
        bail!(
            "unknown window {:?}: use one of {}",
            args.window,
            WINDOWS.map(|(w, _)| w).join(", ")
        );
    }
    if !matches!(args.write_out.as_str(), "table" | "json") {
        bail!(
            "unknown output format {:?}: use table or json",
            args.write_out
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = rt.block_on(async {
        let client = crate::connect(endpoints).await?;
        let registry = nines_registry::Registry::new(client);
        let services = match &args.service {
            Some(s) => vec![s.clone()],
            None => fetch_services(&registry)
                .await
                .context("cannot read the recorded availability")?,
        };
        let mut reports = Vec::new();
        for s in services {
            match fetch_report(&registry, &s)
                .await
                .with_context(|| format!("cannot read the availability of {s:?}"))?
            {
                Some(r) => reports.push(r),
                None if args.service.is_some() => {
                    return Err(anyhow!("no availability recorded for service {s:?}"))
                }
                None => {}
            }
        }
        anyhow::Ok(reports)
    })?;
    if args.write_out == "json" {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    println!(
        "{:<24} {:>5} {:>6} {:>12} {:>7} {:>12} {:>8} {:>10}",
        "SERVICE", "NOW", "WINDOW", "AVAILABILITY", "NINES", "DOWNTIME", "SLO", "BUDGET"
    );
    for r in &reports {
        let Some(w) = r.windows.iter().find(|w| w.window == args.window) else {
            continue;
        };
        let fmt_opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
        println!(
            "{:<24} {:>5} {:>6} {:>12} {:>7} {:>12} {:>8} {:>10}",
            r.service,
            if r.up { "up" } else { "DOWN" },
            w.window,
            fmt_opt(w.availability_percent, &|a| format!("{a:.4}%")),
            fmt_opt(w.nines, &|n| format!("{n:.2}")),
            downtime(w.downtime_seconds / 60.0),
            fmt_opt(r.slo_percent, &|s| format!("{s}%")),
            fmt_opt(w.error_budget_remaining_percent, &|b| format!("{b:.1}%")),
        );
        println!("  requests: {}", request_line(&w.gateway_requests));
        let window_ms = WINDOWS
            .iter()
            .find(|(n, _)| *n == args.window)
            .map_or(0, |(_, ms)| *ms);
        let since = r.now_ms.saturating_sub(window_ms);
        for i in r
            .incidents
            .iter()
            .filter(|i| i.end_ms.is_none_or(|end| end >= since))
        {
            println!(
                "  incident: down at {} ms, {} ({})",
                i.start_ms,
                downtime(i.duration_ms as f64 / 60_000.0),
                if i.end_ms.is_some() {
                    "ended"
                } else {
                    "ongoing"
                }
            );
        }
    }
    if reports.is_empty() {
        println!("(no service has a recorded history yet)");
    }
    Ok(())
}

/// The request-based figures of one window, on one line.
fn request_line(r: &nines_registry::availability::RequestWindowReport) -> String {
    let Some(success) = r.success_percent else {
        return "no requests".into();
    };
    let mut line = format!(
        "{} requests, {} failed, {success:.4}% succeeded",
        r.requests, r.failed
    );
    if let Some(n) = r.nines {
        line.push_str(&format!(" ({n:.2} nines)"));
    }
    if let (Some(budget), Some(burn)) = (r.error_budget_remaining_percent, r.burn_rate) {
        line.push_str(&format!(", budget {budget:.1}% left, burn rate {burn:.2}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avail(e: &str) -> f64 {
        parse(e).expect("parses").availability()
    }

    #[test]
    fn textbook_numbers() {
        assert!((avail("parallel(99.9%, 99.9%)") - 0.999999).abs() < 1e-12);
        assert!((avail("2of3(99%)") - 0.999702).abs() < 1e-9);
        assert!((avail("series(99.99%, 99.9%)") - 0.9989001).abs() < 1e-12);
        let five_nines_minutes = (1.0 - avail("99.999%")) * 365.25 * 24.0 * 60.0;
        assert_eq!(format!("{five_nines_minutes:.2}"), "5.26");
        assert!((avail("mtbf=999h,mttr=1h") - 0.999).abs() < 1e-12);
        assert!(
            (avail("series(mtbf=999h,mttr=1h, parallel(99%, 2of3(99.9%)))")
                - 0.999 * (1.0 - 0.01 * (1.0 - avail("2of3(99.9%)"))))
            .abs()
                < 1e-12
        );
        assert_eq!(percent(avail("2of3(99%)")), "99.97%");
        assert_eq!(percent(0.999999), "99.9999%");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        for (e, want) in [
            ("101%", "outside 0%..100%"),
            ("mtbf=10h,mttr=-1h", "MTTR must not be negative"),
            ("4of3(99%)", "impossible"),
            ("series(99%", "must end with ')'"),
            ("foo(99%)", "unknown function"),
            ("", "empty expression"),
            ("2of3(99%, 98%)", "takes one component"),
        ] {
            let err = parse(e).expect_err(e).to_string();
            assert!(err.contains(want), "{e}: {err}");
        }
    }
}
