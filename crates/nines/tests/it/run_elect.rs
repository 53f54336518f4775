//! `nines run --elect`: two supervisors of one command; the active one's
//! machine dies (or is cut off) and the standby's command starts within
//! TTL + 2 s, never while the old command still runs with a valid lease.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{cluster, exe};

const TTL: u64 = 3;

/// The supervised command: logs `start TOKEN MS`, then `alive TOKEN MS`
/// every 100 ms, and `stop TOKEN MS` on SIGTERM.
const SCRIPT: &str = r#"
log="$1"
now() { date +%s%3N; }
echo "start $NINES_FENCING_TOKEN $(now)" >> "$log"
trap 'echo "stop $NINES_FENCING_TOKEN $(now)" >> "$log"; exit 0' TERM
i=0
while [ $i -lt 6000 ]; do echo "alive $NINES_FENCING_TOKEN $(now)" >> "$log"; sleep 0.1; i=$((i+1)); done
"#;

fn supervisor(endpoint: &str, log: &Path) -> Child {
    Command::new(exe())
        .args([
            "run",
            "--elect",
            "svc",
            "--ttl",
            &TTL.to_string(),
            "--grace",
            "1",
        ])
        .args(["--endpoints", endpoint])
        .args(["--", "sh", "-c", SCRIPT, "sh"])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("supervisor starts")
}

fn lines(log: &Path) -> Vec<(String, i64, i64)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_string(),
                w.next()?.parse().ok()?,
                w.next()?.parse().ok()?,
            ))
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

async fn wait_for(log: &Path, what: &str, timeout: Duration) -> (i64, i64) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((_, token, ms)) = lines(log).into_iter().find(|l| l.0 == what) {
            return (token, ms);
        }
        assert!(
            Instant::now() < deadline,
            "no `{what}` in {} within {timeout:?}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill_group(child: &mut Child) {
    let _ = kill(Pid::from_raw(-(child.id() as i32)), Signal::SIGKILL);
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_active_machine_dies() {
    let mut c = cluster(3, &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = supervisor(&c.members[0].client, &log_a);
    let (token_a, _) = wait_for(&log_a, "start", Duration::from_secs(20)).await;
    let mut b = supervisor(&c.members[1].client, &log_b);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        lines(&log_b).is_empty(),
        "the standby must not run while the active one leads"
    );
    // The active machine dies: its member, its supervisor and its command.
    let killed_at = now_ms();
    c.kill(0);
    kill_group(&mut a);
    let (token_b, started) = wait_for(&log_b, "start", Duration::from_secs(TTL + 10)).await;
    let took = started - killed_at;
    eprintln!("standby started {took} ms after the kill");
    assert!(took <= ((TTL + 2) * 1000) as i64, "standby took {took} ms");
    assert!(
        token_b > token_a,
        "fencing tokens grow: {token_a} then {token_b}"
    );
    let last_a = lines(&log_a).iter().map(|l| l.2).max().expect("a ran");
    assert!(last_a < started, "both commands ran at once");
    kill_group(&mut b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_supervisor_stops_its_command_before_the_standby_starts() {
    let c = cluster(3, &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = supervisor(&c.members[0].client, &log_a);
    wait_for(&log_a, "start", Duration::from_secs(20)).await;
    let mut b = supervisor(&c.members[1].client, &log_b);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The active supervisor's member freezes: it can no longer renew.
    c.pause(0, true);
    let (_, stopped) = wait_for(&log_a, "stop", Duration::from_secs(TTL + 10)).await;
    let (_, started) = wait_for(&log_b, "start", Duration::from_secs(TTL + 15)).await;
    assert!(
        stopped < started,
        "standby started at {started} before the active command stopped at {stopped}"
    );
    let last_a = lines(&log_a)
        .iter()
        .filter(|l| l.0 != "stop")
        .map(|l| l.2)
        .max()
        .expect("a ran");
    assert!(last_a < started, "both commands ran at once");
    c.pause(0, false);
    kill_group(&mut a);
    kill_group(&mut b);
}
