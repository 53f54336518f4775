//! A minimal HTTP/1.1 client over a loopback TCP stream, enough to probe a
//! member's `GET /health` and to set its fault set with
//! `PUT /v1/debug/faults`. One request per connection (`Connection: close`),
//! every step under a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why an HTTP request got no status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("http request to {addr} failed: {source}")]
    Io {
        /// The address asked.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("http request to {addr} timed out")]
    Timeout {
        /// The address asked.
        addr: SocketAddr,
    },
    /// The answer did not start with an HTTP status line.
    #[error("malformed http answer from {addr}")]
    Malformed {
        /// The address asked.
        addr: SocketAddr,
    },
}

/// Largest answer read; the status line is all that is used.
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

/// Sends one request and returns the status code.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<u16, HttpError> {
    match tokio::time::timeout(timeout, exchange(addr, method, path, json_body)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout { addr }),
    }
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<u16, HttpError> {
    let io = |source| HttpError::Io { addr, source };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    let body = json_body.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if json_body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    stream.write_all(body.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(ANSWER_BYTES_MAX)
        .read_to_end(&mut answer)
        .await
        .map_err(io)?;
    parse_status(&answer).ok_or(HttpError::Malformed { addr })
}

fn parse_status(answer: &[u8]) -> Option<u16> {
    let line_end = answer.iter().position(|&byte| byte == b'\n')?;
    let line = std::str::from_utf8(&answer[..line_end]).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_status;

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"garbage\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
