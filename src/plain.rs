//! Reading any standard SSE endpoint: [`PlainSse`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::client::States;
use crate::core::plain::{PlainEvent, PlainSession};
use crate::core::{Backoff, Config};
use crate::driver::StateHub;
use crate::driver::native::ConnectOptions;
use crate::{ConnectionState, Error, Instant, Transport};

/// Configures a [`PlainSse`] stream.
#[derive(Debug, Clone)]
#[must_use]
pub struct PlainSseBuilder {
    url: String,
    config: Config,
    last_event_id: Option<String>,
    headers: Vec<(String, String)>,
    roots: Vec<Vec<u8>>,
    seed: Option<u64>,
}

impl PlainSseBuilder {
    /// Reconnect delays; the server's `retry:` time is a floor under them.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Treat a stream silent for this long as dead and reconnect (default:
    /// never, since a plain server promises no heartbeat).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.heartbeat_timeout = Some(d);
        self
    }

    /// How long the server may take to answer (default 10 s).
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.config.open_timeout = d;
        self
    }

    /// Resume after this id (sent as `Last-Event-ID` on the first request).
    pub fn last_event_id(mut self, id: &str) -> Self {
        self.last_event_id = Some(id.to_owned());
        self
    }

    /// Adds a header to every request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Trusts this DER-encoded root certificate, besides the webpki roots.
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> Self {
        self.roots.push(der);
        self
    }

    /// Seeds the jitter generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts reading on the current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn build(self) -> Result<PlainSse, Error> {
        let seed = self.seed.unwrap_or_else(|| getrandom::u64().unwrap_or(0x2545_f491_4f6c_dd1d));
        let opts = ConnectOptions::new(&self.headers, &self.roots, self.config.max_frame_bytes, 0)?;
        let session = PlainSession::new(self.config, &self.url, self.last_event_id, seed, Instant::now())?;
        let endpoint = self.url.clone();
        let shared =
            Arc::new(StateHub::new(ConnectionState::Connecting { transport: Transport::Sse, attempt: 0, endpoint }));
        let (tx, rx) = mpsc::channel(1024);
        let (close, close_rx) = oneshot::channel();
        let task = tokio::spawn(crate::driver::plain::run(session, tx, close_rx, shared.clone(), opts));
        Ok(PlainSse { rx, shared, close: Some(close), task: Some(task) })
    }
}

/// A standard SSE stream from a server that knows nothing of the resub
/// protocol: a [`Stream`] of [`PlainEvent`]s.
///
/// It reconnects with `Last-Event-ID` after drops, honours `retry:`, and ends
/// with an error item on HTTP 204 ([`Error::EndOfStream`]), another status
/// ([`Error::HttpStatus`]) or another content type
/// ([`Error::UnexpectedContentType`]), as the SSE specification says.
/// Whether the server replays from the id is the server's business: ids are
/// opaque here, so gaps cannot be detected.
#[derive(Debug)]
pub struct PlainSse {
    rx: mpsc::Receiver<Result<PlainEvent, Error>>,
    shared: Arc<StateHub>,
    close: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for StateHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateHub").field("current", &self.current()).finish()
    }
}

impl PlainSse {
    /// Starts configuring a stream from `url` (`http://` or `https://`).
    pub fn builder(url: &str) -> PlainSseBuilder {
        PlainSseBuilder {
            url: url.to_owned(),
            config: Config { heartbeat_timeout: None, ..Config::default() },
            last_event_id: None,
            headers: vec![],
            roots: vec![],
            seed: None,
        }
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.shared.current()
    }

    /// Connection state changes from now on; ends after `Closed`.
    pub fn states(&self) -> States {
        States::new(self.shared.listen())
    }

    /// Stops reading and waits until the stream is closed.
    pub async fn close(&mut self) {
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Stream for PlainSse {
    type Item = Result<PlainEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
