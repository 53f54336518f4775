//! Shared helpers for the process tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
pub use nines_testkit::Cluster;

/// Path of the `nines` binary under test.
pub fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nines"))
}

/// Starts a cluster of `n` members with `extra` flags and waits for a leader.
pub async fn cluster(n: usize, extra: &[&str]) -> Cluster {
    let c = Cluster::start(exe(), n, extra).expect("cluster starts");
    c.wait_agreed_leader(Duration::from_secs(30))
        .await
        .expect("cluster elects a leader");
    c.wait_ready(Duration::from_secs(30))
        .await
        .expect("members ready");
    c
}

/// An etcd client over the given endpoints.
pub async fn client(endpoints: &[String]) -> Client {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(8));
    Client::connect(eps, Some(opts))
        .await
        .expect("client connects")
}

/// Output of one etcdctl run.
pub struct Out {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the real `etcdctl` (v3 API) against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .expect("etcdctl runs (install it with scripts/install-test-deps.sh)");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("etcdctl finishes");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
