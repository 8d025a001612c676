//! HTTP/1.1 answers as the native driver reads its event streams and polls
//! (RFC 9112): the head, parsed with `httparse`, and the body's framing
//! (`chunked`, `Content-Length` or until the connection closes). Pure and
//! incremental: bytes go in as they arrive, split anywhere.
//!
//! ```
//! use resub::protocol::http1::{BodyDecoder, Decoded, parse_head};
//!
//! let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
//! let (head, used) = parse_head(answer).unwrap().expect("a whole head");
//! assert_eq!(head.status, 200);
//! let mut body = head.body().unwrap();
//! let rest = &answer[used..];
//! let (n, decoded) = body.decode(rest).unwrap();
//! assert!(matches!(decoded, Decoded::Data(ref r) if &rest[r.clone()] == b"hello"));
//! let (_, decoded) = body.decode(&rest[n..]).unwrap();
//! assert_eq!(decoded, Decoded::End);
//! ```

use std::ops::Range;

/// The longest head (status line and headers) accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a head may have.
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) or trailer section
/// accepted, in bytes.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an answer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Http1Error {
    /// The head is not HTTP/1.x, or is malformed.
    #[error("malformed HTTP answer: {0}")]
    Head(String),
    /// The head is longer than [`MAX_HEAD`] or has more than
    /// [`MAX_HEADERS`] fields.
    #[error("HTTP answer head over {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    /// `Content-Length` is not a number, or two disagree.
    #[error("invalid Content-Length")]
    ContentLength,
    /// A chunk's size line or the bytes after its data are malformed.
    #[error("malformed chunked body: {0}")]
    Chunk(&'static str),
    /// The connection ended before the body did.
    #[error("the connection ended inside the body")]
    Truncated,
}

/// An answer's status line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `HTTP/1.0` (0) or `HTTP/1.1` (1).
    pub minor_version: u8,
    /// The header fields in order, names lowercase.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// The first field named `name` (lowercase), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| std::str::from_utf8(v).ok()).map(str::trim)
    }

    /// How the body is framed (RFC 9112 §6.3): `chunked` when it is the last
    /// transfer coding; until the connection closes for any other transfer
    /// coding or when no length is given; else `Content-Length`.
    pub fn body(&self) -> Result<BodyDecoder, Http1Error> {
        if matches!(self.status, 100..=199 | 204 | 304) {
            return Ok(BodyDecoder::length(0));
        }
        let codings: Vec<&[u8]> =
            self.headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.as_slice()).collect();
        if !codings.is_empty() {
            let last = codings.iter().flat_map(|v| v.split(|&b| b == b',')).next_back().unwrap_or_default();
            return Ok(if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                BodyDecoder::chunked()
            } else {
                BodyDecoder::until_close()
            });
        }
        let mut length: Option<u64> = None;
        for (_, value) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            for part in value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                    return Err(Http1Error::ContentLength);
                }
                let n: u64 =
                    std::str::from_utf8(part).ok().and_then(|s| s.parse().ok()).ok_or(Http1Error::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Http1Error::ContentLength);
                }
                length = Some(n);
            }
        }
        Ok(length.map_or_else(BodyDecoder::until_close, BodyDecoder::length))
    }

    /// Whether the connection may carry another request after this answer's
    /// body: HTTP/1.1 without `Connection: close`.
    pub fn keep_alive(&self) -> bool {
        let has = |name: &str| self.headers.iter().any(|(n, _)| n == name);
        // Both framings at once may be a smuggling attempt (RFC 9112 §6.1):
        // the connection is not trusted with another request.
        if has("transfer-encoding") && (has("content-length") || self.minor_version == 0) {
            return false;
        }
        let close = self
            .headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        self.minor_version == 1 && !close
    }
}

/// Parses the head at the start of `buf`: `None` while it is incomplete;
/// else the head and how many bytes it took. Informational (`1xx`) answers
/// before the final one are skipped.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Http1Error> {
    let mut start = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut answer = httparse::Response::new(&mut fields);
        match answer.parse(&buf[start..]) {
            Ok(httparse::Status::Complete(used)) => {
                let status = answer.code.unwrap_or(0);
                if (100..200).contains(&status) && status != 101 {
                    start += used;
                    continue;
                }
                let headers = answer.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
                let head = Head { status, minor_version: answer.version.unwrap_or(1), headers };
                return Ok(Some((head, start + used)));
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Http1Error::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Http1Error::HeadTooLarge),
            Err(e) => return Err(Http1Error::Head(e.to_string())),
        }
    }
}

/// What [`BodyDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes: this range of the input.
    Data(Range<usize>),
    /// More input is needed.
    NeedMore,
    /// The body is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    UntilClose,
    /// Before a chunk-size line.
    ChunkSize,
    /// Inside a chunk's data, this much left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk, until an empty line.
    Trailers,
    Done,
}

/// Reads a body's framing, incrementally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder {
    framing: Framing,
}

impl BodyDecoder {
    /// A `Transfer-Encoding: chunked` body.
    pub fn chunked() -> Self {
        Self { framing: Framing::ChunkSize }
    }

    /// A body of `n` bytes.
    pub fn length(n: u64) -> Self {
        Self { framing: if n == 0 { Framing::Done } else { Framing::Length(n) } }
    }

    /// A body that ends when the connection does.
    pub fn until_close() -> Self {
        Self { framing: Framing::UntilClose }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Decodes the start of `input` (the bytes not consumed yet): returns how
    /// many bytes it consumed and what they were. Call again with the rest;
    /// [`Decoded::NeedMore`] asks for more bytes after the unconsumed ones.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Decoded), Http1Error> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.framing {
                Framing::Done => return Ok((used, Decoded::End)),
                Framing::UntilClose if rest.is_empty() => return Ok((used, Decoded::NeedMore)),
                Framing::UntilClose => return Ok((input.len(), Decoded::Data(used..input.len()))),
                Framing::Length(n) | Framing::ChunkData(n) if rest.is_empty() => {
                    debug_assert!(n > 0);
                    return Ok((used, Decoded::NeedMore));
                }
                Framing::Length(n) | Framing::ChunkData(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(rest.len());
                    let left = n - take as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) if left == 0 => Framing::Done,
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::ChunkEnd,
                        _ => Framing::ChunkData(left),
                    };
                    return Ok((used + take, Decoded::Data(used..used + take)));
                }
                // httparse reads a size line without digits as 0, the last
                // chunk: a stray blank line would end the body early.
                Framing::ChunkSize if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
                    return Err(Http1Error::Chunk("invalid chunk size"));
                }
                Framing::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        used += n;
                        self.framing = if size == 0 { Framing::Trailers } else { Framing::ChunkData(size) };
                    }
                    Ok(httparse::Status::Partial) if rest.len() > MAX_CHUNK_LINE => {
                        return Err(Http1Error::Chunk("chunk-size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok((used, Decoded::NeedMore)),
                    Err(_) => return Err(Http1Error::Chunk("invalid chunk size")),
                },
                Framing::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.framing = Framing::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok((used, Decoded::NeedMore)),
                    _ => return Err(Http1Error::Chunk("no CRLF after a chunk's data")),
                },
                Framing::Trailers => match memchr::memmem::find(rest, b"\r\n") {
                    Some(0) => {
                        used += 2;
                        self.framing = Framing::Done;
                    }
                    // A trailer field: skipped.
                    Some(end) => used += end + 2,
                    None if rest.len() > MAX_CHUNK_LINE => return Err(Http1Error::Chunk("trailer line too long")),
                    None => return Ok((used, Decoded::NeedMore)),
                },
            }
        }
    }

    /// The connection ended: fine for a body that ends with it, or one
    /// already complete; [`Http1Error::Truncated`] otherwise.
    pub fn end_of_input(&mut self) -> Result<(), Http1Error> {
        match self.framing {
            Framing::UntilClose | Framing::Done => {
                self.framing = Framing::Done;
                Ok(())
            }
            _ => Err(Http1Error::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body `input` decodes to, fed in pieces of `step` bytes, and how it
    /// ended.
    fn body(mut decoder: BodyDecoder, input: &[u8], step: usize) -> (Vec<u8>, Result<(), Http1Error>) {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&pending) {
                Err(e) => return (out, Err(e)),
                Ok((used, Decoded::Data(r))) => {
                    out.extend_from_slice(&pending[r]);
                    pending.drain(..used);
                }
                Ok((_, Decoded::End)) => return (out, Ok(())),
                Ok((used, Decoded::NeedMore)) => {
                    pending.drain(..used);
                    if fed == input.len() {
                        return (out, decoder.end_of_input());
                    }
                    let next = (fed + step).min(input.len());
                    pending.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn a_chunked_body_decodes_the_same_split_anywhere() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=wire.len() {
            assert_eq!(body(BodyDecoder::chunked(), wire, step), (b"hello 0123456789".to_vec(), Ok(())), "{step}");
        }
    }

    #[test]
    fn chunked_errors_are_typed() {
        let cases: [(&[u8], Http1Error); 4] = [
            (b"zz\r\n", Http1Error::Chunk("invalid chunk size")),
            (b"3\r\nabcXY", Http1Error::Chunk("no CRLF after a chunk's data")),
            (b"3\r\nab", Http1Error::Truncated),
            (b"5\r\nhello\r\n", Http1Error::Truncated),
        ];
        for (wire, err) in cases {
            assert_eq!(body(BodyDecoder::chunked(), wire, 2).1, Err(err), "{wire:?}");
        }
        // A blank line where a size belongs is not the last chunk.
        assert_eq!(
            body(BodyDecoder::chunked(), b"3\r\nabc\r\n\r\n3\r\ndef\r\n0\r\n\r\n", 3),
            (b"abc".to_vec(), Err(Http1Error::Chunk("invalid chunk size")))
        );
        assert_eq!(body(BodyDecoder::chunked(), b";x\r\n", 1).1, Err(Http1Error::Chunk("invalid chunk size")));
        let long = [b'1'; MAX_CHUNK_LINE + 10];
        assert!(matches!(body(BodyDecoder::chunked(), &long, 4096).1, Err(Http1Error::Chunk(_))));
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 10));
        assert!(matches!(body(BodyDecoder::chunked(), &trailers, 4096).1, Err(Http1Error::Chunk(_))));
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_a_short_one_is_truncated() {
        assert_eq!(body(BodyDecoder::length(5), b"helloEXTRA", 3).0, b"hello");
        assert_eq!(body(BodyDecoder::length(5), b"hel", 1), (b"hel".to_vec(), Err(Http1Error::Truncated)));
        assert_eq!(body(BodyDecoder::length(0), b"ignored", 1), (Vec::new(), Ok(())));
        assert_eq!(body(BodyDecoder::until_close(), b"all of it", 4), (b"all of it".to_vec(), Ok(())));
    }

    #[test]
    fn the_head_decides_the_framing() {
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(chunked.body(), Ok(BodyDecoder::chunked()), "chunked wins over a length");
        let other = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(other.body(), Ok(BodyDecoder::until_close()));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n").body(), Ok(BodyDecoder::length(7)));
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").body(), Ok(BodyDecoder::length(7)));
        for bad in ["7, 8", "-1", "", "0x10", "99999999999999999999999"] {
            let h = head(&format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n"));
            assert_eq!(h.body(), Err(Http1Error::ContentLength), "{bad:?}");
        }
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").body(), Ok(BodyDecoder::until_close()));
        assert_eq!(head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").body(), Ok(BodyDecoder::length(0)));
    }

    #[test]
    fn heads_are_parsed_incrementally_and_bounded() {
        let text = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 2\r\nConnection: close\r\n\r\nbody";
        for cut in 0..text.len() - 4 {
            assert_eq!(parse_head(&text[..cut]), Ok(None), "{cut}");
        }
        let (head, used) = parse_head(text).unwrap().unwrap();
        assert_eq!((head.status, head.header("retry-after"), used), (503, Some("2"), text.len() - 4));
        assert!(!head.keep_alive());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap().0.keep_alive());
        assert!(!parse_head(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap().0.keep_alive());
        let both = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert!(!parse_head(both).unwrap().unwrap().0.keep_alive(), "both framings: not reused");
        assert!(matches!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(Http1Error::Head(_))));
        let endless = [b"HTTP/1.1 200 OK\r\nx: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert_eq!(parse_head(&endless), Err(Http1Error::HeadTooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(parse_head(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes()), Err(Http1Error::HeadTooLarge));
    }
}
