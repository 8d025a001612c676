//! The Rust API: [`Client`], [`Subscription`], [`States`].

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{Stream, StreamExt};

use crate::core::{Backoff, Config, Input, Seeds, Session};
use crate::driver::platform::ConnectOptions;
use crate::driver::{Command, CommandSender, Outbox, Shared, StateHub, command_queue};
use crate::protocol::{EventId, validate_channel};
#[cfg(not(target_arch = "wasm32"))]
use crate::store::CursorStore;
use crate::{ConnectionState, Error, Instant, Message, Stats, Transport};

/// Batches (of up to 64 messages)
/// buffered per subscription before the client stops reading the connection
/// (back-pressure) until the application catches up: about 1,024 messages.
const SUBSCRIPTION_BUFFER: usize = 16;

/// Configures and starts a [`Client`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    url: String,
    config: Config,
    seed: Option<u64>,
    headers: Vec<(String, String)>,
    roots: Vec<Vec<u8>>,
    #[cfg(not(target_arch = "wasm32"))]
    store: Option<Arc<dyn CursorStore>>,
    #[cfg(not(target_arch = "wasm32"))]
    token: Option<Arc<dyn crate::auth::TokenProvider>>,
}

impl ClientBuilder {
    /// Reconnect delays (exponential, full jitter). Default: 500 ms base,
    /// factor 2, 20 s cap, unlimited attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How long a connection must stay up before the failure count resets
    /// (default 5 s).
    pub fn healthy_after(mut self, d: Duration) -> Self {
        self.config.healthy_after = d;
        self
    }

    /// How long an attempt may take from connect to the server's welcome
    /// (default 10 s).
    pub fn open_timeout(mut self, d: Duration) -> Self {
        self.config.open_timeout = d;
        self
    }

    /// Silence after which a connection is considered dead. Default: twice the
    /// heartbeat interval the server announces.
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        self.config.heartbeat_timeout = Some(d);
        self
    }

    /// Most publishes that may wait in the outbox for a connection or an ack
    /// (default 1024). When it is full, `publish` fails at once with
    /// [`Error::PublishQueueFull`].
    pub fn max_pending_publishes(mut self, n: usize) -> Self {
        self.config.max_pending_publishes = n;
        self
    }

    /// Most bytes (data and event types) the outbox may hold (default
    /// 4 MiB). When a publish would pass it, it fails at once with
    /// [`Error::PublishQueueFull`].
    pub fn max_pending_publish_bytes(mut self, n: usize) -> Self {
        self.config.max_pending_publish_bytes = n;
        self
    }

    /// Largest frame accepted from the server (default 1 MiB).
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.config.max_frame_bytes = n;
        self
    }

    /// Transports to use, most preferred first (default: WebSocket, SSE, long
    /// polling). The client falls back along the list when a transport is not
    /// available, and probes back up while on a less preferred one.
    pub fn transports(mut self, transports: &[Transport]) -> Self {
        self.config.transports = transports.to_vec();
        self
    }

    /// How often to try a more preferred transport while on a fallback
    /// (default 60 s); `None` never tries.
    pub fn upgrade_probe(mut self, every: Option<Duration>) -> Self {
        self.config.upgrade_probe = every;
        self
    }

    /// How long the server may hold a long-poll request (default 25 s).
    pub fn poll_hold(mut self, d: Duration) -> Self {
        self.config.poll_hold = d;
        self
    }

    /// Seeds the generator for backoff jitter (default: from the OS), for
    /// reproducible runs. Idempotency keys do not depend on it: they always
    /// come from the operating system's randomness, so that clients built
    /// with the same seed never have their publishes merged.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Asks `provider` for a token before every connection (and HTTP
    /// publish), sent as `Authorization: Bearer <token>`; a refused token is
    /// retried with a fresh one, three refusals in a row stop the client with
    /// [`Error::Unauthorized`]. See [the `auth` module](crate::auth).
    ///
    /// ```no_run
    /// # fn f() -> Result<(), resub::Error> {
    /// let client = resub::Client::builder("https://rt.example.com")
    ///     .token_provider(|| async { Ok::<_, resub::Error>("fresh-token".to_owned()) })
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    #[cfg(not(target_arch = "wasm32"))]
    pub fn token_provider(mut self, provider: impl crate::auth::TokenProvider) -> Self {
        self.token = Some(Arc::new(provider));
        self.config.refresh_auth = true;
        self
    }

    /// Takes its tokens from the application, handed in with
    /// [`Client::set_token`] (the npm package's `token` function): the
    /// client makes no connection before the first token, and after a
    /// refusal (`401`, close code `4401`, an `unauthorized` error frame) none
    /// until the next, so a refused token is never tried again. Three
    /// refusals in a row, or failures to get a token, stop the client with
    /// [`Error::Unauthorized`].
    #[cfg(target_arch = "wasm32")]
    pub fn await_token(mut self) -> Self {
        self.config.await_token = true;
        self
    }

    /// Sends `Authorization: Bearer <token>` when connecting (in the
    /// browser, which cannot set headers on a WebSocket or an EventSource,
    /// those carry it in their URL as `access_token`).
    pub fn token(#[allow(unused_mut)] mut self, token: &str) -> Self {
        #[cfg(target_arch = "wasm32")]
        {
            self.config.access_token = Some(token.to_owned());
        }
        let mut value = String::from("Bearer ");
        value.push_str(token);
        self.header("authorization", &value)
    }

    /// Adds a header to every connection request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Further servers sharing the same channels (the other nodes of a
    /// cluster), tried in order after the URL given to
    /// [`Client::builder`] whenever the one in use fails, with the usual
    /// backoff and jitter. The client stays on a server as long as it works;
    /// cursors resume on any of them. The state says which one is in use.
    pub fn endpoints<S: AsRef<str>>(mut self, urls: &[S]) -> Self {
        self.config.endpoints = urls.iter().map(|u| u.as_ref().to_owned()).collect();
        self
    }

    /// Takes part in presence as `client_id` (1–128 characters from
    /// `A-Z a-z 0-9 _ . : -`), shown with `data` (at most 1024 bytes, often
    /// JSON; `""` for none): every subscription makes the client a member of
    /// its channel's presence, and brings [`Message::Presence`] join and
    /// leave events (on WebSocket and SSE).
    pub fn presence(mut self, client_id: &str, data: &str) -> Self {
        self.config.client_id = Some(client_id.to_owned());
        self.config.presence_data = Some(data.to_owned()).filter(|d| !d.is_empty());
        self
    }

    /// Keeps each subscription's cursor in `store` ([`FileStore`](crate::FileStore)
    /// to survive a restart, [`MemoryStore`](crate::MemoryStore), or your
    /// own): [`Client::subscribe`] then resumes after the stored cursor, and
    /// the cursor is saved as each event is handed to the application. See
    /// [the `store` module](crate::store).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn cursor_store(mut self, store: impl CursorStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Trusts this DER-encoded root certificate for `https`/`wss`, besides the
    /// webpki roots.
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> Self {
        self.roots.push(der);
        self
    }

    /// The randomness a session is given: jitter from the seed if one was
    /// set, idempotency keys always from the operating system.
    fn seeds(&self) -> Result<Seeds, Error> {
        let no_randomness = |e: getrandom::Error| Error::NoRandomness(e.to_string());
        let mut keys = [0u8; 16];
        getrandom::fill(&mut keys).map_err(no_randomness)?;
        Ok(Seeds {
            jitter: match self.seed {
                Some(s) => s,
                None => getrandom::u64().map_err(no_randomness)?,
            },
            keys: u128::from_le_bytes(keys),
        })
    }

    /// The sans-IO session this builder configures, for a driver of one's
    /// own to run (the npm package's JavaScript driver does): the same
    /// checks as [`build`](Self::build), nothing started. Headers, root
    /// certificates, a token provider and a cursor store are the driver's
    /// to apply.
    pub fn into_session(self) -> Result<Session, Error> {
        let seeds = self.seeds()?;
        Session::new(self.config, &self.url, seeds, Instant::now())
    }

    /// Starts the client: on native targets on the current tokio runtime, in
    /// the browser on the page's event loop. It connects at once and keeps
    /// reconnecting until closed or stopped by an error that retrying cannot
    /// fix.
    ///
    /// # Panics
    /// On native targets, when called outside a tokio runtime.
    pub fn build(self) -> Result<Client, Error> {
        let seeds = self.seeds()?;
        // A connection holds at most the outbox and a frame's worth of
        // subscribes and pings queued for sending.
        let send_queue = self.config.max_pending_publish_bytes.saturating_add(self.config.max_frame_bytes);
        #[cfg_attr(target_arch = "wasm32", allow(unused_mut))]
        let mut opts = ConnectOptions::new(&self.headers, &self.roots, self.config.max_frame_bytes, send_queue)?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            opts.token = self.token.clone();
        }
        let (max_pending, max_pending_bytes) =
            (self.config.max_pending_publishes, self.config.max_pending_publish_bytes);
        let session = Session::new(self.config, &self.url, seeds, Instant::now())?;
        let first = session.transport();
        let endpoint = session.endpoint_url().to_owned();
        let shared = Arc::new(Shared {
            states: StateHub::new(ConnectionState::Connecting {
                transport: first,
                attempt: 0,
                endpoint: endpoint.clone(),
            }),
            stats: Mutex::new(Stats::default()),
            outbox: Outbox::new(max_pending, max_pending_bytes),
            closing: Default::default(),
            held_connections: Default::default(),
        });
        let (commands, rx) = command_queue();
        #[cfg(not(target_arch = "wasm32"))]
        let http = opts.clone();
        crate::driver::platform::spawn(crate::driver::run(session, rx, shared.clone(), opts));
        Ok(Client {
            inner: Arc::new(Inner {
                commands,
                shared,
                next_sub: AtomicU64::new(0),
                #[cfg(not(target_arch = "wasm32"))]
                http,
                endpoint,
                #[cfg(not(target_arch = "wasm32"))]
                store: self.store,
            }),
        })
    }
}

struct Inner {
    commands: CommandSender,
    shared: Arc<Shared>,
    next_sub: AtomicU64,
    /// For requests outside the connection (presence lists).
    #[cfg(not(target_arch = "wasm32"))]
    http: ConnectOptions,
    /// The first server, for such requests before any state names one.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    endpoint: String,
    #[cfg(not(target_arch = "wasm32"))]
    store: Option<Arc<dyn CursorStore>>,
}

/// A connection to a resub server, shared by any number of subscriptions.
///
/// Cheap to clone; the connection lives until [`close`](Client::close) is
/// called, or until every clone and every [`Subscription`] is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("state", &self.state()).finish()
    }
}

impl Client {
    /// Starts configuring a client for the server at `url` (`http://host:port`
    /// or `https://…`; the endpoints are derived as PROTOCOL.md says).
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            config: Config::default(),
            seed: None,
            headers: vec![],
            roots: vec![],
            #[cfg(not(target_arch = "wasm32"))]
            store: None,
            #[cfg(not(target_arch = "wasm32"))]
            token: None,
        }
    }

    /// Subscribes to `channel`, starting with live events, or, with a
    /// [cursor store](ClientBuilder::cursor_store) that has a cursor for it,
    /// after that cursor.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, Error> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(store) = &self.inner.store {
            validate_channel(channel)?;
            if let Some(cursor) = store.load(channel)? {
                let from = cursor.parse::<EventId>()?;
                return self.subscribe_inner(channel, Some(from)).await;
            }
        }
        self.subscribe_inner(channel, None).await
    }

    /// Subscribes to `channel`, starting after the event with id `after`
    /// (as returned by a publish or carried by an [`Event`](crate::Event)):
    /// every later event is delivered, or a [`Message::Reset`] says why not.
    pub async fn subscribe_from(&self, channel: &str, after: &str) -> Result<Subscription, Error> {
        let from = after.parse::<EventId>()?;
        self.subscribe_inner(channel, Some(from)).await
    }

    async fn subscribe_inner(&self, channel: &str, from: Option<EventId>) -> Result<Subscription, Error> {
        validate_channel(channel)?;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        let (reply, result) = oneshot::channel();
        let id = self.inner.next_sub.fetch_add(1, Ordering::Relaxed);
        self.command(Command::Subscribe { channel: channel.to_owned(), from, id, tx, reply })?;
        result.await.map_err(|_| self.closed_error())?.map_err(|e| self.why(e))?;
        Ok(Subscription {
            channel: channel.to_owned(),
            id,
            rx,
            buf: Default::default(),
            commands: self.inner.commands.clone(),
            #[cfg(not(target_arch = "wasm32"))]
            store: self.inner.store.clone(),
            #[cfg(not(target_arch = "wasm32"))]
            failed: false,
        })
    }

    /// Publishes `data` to `channel` and waits for the server's ack, which
    /// carries the event's id. Sent again after a reconnect if needed; the
    /// idempotency key makes sure it is applied once.
    pub async fn publish(&self, channel: &str, data: impl Into<String>) -> Result<String, Error> {
        self.publish_event(channel, None, data).await
    }

    /// Like [`publish`](Self::publish), with an event type.
    pub async fn publish_event(
        &self,
        channel: &str,
        event: Option<&str>,
        data: impl Into<String>,
    ) -> Result<String, Error> {
        validate_channel(channel)?;
        let (reply, result) = oneshot::channel();
        let event = event.map(str::to_owned);
        let data = data.into();
        // Counted from now, not from when the loop takes the command: a loop
        // held up by a slow subscription must not queue publishes unbounded.
        let bytes = data.len() + event.as_ref().map_or(0, String::len);
        self.inner.shared.outbox.reserve(bytes)?;
        if let Err(e) = self.command(Command::Publish { channel: channel.to_owned(), event, data, reply }) {
            self.inner.shared.outbox.release(bytes);
            return Err(e);
        }
        result.await.map_err(|_| self.closed_error())?.map_err(|e| self.why(e))
    }

    /// Who is present on `channel` now (client id and presence data, sorted
    /// by client id), asked of the server in use over HTTP
    /// (`GET /presence/{channel}`), whatever the transport. Not in the
    /// browser build: the npm package's `presence()` does the same with
    /// `fetch`.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn presence(&self, channel: &str) -> Result<Vec<crate::Member>, Error> {
        validate_channel(channel)?;
        let base = match self.state() {
            ConnectionState::Connecting { endpoint, .. } | ConnectionState::Connected { endpoint, .. } => endpoint,
            _ => self.inner.endpoint.clone(),
        };
        crate::driver::native::presence(&format!("{base}/presence/{channel}"), &self.inner.http).await
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.shared.states.current()
    }

    /// Connection state changes from now on. A listener that falls more than
    /// 256 changes behind misses some. The stream ends after the
    /// [`ConnectionState::Closed`] state (at once if the client is already
    /// closed).
    pub fn states(&self) -> States {
        States::new(self.inner.shared.states.listen())
    }

    /// Counters: delivered, replayed, duplicates dropped, resets, connections.
    pub fn stats(&self) -> Stats {
        *self.inner.shared.stats.lock().expect("stats lock")
    }

    /// Tells the client whether the host has a network. `false` holds
    /// reconnection attempts; `true` reconnects at once with the backoff
    /// reset (a mobile app forwards its reachability changes here; the
    /// browser build listens to `online`/`offline` by itself).
    pub fn network_available(&self, online: bool) {
        let input = if online { Input::Online } else { Input::Offline };
        let _ = self.command(Command::Signal(input));
    }

    /// Hands in a fresh token (see [`ClientBuilder::await_token`]), used
    /// from the next connection or request on; `None` says the application
    /// could not get one, which counts as a refusal when the client is
    /// waiting for a token, and changes nothing otherwise.
    #[cfg(target_arch = "wasm32")]
    pub fn set_token(&self, token: Option<String>) {
        let _ = self.command(Command::Signal(Input::Token(token)));
    }

    /// Tells the client the host has reason to doubt the connection (an app
    /// back in the foreground, a laptop waking up): a WebSocket is pinged
    /// with a short deadline and replaced if it does not answer.
    pub fn wake(&self) {
        let _ = self.command(Command::Signal(Input::Wake));
    }

    /// Closes the connection (with a close handshake) and ends every
    /// subscription; waiting publishes fail with [`Error::Closed`]. Returns
    /// when the client has stopped.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        self.inner.shared.closing.request();
        if self.inner.commands.unbounded_send(Command::Close { done }).is_ok() {
            let _ = stopped.await;
        }
    }

    fn command(&self, c: Command) -> Result<(), Error> {
        self.inner.commands.unbounded_send(c).map_err(|_| self.closed_error())
    }

    /// Why the client is closed: the error that stopped it (say,
    /// `Unauthorized`), or [`Error::Closed`] if the application closed it.
    fn closed_error(&self) -> Error {
        match self.state() {
            ConnectionState::Closed { error: Some(e) } => e,
            _ => Error::Closed,
        }
    }

    /// A plain [`Error::Closed`] from the session says no more than that the
    /// client is closed: say why.
    fn why(&self, e: Error) -> Error {
        if e == Error::Closed { self.closed_error() } else { e }
    }
}

/// The messages of one channel: a [`Stream`] of [`Message`]s. Ends after an
/// error item, or when the client closes. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    channel: String,
    id: u64,
    rx: mpsc::Receiver<Vec<Result<Message, Error>>>,
    /// The rest of the last batch received.
    buf: std::collections::VecDeque<Result<Message, Error>>,
    commands: CommandSender,
    /// Where the cursor is saved as events are handed out.
    #[cfg(not(target_arch = "wasm32"))]
    store: Option<Arc<dyn CursorStore>>,
    /// The store failed: the stream has ended.
    #[cfg(not(target_arch = "wasm32"))]
    failed: bool,
}

impl Subscription {
    /// The channel subscribed to.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl Stream for Subscription {
    type Item = Result<Message, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            #[cfg(not(target_arch = "wasm32"))]
            if self.failed {
                return Poll::Ready(None);
            }
            if let Some(message) = self.buf.pop_front() {
                if self.buf.is_empty() {
                    self.buf = Default::default();
                }
                #[cfg(not(target_arch = "wasm32"))]
                if let Err(e) = self.save_cursor(&message) {
                    self.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                return Poll::Ready(Some(message));
            }
            match self.rx.poll_next_unpin(cx) {
                // The batch becomes the buffer (no copy); once read, it is
                // freed, so an idle subscription holds no batch.
                Poll::Ready(Some(batch)) => self.buf = batch.into(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Subscription {
    /// Saves the position `message` moves the subscription to, before the
    /// application sees it.
    #[cfg(not(target_arch = "wasm32"))]
    fn save_cursor(&self, message: &Result<Message, Error>) -> Result<(), Error> {
        let Some(store) = &self.store else { return Ok(()) };
        let Some(cursor) = message.as_ref().ok().and_then(Message::cursor) else { return Ok(()) };
        store.save(&self.channel, cursor).map_err(|e| {
            tracing::error!(channel = %self.channel, %e, "cannot save the cursor; the subscription ends");
            Error::Store(e)
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let channel = std::mem::take(&mut self.channel);
        let _ = self.commands.unbounded_send(Command::Unsubscribe { channel, id: self.id });
    }
}

/// A [`Stream`] of connection state changes.
pub struct States {
    inner: mpsc::Receiver<ConnectionState>,
}

impl States {
    pub(crate) fn new(inner: mpsc::Receiver<ConnectionState>) -> Self {
        States { inner }
    }
}

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("States")
    }
}

impl Stream for States {
    type Item = ConnectionState;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl futures::stream::FusedStream for Subscription {
    fn is_terminated(&self) -> bool {
        self.buf.is_empty() && self.rx.is_terminated()
    }
}

impl futures::stream::FusedStream for States {
    fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::sync::atomic::Ordering;

    use futures::StreamExt;

    use crate::{Client, Message, Transport};

    /// Every long poll is a connection that ends by itself, as is every
    /// connection a server drops: the loop lets go of each one's handle (it
    /// kept them all, a task and a queue per poll, for the client's life).
    #[tokio::test]
    async fn connections_that_end_by_themselves_are_let_go() {
        let fx = resub_fixture::Fixture::start().await.unwrap();
        let client = Client::builder(&fx.url()).transports(&[Transport::LongPoll]).build().unwrap();
        let mut sub = client.subscribe_from("c", &fx.head("c")).await.unwrap();
        let polls_before = fx.stats().polls_accepted;
        for i in 0..30 {
            // Each event answers the poll held for it; the next poll follows.
            fx.publish("c", None, &i.to_string()).unwrap();
            loop {
                match sub.next().await.expect("the subscription goes on").unwrap() {
                    Message::Event(e) => {
                        assert_eq!(e.data, i.to_string());
                        break;
                    }
                    Message::Resumed { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let polls = fx.stats().polls_accepted - polls_before;
        assert!(polls >= 30, "only {polls} polls");
        // The poll in flight, and at most the one whose end is still queued.
        let held = client.inner.shared.held_connections.load(Ordering::Relaxed);
        assert!(held <= 2, "{held} connection handles held after {polls} polls");
        client.close().await;
    }

    /// A connection's work runs on the loop's task, which ends with the
    /// session: a WebSocket still saying goodbye then finishes on a task of
    /// its own, so the server gets a close frame, not a cut connection.
    #[tokio::test]
    async fn close_sends_a_websocket_close_frame() {
        use tokio_tungstenite::tungstenite::Message as Ws;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            futures::SinkExt::send(&mut ws, Ws::text(r#"{"type":"welcome","heartbeat_ms":60000}"#)).await.unwrap();
            // What the client sends until its connection ends: a close frame
            // ends it gracefully, anything else is a cut.
            loop {
                match ws.next().await {
                    Some(Ok(Ws::Close(_))) => return "close frame",
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return "cut",
                }
            }
        });
        let client = Client::builder(&url).transports(&[Transport::WebSocket]).build().unwrap();
        let mut states = client.states();
        while !matches!(states.next().await, Some(crate::ConnectionState::Connected { .. })) {}
        client.close().await;
        assert_eq!(server.await.unwrap(), "close frame");
    }
}
