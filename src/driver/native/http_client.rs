//! The HTTP client of the SSE and long-polling transports, HTTP publishes and
//! presence queries: hyper over resub's own rustls configuration.
//!
//! resub does not use reqwest. Cargo builds one reqwest per application with
//! the union of every crate's features, and any TLS feature resub turned on
//! would change how the application's own `reqwest::Client::new()` behaves
//! (with `rustls-no-provider` it panics there). hyper carries no TLS choice of
//! its own: the connector here is given resub's `rustls::ClientConfig`, built
//! with an explicit crypto provider, and nothing is installed process-wide.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, LOCATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A failed request: the error and its causes, for telling TLS failures
/// apart and for the message.
pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP/1.1 client with a connection pool and headers sent on every
/// request.
pub(crate) struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    headers: HeaderMap,
}

impl Http {
    /// A client using `tls` for `https` URLs and sending `headers` (checked
    /// by [`header_map`]) on every request.
    pub(crate) fn new(tls: &rustls::ClientConfig, headers: HeaderMap) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        // One idle connection kept per server: a poll sent right after the
        // previous answer may open another before the previous connection is
        // back in the pool, and without a bound each of those would stay
        // open, idle, for the pool's idle timeout.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        Self { client, headers }
    }

    /// Sends `method url` with the client's headers, then `extra` (which
    /// replace a client header of the same name), and `body`. Resolves once
    /// the answer's head has arrived.
    ///
    /// Redirects are followed up to [`MAX_REDIRECTS`] times: any of them for
    /// a `GET`, and `307`/`308` (which keep the method and body) for other
    /// methods. Credentials are not sent on to another origin.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        extra: &[(HeaderName, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, Failure> {
        let mut uri: Uri = url.parse()?;
        let mut headers = self.headers.clone();
        for (name, value) in extra {
            headers.insert(name.clone(), HeaderValue::from_str(value)?);
        }
        for _ in 0..=MAX_REDIRECTS {
            let mut req = Request::builder().method(method.clone()).uri(uri.clone()).body(Full::new(body.clone()))?;
            *req.headers_mut() = headers.clone();
            let resp = self.client.request(req).await?;
            let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok());
            let get = method == Method::GET;
            let Some(next) = redirect(&uri, resp.status().as_u16(), location, get, &mut headers) else {
                return Ok(resp);
            };
            uri = next;
        }
        Err(format!("too many redirects (more than {MAX_REDIRECTS})").into())
    }
}

/// Most redirects followed for one request.
pub(crate) const MAX_REDIRECTS: usize = 10;

/// Where the answer (`status`, `location`) to a request for `uri` sends it
/// next, if the redirect is followed: any redirect of a `GET` (`get`), and
/// `307`/`308` (which keep the method and body) of other methods. The
/// credentials in `headers` are removed when the next URL is another origin.
pub(crate) fn redirect(
    uri: &Uri,
    status: u16,
    location: Option<&str>,
    get: bool,
    headers: &mut HeaderMap,
) -> Option<Uri> {
    let follow = match status {
        301..=303 => get,
        307 | 308 => true,
        _ => false,
    };
    let next = location.filter(|_| follow).and_then(|l| resolve(uri, l))?;
    if (next.scheme(), next.authority()) != (uri.scheme(), uri.authority()) {
        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION] {
            headers.remove(name);
        }
    }
    tracing::debug!(from = %uri, to = %next, "following a redirect");
    Some(next)
}

/// `location` (absolute, scheme-relative, or a path) resolved against
/// `base`; `None` when it is not a usable HTTP(S) URL.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    // A scheme (RFC 3986 §3.1) before any `/`, `?` or `#`: an absolute URL.
    let scheme_end = location.find(':').filter(|&i| {
        let scheme = &location[..i];
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    let absolute = if scheme_end.is_some() {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", base.scheme_str()?)
    } else {
        let origin = format!("{}://{}", base.scheme_str()?, base.authority()?);
        if location.starts_with('/') {
            format!("{origin}{location}")
        } else {
            // Relative to the base's folder (query and fragment dropped).
            let path = base.path();
            let folder = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            let folder = if folder.is_empty() { "/" } else { folder };
            format!("{origin}{folder}{location}")
        }
    };
    let uri: Uri = absolute.parse().ok()?;
    matches!(uri.scheme_str(), Some("http" | "https")).then_some(uri)
}

/// The next piece of an answer's body; `None` at its end. Trailers are
/// skipped.
pub(crate) async fn chunk(body: &mut Incoming) -> Option<Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

/// The configured headers as HTTP takes them; fails on an invalid name or
/// value.
pub(crate) fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, crate::Error> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (name.parse::<HeaderName>(), HeaderValue::from_str(value)) else {
            return Err(crate::Error::BadRequest(format!("invalid header {name:?}")));
        };
        map.insert(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers one request on `listener` with `answer`; the request's head.
    async fn answer_one(listener: &TcpListener, answer: String) -> String {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&buf[..n]);
        }
        sock.write_all(answer.as_bytes()).await.unwrap();
        String::from_utf8(head).unwrap().to_ascii_lowercase()
    }

    fn redirect(to: &str) -> String {
        format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    }

    const DONE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone";

    async fn get(url: &str) -> Response<Incoming> {
        let tls = crate::driver::native::tls_config(&[]).unwrap();
        let headers = header_map(&[("x-app".into(), "1".into())]).unwrap();
        let http = Http::new(&tls, headers);
        http.send(Method::GET, url, &[(AUTHORIZATION, "Bearer secret")], Bytes::new()).await.unwrap()
    }

    #[tokio::test]
    async fn redirects_are_followed_keeping_credentials_on_the_same_origin_only() {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (pa, pb) = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
        let server = async {
            let first = answer_one(&a, redirect("/moved")).await;
            let second = answer_one(&a, redirect(&format!("http://127.0.0.1:{pb}/final"))).await;
            let third = answer_one(&b, DONE.into()).await;
            (first, second, third)
        };
        let start = format!("http://127.0.0.1:{pa}/start");
        let (resp, (first, second, third)) = tokio::join!(get(&start), server);
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        assert_eq!(&chunk(&mut body).await.unwrap().unwrap()[..], b"done");
        assert!(first.starts_with("get /start ") && first.contains("authorization: bearer secret"), "{first}");
        assert!(second.starts_with("get /moved ") && second.contains("authorization: bearer secret"), "{second}");
        assert!(third.starts_with("get /final "), "{third}");
        assert!(!third.contains("authorization"), "credentials sent to another origin: {third}");
        assert!(third.contains("x-app: 1"), "{third}");
    }

    #[tokio::test]
    async fn a_redirect_loop_ends_after_the_limit() {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/loop", a.local_addr().unwrap().port());
        let server = async {
            for _ in 0..=MAX_REDIRECTS {
                answer_one(&a, redirect("/loop")).await;
            }
        };
        let tls = crate::driver::native::tls_config(&[]).unwrap();
        let http = Http::new(&tls, HeaderMap::new());
        let (got, ()) = tokio::join!(http.send(Method::GET, &url, &[], Bytes::new()), server);
        let e = got.expect_err("a loop is an error");
        assert!(e.to_string().contains("too many redirects"), "{e}");
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://a.example:8443/rt/sse?channel=x".parse().unwrap();
        let cases = [
            ("http://b.example/sse", Some("http://b.example/sse")),
            ("//c.example/p?q=1", Some("https://c.example/p?q=1")),
            ("/other?channel=y", Some("https://a.example:8443/other?channel=y")),
            ("next", Some("https://a.example:8443/rt/next")),
            ("ftp://d.example/", None),
            ("https://bad host/", None),
        ];
        for (location, want) in cases {
            let got = resolve(&base, location).map(|u| u.to_string());
            assert_eq!(got.as_deref(), want, "{location}");
        }
    }
}
