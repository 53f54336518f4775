//! Request-framing tracker against request smuggling. hyper quietly drops a
//! `Content-Length` sent beside `Transfer-Encoding` and merges identical
//! duplicate `Content-Length` fields; the gateway must refuse both. The
//! tracker follows the raw bytes a client sends (heads, fixed-length bodies,
//! chunked bodies) so that it always knows where each request head starts,
//! and flags a head whose framing is ambiguous. It never changes the bytes.

/// Largest request head the tracker buffers; past it hyper rejects the head anyway.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// Skipping a fixed-length body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize {
        size: u64,
        digits: bool,
        in_extension: bool,
    },
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkDataEnd(u8),
    /// Reading trailer lines; the count is the length of the current line.
    Trailers(usize),
    /// No longer tracking (HTTP/2 preface, upgrade, or a head too large).
    Passthrough,
}

/// Follows one client connection's request framing.
#[derive(Debug)]
pub struct FramingTracker {
    state: State,
    head: Vec<u8>,
    first: bool,
    violated: bool,
}

impl Default for FramingTracker {
    fn default() -> FramingTracker {
        FramingTracker {
            state: State::Head,
            head: Vec::new(),
            first: true,
            violated: false,
        }
    }
}

impl FramingTracker {
    /// Whether an ambiguous request head has been seen on this connection.
    pub fn violated(&self) -> bool {
        self.violated
    }

    /// Feeds bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        // Invariant: every iteration consumes at least one byte or returns.
        while !data.is_empty() && !self.violated {
            data = match self.state {
                State::Passthrough => return,
                State::Head => self.feed_head(data),
                State::Body(remaining) => {
                    let take = remaining.min(data.len() as u64);
                    self.state = if take == remaining {
                        State::Head
                    } else {
                        State::Body(remaining - take)
                    };
                    &data[take as usize..]
                }
                State::ChunkSize { .. } => self.feed_chunk_size(data),
                State::ChunkData(remaining) => {
                    let take = remaining.min(data.len() as u64);
                    self.state = if take == remaining {
                        State::ChunkDataEnd(2)
                    } else {
                        State::ChunkData(remaining - take)
                    };
                    &data[take as usize..]
                }
                State::ChunkDataEnd(left) => {
                    let byte = data[0];
                    self.state = match (left, byte) {
                        (2, b'\r') => State::ChunkDataEnd(1),
                        (_, b'\n') => State::ChunkSize {
                            size: 0,
                            digits: false,
                            in_extension: false,
                        },
                        _ => State::Passthrough,
                    };
                    &data[1..]
                }
                State::Trailers(line) => {
                    let byte = data[0];
                    self.state = match byte {
                        b'\n' if line == 0 => State::Head,
                        b'\n' => State::Trailers(0),
                        b'\r' => State::Trailers(line),
                        _ => State::Trailers(line + 1),
                    };
                    &data[1..]
                }
            };
        }
    }

    fn feed_head<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        if self.first && self.head.is_empty() && data.starts_with(b"PRI * HTTP/2.0") {
            self.state = State::Passthrough;
            return &[];
        }
        // Blank lines before a request are allowed and skipped.
        if self.head.is_empty() {
            let skip = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if skip > 0 {
                return &data[skip..];
            }
        }
        // Fast path: a whole head in one read (the usual case) is inspected
        // where it lies, without copying it.
        if self.head.is_empty() {
            if let Some(end) = find_head_end_fast(data) {
                let framing = inspect_head(&data[..end]);
                self.end_head(framing);
                return &data[end..];
            }
        }
        let searched_from = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(data);
        let Some(end) = find_head_end(&self.head[searched_from..]).map(|end| end + searched_from)
        else {
            if self.head.len() > HEAD_BYTES_MAX {
                self.state = State::Passthrough;
                self.head = Vec::new();
            }
            return &[];
        };
        let consumed_here = end - (self.head.len() - data.len());
        let framing = inspect_head(&self.head[..end]);
        self.head.clear();
        self.end_head(framing);
        &data[consumed_here..]
    }

    /// Moves past a complete head whose framing is `framing`.
    fn end_head(&mut self, framing: HeadFraming) {
        self.first = false;
        self.state = match framing {
            HeadFraming::Ambiguous => {
                self.violated = true;
                State::Passthrough
            }
            HeadFraming::Upgrade => State::Passthrough,
            HeadFraming::Chunked => State::ChunkSize {
                size: 0,
                digits: false,
                in_extension: false,
            },
            HeadFraming::Length(0) | HeadFraming::None => State::Head,
            HeadFraming::Length(n) => State::Body(n),
        };
    }

    fn feed_chunk_size<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let State::ChunkSize {
            mut size,
            mut digits,
            mut in_extension,
        } = self.state
        else {
            return &[];
        };
        for (at, &byte) in data.iter().enumerate() {
            match byte {
                b'\n' => {
                    self.state = match (digits, size) {
                        (false, _) => State::Passthrough,
                        (true, 0) => State::Trailers(0),
                        (true, n) => State::ChunkData(n),
                    };
                    return &data[at + 1..];
                }
                b'\r' => {}
                b';' => in_extension = true,
                _ if in_extension => {}
                _ => match (byte as char).to_digit(16) {
                    Some(digit) if size < (1 << 56) => {
                        size = size * 16 + u64::from(digit);
                        digits = true;
                    }
                    _ if byte == b' ' || byte == b'\t' => {}
                    _ => {
                        self.state = State::Passthrough;
                        return &[];
                    }
                },
            }
        }
        self.state = State::ChunkSize {
            size,
            digits,
            in_extension,
        };
        &[]
    }
}

/// The same answer as [`find_head_end`] for bytes that start a head (so
/// they do not start with a line feed), in one pass over the line feeds.
fn find_head_end_fast(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    // Invariant: `from` grows on every iteration.
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
        let lf = from + at;
        match bytes.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r')
                if lf > 0 && bytes[lf - 1] == b'\r' && bytes.get(lf + 2) == Some(&b'\n') =>
            {
                return Some(lf + 3)
            }
            _ => from = lf + 1,
        }
    }
    None
}

/// Offset just past the blank line ending a head, if present.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

enum HeadFraming {
    None,
    Length(u64),
    Chunked,
    Upgrade,
    Ambiguous,
}

fn inspect_head(head: &[u8]) -> HeadFraming {
    let mut lengths = 0;
    let mut length = 0u64;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut upgrade = head.starts_with(b"CONNECT ");
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            chunked = value.len() >= 7 && value[value.len() - 7..].eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        }
    }
    if lengths > 1 || (lengths > 0 && transfer_encoding) {
        HeadFraming::Ambiguous
    } else if upgrade {
        HeadFraming::Upgrade
    } else if chunked {
        HeadFraming::Chunked
    } else if lengths == 1 {
        HeadFraming::Length(length)
    } else {
        HeadFraming::None
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> bool {
        let mut tracker = FramingTracker::default();
        for chunk in chunks {
            tracker.feed(chunk);
        }
        tracker.violated()
    }

    #[test]
    fn plain_keep_alive_requests_pass() {
        let one = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!feed_all(&[one, one, one]));
        let post = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        assert!(!feed_all(&[post]));
    }

    #[test]
    fn fast_head_end_agrees_with_the_plain_search() {
        // Every string of up to 9 bytes over {a, CR, LF} that starts a head.
        let alphabet = [b'a', b'\r', b'\n'];
        for len in 1..=9u32 {
            for code in 0..3usize.pow(len) {
                let bytes: Vec<u8> = (0..len)
                    .map(|i| alphabet[code / 3usize.pow(i) % 3])
                    .collect();
                if bytes[0] != b'a' {
                    continue;
                }
                assert_eq!(
                    find_head_end_fast(&bytes),
                    find_head_end(&bytes),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn content_length_with_transfer_encoding_is_flagged() {
        let smuggle =
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(feed_all(&[smuggle]));
    }

    #[test]
    fn duplicate_content_length_is_flagged_even_if_equal() {
        assert!(feed_all(&[
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx"
        ]));
    }

    #[test]
    fn bodies_that_look_like_heads_are_skipped() {
        let body = b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n";
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        assert!(!feed_all(&[
            head.as_bytes(),
            body,
            b"GET / HTTP/1.1\r\n\r\n"
        ]));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let chunk = format!("{:x};ext=1\r\n", body.len());
        assert!(!feed_all(&[
            chunked,
            chunk.as_bytes(),
            body,
            b"\r\n0\r\nX-T: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n"
        ]));
    }

    #[test]
    fn smuggling_after_a_clean_request_is_flagged_byte_by_byte() {
        let stream = b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        let mut tracker = FramingTracker::default();
        for byte in stream.iter() {
            tracker.feed(std::slice::from_ref(byte));
        }
        assert!(tracker.violated());
    }

    #[test]
    fn http2_preface_is_not_tracked() {
        assert!(!feed_all(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
        ]));
    }
}
