//! GET requests whose answers are read as they arrive: the event streams of
//! the SSE transport and the answers of long polls.
//!
//! They go over resub's own HTTP/1.1 reader ([`crate::protocol::http1`])
//! rather than hyper, for memory: an idle stream holds its socket and one
//! read buffer that shrinks back to [`MIN_READ`] bytes between bursts, where
//! hyper keeps a read and a write buffer of 8 KiB each per connection. One
//! connection per client is kept open between long polls.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http_client::{Failure, MAX_REDIRECTS, redirect};
use crate::protocol::http1::{BodyDecoder, Decoded, Head, parse_head};

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The read buffer of an idle connection, in bytes; a read that fills it
/// doubles it, up to [`MAX_READ`], and small reads shrink it back.
pub(crate) const MIN_READ: usize = 2 * 1024;
/// The largest read buffer, in bytes.
const MAX_READ: usize = 64 * 1024;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where a connection goes: scheme, host, port.
type Origin = (String, String, u16);

/// An open connection and the bytes read from it but not consumed.
struct Conn {
    origin: Origin,
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pos: usize,
    read_size: usize,
}

impl Conn {
    /// Reads more bytes after the unconsumed ones; `Ok(0)` at the end of the
    /// connection.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > 2 * self.read_size {
                // Back from a burst: give the large buffer back.
                self.buf = Vec::new();
            }
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(self.read_size);
        let spare = self.buf.capacity() - self.buf.len();
        let n = self.io.read_buf(&mut self.buf).await?;
        if n == spare {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
        Ok(n)
    }
}

/// Opens GET streams for one client, keeping one idle connection for the
/// next request to the same origin.
pub(crate) struct Streams {
    tls: Arc<rustls::ClientConfig>,
    headers: HeaderMap,
    idle: Arc<Mutex<Option<Conn>>>,
}

/// An answer whose head has arrived.
pub(crate) struct Answer {
    /// Its status line and headers.
    pub head: Head,
    body: Body,
}

impl Answer {
    /// Its body.
    pub(crate) fn into_body(self) -> Body {
        self.body
    }
}

/// An answer's body, read piece by piece.
pub(crate) struct Body {
    conn: Option<Conn>,
    decoder: BodyDecoder,
    /// The head's framing was invalid: the first read fails with this.
    failed: Option<crate::protocol::http1::Http1Error>,
    keep_alive: bool,
    idle: Arc<Mutex<Option<Conn>>>,
}

impl Body {
    /// The next piece of the body, borrowed until the next call; `None` at
    /// its end.
    pub(crate) async fn chunk(&mut self) -> Option<Result<&[u8], Failure>> {
        if let Some(e) = self.failed.take() {
            self.conn = None;
            return Some(Err(e.into()));
        }
        let range = loop {
            let conn = self.conn.as_mut()?;
            match self.decoder.decode(&conn.buf[conn.pos..]) {
                Err(e) => return Some(Err(e.into())),
                Ok((used, Decoded::Data(r))) => {
                    let range = conn.pos + r.start..conn.pos + r.end;
                    conn.pos += used;
                    break range;
                }
                Ok((used, Decoded::End)) => {
                    conn.pos += used;
                    self.finish();
                    return None;
                }
                Ok((used, Decoded::NeedMore)) => {
                    conn.pos += used;
                    match conn.fill().await {
                        Ok(0) => {
                            self.conn = None;
                            return self.decoder.end_of_input().err().map(|e| Err(e.into()));
                        }
                        Ok(_) => {}
                        Err(e) => return Some(Err(e.into())),
                    }
                }
            }
        };
        Some(Ok(&self.conn.as_ref()?.buf[range]))
    }

    /// The body is complete: its connection waits for the next request when
    /// the server keeps it open and sent nothing after the body.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.pos == conn.buf.len()
        {
            *self.idle.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
        }
    }
}

fn origin(uri: &Uri) -> Result<Origin, Failure> {
    let scheme = uri.scheme_str().ok_or("the URL has no scheme")?;
    let host = uri.host().ok_or("the URL has no host")?;
    let port = match (uri.port_u16(), scheme) {
        (Some(port), _) => port,
        (None, "http") => 80,
        (None, "https") => 443,
        (None, other) => return Err(format!("unsupported scheme {other:?}").into()),
    };
    Ok((scheme.to_owned(), host.to_owned(), port))
}

impl Streams {
    /// Streams using `tls` for `https` URLs and sending `headers` on every
    /// request.
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>, headers: HeaderMap) -> Self {
        Self { tls, headers, idle: Arc::default() }
    }

    /// Sends `GET url` with the client's headers, then `extra` (which replace
    /// a client header of the same name); resolves once the answer's head has
    /// arrived. Redirects are followed up to [`MAX_REDIRECTS`] times;
    /// credentials are not sent on to another origin.
    pub(crate) async fn get(&self, url: &str, extra: &[(HeaderName, &str)]) -> Result<Answer, Failure> {
        let mut uri: Uri = url.parse()?;
        let mut headers = self.headers.clone();
        for (name, value) in extra {
            headers.insert(name.clone(), HeaderValue::from_str(value)?);
        }
        for _ in 0..=MAX_REDIRECTS {
            let answer = self.request(&uri, &headers).await?;
            let (status, location) = (answer.head.status, answer.head.header("location"));
            let Some(next) = redirect(&uri, status, location, true, &mut headers) else {
                return Ok(answer);
            };
            uri = next;
        }
        Err(format!("too many redirects (more than {MAX_REDIRECTS})").into())
    }

    /// One request, on the idle connection when it goes to the same origin
    /// and the server has not closed it, else on a new one. A request is
    /// never sent twice: a connection that fails after it was sent fails the
    /// request (the session reconnects as after any drop).
    async fn request(&self, uri: &Uri, headers: &HeaderMap) -> Result<Answer, Failure> {
        let origin = origin(uri)?;
        let request = request_head(uri, &origin, headers);
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).take();
        let conn = match idle.filter(|c| c.origin == origin).and_then(|mut c| still_open(&mut c).then_some(c)) {
            Some(conn) => conn,
            None => self.connect(origin).await?,
        };
        match exchange(conn, &request).await? {
            Some(answer) => Ok(self.answer(answer)),
            None => Err("the server closed the connection without answering".into()),
        }
    }

    fn answer(&self, (head, conn): (Head, Conn)) -> Answer {
        let keep_alive = head.keep_alive();
        // A body whose framing is invalid fails its first read.
        let (decoder, failed) = match head.body() {
            Ok(decoder) => (decoder, None),
            Err(e) => (BodyDecoder::length(0), Some(e)),
        };
        let body = Body { conn: Some(conn), decoder, failed, keep_alive, idle: Arc::clone(&self.idle) };
        Answer { head, body }
    }

    async fn connect(&self, origin: Origin) -> Result<Conn, Failure> {
        let host = origin.1.trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), origin.2)))
            .await
            .map_err(|_| format!("connecting to {host}:{} timed out", origin.2))??;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = if origin.0 == "https" {
            let name = rustls::pki_types::ServerName::try_from(host)?;
            Box::new(tokio_rustls::TlsConnector::from(Arc::clone(&self.tls)).connect(name, tcp).await?)
        } else {
            Box::new(tcp)
        };
        Ok(Conn { origin, io, buf: Vec::new(), pos: 0, read_size: MIN_READ })
    }
}

/// Whether an idle connection can carry a request: the server has not
/// closed it, nor sent anything unasked (checked without waiting).
fn still_open(conn: &mut Conn) -> bool {
    let mut probe = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut probe);
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    // Pending: nothing to read and not closed; the next read waits properly.
    std::pin::Pin::new(&mut conn.io).poll_read(&mut cx, &mut buf).is_pending()
}

/// Sends `request` and reads the answer's head: `None` when the connection
/// ended before any byte of it.
async fn exchange(mut conn: Conn, request: &[u8]) -> Result<Option<(Head, Conn)>, Failure> {
    conn.io.write_all(request).await?;
    conn.io.flush().await?;
    loop {
        if let Some((head, used)) = parse_head(&conn.buf[conn.pos..])? {
            conn.pos += used;
            return Ok(Some((head, conn)));
        }
        if conn.fill().await? == 0 {
            return match conn.buf.is_empty() {
                true => Ok(None),
                false => Err("the connection ended inside the answer's head".into()),
            };
        }
    }
}

/// The request's head: `GET`, the path and query, `Host`, then `headers`.
fn request_head(uri: &Uri, origin: &Origin, headers: &HeaderMap) -> Vec<u8> {
    let path = match uri.query() {
        Some(query) => format!("{}?{query}", uri.path()),
        None => uri.path().to_owned(),
    };
    let default_port = matches!((origin.0.as_str(), origin.2), ("http", 80) | ("https", 443));
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(origin.1.as_bytes());
    if !default_port {
        out.extend_from_slice(format!(":{}", origin.2).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;
    use tokio::net::TcpListener;

    /// Reads one request's head from `sock`.
    async fn request(sock: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(head).unwrap()
    }

    fn streams() -> Streams {
        let tls = crate::driver::native::tls_config(&[]).unwrap();
        let headers = super::super::http_client::header_map(&[("x-app".into(), "1".into())]).unwrap();
        Streams::new(tls, headers)
    }

    async fn body(answer: Answer) -> Result<Vec<u8>, Failure> {
        let mut body = answer.into_body();
        let mut out = Vec::new();
        while let Some(piece) = body.chunk().await {
            out.extend_from_slice(piece?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn polls_reuse_one_connection_and_a_new_one_replaces_it_once_the_server_closed_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/poll?x=1", listener.local_addr().unwrap().port());
        let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel();
        let server = async {
            let (mut sock, _) = listener.accept().await.unwrap();
            let first = request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none").await.unwrap();
            let second = request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n")
                .await
                .unwrap();
            // Closed by the server while idle: the next request goes on a
            // new connection.
            drop(sock);
            closed_tx.send(()).unwrap();
            let (mut again, _) = listener.accept().await.unwrap();
            let third = request(&mut again).await;
            again.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nthree").await.unwrap();
            drop(again);
            (first, second, third)
        };
        let client = async {
            let s = streams();
            let mut got = Vec::new();
            for i in 0..3 {
                if i == 2 {
                    // On loopback the server's FIN is here once its close
                    // returned.
                    (&mut closed_rx).await.unwrap();
                    assert!(!still_open(s.idle.lock().unwrap().as_mut().expect("kept")), "seen closed");
                }
                got.push(body(s.get(&url, &[(AUTHORIZATION, "Bearer t")]).await.unwrap()).await.unwrap());
            }
            got
        };
        // A client that did not reuse the connection would leave the server
        // waiting for a second request on the first one.
        let both = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(client, server) });
        let (got, (first, second, third)) = both.await.expect("the second request came on the first connection");
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        for head in [&first, &second, &third] {
            assert!(head.starts_with("GET /poll?x=1 HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("\r\nauthorization: Bearer t\r\n") && head.contains("\r\nx-app: 1\r\n"), "{head}");
            let port = listener.local_addr().unwrap().port();
            assert!(head.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")), "{head}");
        }
    }

    #[test]
    fn the_request_line_and_host_follow_the_url() {
        let head = |url: &str| {
            let uri: Uri = url.parse().unwrap();
            String::from_utf8(request_head(&uri, &origin(&uri).unwrap(), &HeaderMap::new())).unwrap()
        };
        assert_eq!(head("http://[::1]:8080?x=1"), "GET /?x=1 HTTP/1.1\r\nhost: [::1]:8080\r\n\r\n");
        assert_eq!(head("https://a.example/rt/sse"), "GET /rt/sse HTTP/1.1\r\nhost: a.example\r\n\r\n");
        assert_eq!(head("http://a.example:80/p?q"), "GET /p?q HTTP/1.1\r\nhost: a.example\r\n\r\n");
        assert!(origin(&"ftp://a.example/".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn an_invalid_content_length_fails_the_body_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/", listener.local_addr().unwrap().port());
        let server = async {
            let (mut sock, _) = listener.accept().await.unwrap();
            request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello").await.unwrap();
            sock // kept open: the body must not be read until close
        };
        let s = streams();
        let (answer, _sock) = tokio::join!(s.get(&url, &[]), server);
        let err = body(answer.unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("Content-Length"), "{err}");
        assert!(s.idle.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_its_connection_is_not_kept() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/", listener.local_addr().unwrap().port());
        let server = async {
            let (mut sock, _) = listener.accept().await.unwrap();
            request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").await.unwrap();
        };
        let s = streams();
        let (answer, ()) = tokio::join!(s.get(&url, &[]), server);
        let err = body(answer.unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("ended inside the body"), "{err}");
        assert!(s.idle.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_stream_gives_each_piece_as_it_arrives_and_its_buffer_shrinks_when_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/sse", listener.local_addr().unwrap().port());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            request(&mut sock).await;
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n").await.unwrap();
            while let Some(bytes) = rx.recv().await {
                sock.write_all(&bytes).await.unwrap();
            }
        });
        let s = streams();
        let answer = s.get(&url, &[]).await.unwrap();
        assert_eq!(answer.head.header("content-type"), Some("text/event-stream"));
        let mut body = answer.into_body();
        // A burst larger than the largest buffer, then small pieces.
        let burst = vec![b'x'; 4 * MAX_READ];
        tx.send(burst.clone()).await.unwrap();
        let mut got = 0;
        while got < burst.len() {
            got += body.chunk().await.unwrap().unwrap().len();
        }
        for piece in [b": ping\n\n".as_slice(), b"data: 1\n\n"] {
            for _ in 0..4 {
                tx.send(piece.to_vec()).await.unwrap();
                assert_eq!(body.chunk().await.unwrap().unwrap(), piece);
            }
        }
        let capacity = body.conn.as_ref().unwrap().buf.capacity();
        assert!(capacity <= 2 * MIN_READ, "idle after a burst, the buffer holds {capacity} bytes");
        drop(tx);
        assert!(body.chunk().await.is_none(), "the stream ends with the connection");
        server.await.unwrap();
    }
}
