//! One probe of an active check: an HTTP GET that must answer the expected
//! status, or a TCP connect that must succeed, each within the check's
//! timeout. Returns the outcome as text for the health record; never panics
//! on what a backend sends.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::model::Check;

/// The result of one probe: `Ok(output)` passed, `Err(output)` failed.
pub type ProbeResult = Result<String, String>;

/// Runs one probe of `check` (HTTP or TCP); other kinds pass trivially.
pub async fn probe(check: &Check) -> ProbeResult {
    match check {
        Check::Http { url, status, probe } => http(url, *status, probe.timeout()).await,
        Check::Tcp { addr, probe } => tcp(*addr, probe.timeout()).await,
        Check::None | Check::Ttl { .. } => Ok(String::new()),
    }
}

async fn tcp(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(format!("tcp connect to {addr} succeeded")),
        Ok(Err(e)) => Err(format!("tcp connect to {addr}: {e}")),
        Err(_) => Err(format!("tcp connect to {addr} timed out after {timeout:?}")),
    }
}

async fn http(url: &str, expected: Option<u16>, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, http_status(url)).await {
        Err(_) => Err(format!("GET {url} timed out after {timeout:?}")),
        Ok(Err(e)) => Err(format!("GET {url}: {e}")),
        Ok(Ok(code)) => {
            let ok = match expected {
                Some(want) => code == want,
                None => (200..300).contains(&code),
            };
            if ok {
                Ok(format!("GET {url}: {code}"))
            } else {
                Err(format!("GET {url}: unexpected status {code}"))
            }
        }
    }
}

async fn http_status(url: &str) -> Result<u16, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let authority = uri.authority().ok_or("url has no host")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| "host is not an IP address")?;
    let addr = SocketAddr::new(ip, authority.port_u16().unwrap_or(80));
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let connection = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::USER_AGENT, "nines-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let result = sender.send_request(request).await;
    connection.abort();
    result
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Probe;

    fn probe_settings() -> Probe {
        Probe {
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 1,
            fall: 1,
        }
    }

    #[tokio::test]
    async fn tcp_probe_fails_on_a_closed_port_and_passes_on_an_open_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let check = Check::Tcp {
            addr: open,
            probe: probe_settings(),
        };
        assert!(probe(&check).await.is_ok());
        drop(listener);
        assert!(probe(&check).await.is_err());
    }
}
