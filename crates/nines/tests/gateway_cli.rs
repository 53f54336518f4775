//! `nines gateway` and `nines demo-backend` as a user runs them: real
//! processes on loopback, a config file, and a refused bad config.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills and reaps the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn demo_backend(name: &str) -> anyhow::Result<(Guard, SocketAddr)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nines"))
        .args(["demo-backend", "--port", "0", "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Guard(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .ok_or_else(|| anyhow::anyhow!("no address: {line:?}"))?;
    Ok((guard, addr.parse()?))
}

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn gateway_balances_over_demo_backends_and_refuses_a_bad_config() -> anyhow::Result<()> {
    let (_alpha, alpha) = demo_backend("alpha")?;
    let (_beta, beta) = demo_backend("beta")?;
    assert!(get(alpha, "/health")?.ends_with("ok\n"));
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nworker_threads = 1\n\n[[listener]]\nname = \"web\"\nbind = \"{listen}\"\nprotocol = \"http\"\n\n\
             [[listener.route]]\npath_prefix = \"/\"\ncluster = \"web\"\n\n[[cluster]]\nname = \"web\"\n\
             balance = \"round_robin\"\nbackends = [{{ addr = \"{alpha}\" }}, {{ addr = \"{beta}\" }}]\n"
        ),
    )?;
    let _gateway = Guard(
        Command::new(env!("CARGO_BIN_EXE_nines"))
            .arg("gateway")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(listen, "/").is_err() {
        anyhow::ensure!(Instant::now() < deadline, "gateway never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut names = Vec::new();
    for _ in 0..4 {
        let answer = get(listen, "/")?;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        names.push(answer.lines().last().unwrap_or_default().to_owned());
    }
    names.sort();
    assert_eq!(names, ["alpha", "alpha", "beta", "beta"]);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"udp\"\n",
    )?;
    let output = Command::new(env!("CARGO_BIN_EXE_nines"))
        .arg("gateway")
        .arg("--config")
        .arg(&bad)
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:4:"),
        "the error names file and line: {stderr}"
    );
    Ok(())
}
