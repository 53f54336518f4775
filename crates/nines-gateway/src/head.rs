//! Rewriting request and response heads between client and backend: the
//! hop-by-hop fields dropped in both directions, the forwarding fields added
//! to requests (X-Forwarded-For, Forwarded, X-Forwarded-Proto), and HTTP/2
//! requests turned into HTTP/1.1 ones. On the pooled path the forwarding
//! fields are written straight into the serialized head
//! ([`Forwarding::encode_fields`]) instead of into the header map, which
//! would cost a hashed insert per field and often a regrowth of the map; the
//! upgrade path, which goes through hyper, adds them to the map
//! ([`prepare_head`]). Both give the backend the same fields. Pure: no I/O.

use std::net::IpAddr;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Uri, Version};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The forwarding fields of one client connection, made once per connection.
#[derive(Debug, Clone)]
pub struct Forwarding {
    client: HeaderValue,
    forwarded: HeaderValue,
}

impl Forwarding {
    /// The fields for a client at `ip`.
    pub fn new(ip: IpAddr) -> Forwarding {
        let client =
            HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        let forwarded = match ip {
            IpAddr::V4(v4) => format!("for={v4};proto=http"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto=http"),
        };
        Forwarding {
            client,
            forwarded: HeaderValue::from_str(&forwarded).expect("forwarded value is ASCII"),
        }
    }

    /// Writes the field lines of `headers` with the forwarding fields
    /// applied: the client is appended to the first X-Forwarded-For (or one
    /// is added), Forwarded gets one more element, X-Forwarded-Proto is
    /// replaced. With `skip_length` the Content-Length field is left out.
    /// Returns whether `headers` had a Content-Length.
    pub fn encode_fields(
        &self,
        headers: &HeaderMap,
        skip_length: bool,
        out: &mut BytesMut,
    ) -> bool {
        let mut had_length = false;
        let mut forwarded_for = false;
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                had_length = true;
                if skip_length {
                    continue;
                }
            } else if name == X_FORWARDED_PROTO {
                continue;
            } else if name == X_FORWARDED_FOR {
                // Only the first line counts, as `prepare_head` keeps only it.
                if !forwarded_for {
                    forwarded_for = true;
                    put_field(out, b"x-forwarded-for", value.as_bytes());
                    out.truncate(out.len() - 2);
                    out.put_slice(b", ");
                    out.put_slice(self.client.as_bytes());
                    out.put_slice(b"\r\n");
                }
                continue;
            }
            put_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if !forwarded_for {
            put_field(out, b"x-forwarded-for", self.client.as_bytes());
        }
        put_field(out, b"forwarded", self.forwarded.as_bytes());
        put_field(out, b"x-forwarded-proto", b"http");
        had_length
    }
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Rewrites the head for the backend: drops hop-by-hop fields, adds
/// X-Forwarded-For/-Proto and Forwarded, and turns HTTP/2 into HTTP/1.1.
pub fn prepare_head(parts: &mut Parts, forwarding: &Forwarding, keep_upgrade: bool) {
    strip_request_hop_headers(parts, keep_upgrade);
    let headers = &mut parts.headers;
    headers.reserve(3);
    let joined = headers
        .get(&X_FORWARDED_FOR)
        .map(|v| [v.as_bytes(), b", ", forwarding.client.as_bytes()].concat());
    match joined {
        Some(joined) => {
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                headers.insert(&X_FORWARDED_FOR, value);
            }
        }
        None => {
            headers.insert(&X_FORWARDED_FOR, forwarding.client.clone());
        }
    }
    headers.append(header::FORWARDED, forwarding.forwarded.clone());
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// Drops the request's hop-by-hop fields (all but `Connection` and
/// `Upgrade` when `keep_upgrade`) and turns an HTTP/2 (or 1.0) head into an
/// HTTP/1.1 one with a Host and an origin-form target.
pub fn strip_request_hop_headers(parts: &mut Parts, keep_upgrade: bool) {
    let headers = &mut parts.headers;
    // One pass over the names finds the fields to drop, so a request without
    // hop-by-hop fields (the usual case) costs no hashed lookups for them.
    let mut connection = false;
    let mut hop_by_hop = false;
    for name in headers.keys() {
        if name == header::CONNECTION || name == header::UPGRADE {
            connection = true;
        } else if is_request_hop_by_hop(name) {
            hop_by_hop = true;
        }
    }
    if connection && !keep_upgrade {
        if let Some(connection) = headers.remove(header::CONNECTION) {
            if let Ok(tokens) = connection.to_str() {
                for token in tokens.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    headers.remove(token);
                }
            }
        }
        headers.remove(header::UPGRADE);
    }
    if hop_by_hop {
        for name in [
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
            &header::TE,
            &header::TRAILER,
            &header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
    }
    if parts.version != Version::HTTP_11 {
        if parts.version == Version::HTTP_2 && !headers.contains_key(header::HOST) {
            if let Some(authority) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                headers.insert(header::HOST, authority);
            }
        }
        if parts.uri.scheme().is_some() {
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = Uri::try_from(path) {
                parts.uri = uri;
            }
        }
        parts.version = Version::HTTP_11;
    }
}

/// A copy of a request head without a body.
pub fn clone_head(parts: &Parts) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Whether `name` is a hop-by-hop request field other than `Connection` and
/// `Upgrade` (which an upgrade keeps).
fn is_request_hop_by_hop(name: &HeaderName) -> bool {
    name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
}

/// Drops a response's hop-by-hop fields.
pub fn strip_response_hop_headers(headers: &mut HeaderMap) {
    // Backends send `Connection` on most responses and the rest rarely: find
    // what is present in one pass and remove only that.
    let mut present = [false; 4];
    for name in headers.keys() {
        if name == header::CONNECTION {
            present[0] = true;
        } else if name == KEEP_ALIVE {
            present[1] = true;
        } else if name == header::TRANSFER_ENCODING {
            present[2] = true;
        } else if name == PROXY_CONNECTION {
            present[3] = true;
        }
    }
    let names = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &header::TRANSFER_ENCODING,
        &PROXY_CONNECTION,
    ];
    for (name, present) in names.into_iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding() -> Forwarding {
        Forwarding::new("10.0.0.9".parse().expect("ip"))
    }

    fn prepared(request: Request<()>, keep_upgrade: bool) -> Parts {
        let (mut parts, ()) = request.into_parts();
        prepare_head(&mut parts, &forwarding(), keep_upgrade);
        parts
    }

    /// The fields `encode_fields` writes for `request`, parsed back.
    fn encoded(request: Request<()>) -> Vec<(String, String)> {
        let (mut parts, ()) = request.into_parts();
        strip_request_hop_headers(&mut parts, false);
        let mut out = BytesMut::new();
        forwarding().encode_fields(&parts.headers, false, &mut out);
        String::from_utf8(out.to_vec())
            .expect("ascii")
            .split_terminator("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("field line");
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[test]
    fn hop_by_hop_fields_and_the_ones_connection_names_are_dropped() {
        let request = || {
            Request::builder()
                .uri("/")
                .header("connection", "close, x-secret, x-forwarded-for")
                .header("x-secret", "1")
                .header("x-forwarded-for", "1.2.3.4")
                .header("keep-alive", "timeout=5")
                .header("te", "trailers")
                .header("upgrade", "h2c")
                .header("x-kept", "yes")
                .body(())
                .expect("request")
        };
        let parts = prepared(request(), false);
        for gone in ["connection", "x-secret", "keep-alive", "te", "upgrade"] {
            assert!(!parts.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(parts.headers["x-kept"], "yes");
        // The client's X-Forwarded-For was named by Connection, so only the peer is left.
        assert_eq!(parts.headers["x-forwarded-for"], "10.0.0.9");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");
        assert_eq!(parts.headers["forwarded"], "for=10.0.0.9;proto=http");
        let fields = encoded(request());
        let expected = [
            ("x-kept", "yes"),
            ("x-forwarded-for", "10.0.0.9"),
            ("forwarded", "for=10.0.0.9;proto=http"),
            ("x-forwarded-proto", "http"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(fields, expected);
    }

    #[test]
    fn forwarded_for_is_appended_and_upgrades_keep_their_fields() {
        let request = Request::builder()
            .uri("/")
            .header("x-forwarded-for", "1.2.3.4")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("proxy-connection", "keep-alive")
            .body(())
            .expect("request");
        let parts = prepared(request, true);
        assert_eq!(parts.headers["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(parts.headers["upgrade"], "websocket");
        assert_eq!(parts.headers["connection"], "upgrade");
        assert!(!parts.headers.contains_key("proxy-connection"));
    }

    #[test]
    fn encoded_fields_append_to_forwarding_fields_as_the_map_does() {
        let request = || {
            Request::builder()
                .uri("/")
                .header("x-forwarded-for", "1.2.3.4")
                .header("x-forwarded-for", "5.6.7.8")
                .header("forwarded", "for=1.2.3.4")
                .header("x-forwarded-proto", "https")
                .header("content-length", "3")
                .body(())
                .expect("request")
        };
        let parts = prepared(request(), false);
        let mut from_map: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect();
        let mut fields = encoded(request());
        from_map.sort();
        fields.sort();
        assert_eq!(fields, from_map);
        let (parts, ()) = request().into_parts();
        let mut out = BytesMut::new();
        assert!(forwarding().encode_fields(&parts.headers, true, &mut out));
        assert!(!String::from_utf8_lossy(&out).contains("content-length"));
    }

    #[test]
    fn response_hop_by_hop_fields_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("content-length", HeaderValue::from_static("3"));
        strip_response_hop_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["content-length"], "3");
    }
}
