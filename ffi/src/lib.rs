//! UniFFI bindings of resub for Kotlin, Swift and Python.
//!
//! A thin layer: objects wrap [`resub::Client`] in `Arc`s, a listener
//! callback interface receives events, resets, errors and state changes, a
//! handle ends a subscription when closed or dropped, and every error is one
//! [`ResubError`] with a stable code. The client runs on a tokio runtime this
//! crate owns, so the host may call from any thread, with or without a
//! runtime of its own. No policy lives here: it is all in the core.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::channel::oneshot;
use futures::{FutureExt, StreamExt};
use resub::core::Backoff;
use resub::{ConnectionState, Message, Transport};

uniffi::setup_scaffolding!();

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("resub")
            .enable_all()
            .build()
            .expect("the resub runtime starts")
    })
}

/// Every error, flattened: a stable machine-readable `code` (the same codes
/// as the Rust and JavaScript APIs) and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ResubError {
    /// The operation failed.
    #[error("{code}: {detail}")]
    Failed {
        /// `unauthorized`, `forbidden`, `invalid_url`, `invalid_argument`, …
        code: String,
        /// Human-readable detail (not `message`, which Kotlin exceptions
        /// already have).
        detail: String,
    },
}

impl From<resub::Error> for ResubError {
    fn from(e: resub::Error) -> Self {
        ResubError::Failed { code: e.code().to_owned(), detail: e.to_string() }
    }
}

/// What a listener returns when it fails (a foreign exception); the client
/// logs it and carries on.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    /// The listener raised.
    #[error("listener failed: {reason}")]
    Failed {
        /// What it said.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ListenerError::Failed { reason: e.reason }
    }
}

/// A transport, as `tail --transport` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TransportKind {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    Poll,
}

impl From<TransportKind> for Transport {
    fn from(t: TransportKind) -> Self {
        match t {
            TransportKind::Ws => Transport::WebSocket,
            TransportKind::Sse => Transport::Sse,
            TransportKind::Poll => Transport::LongPoll,
        }
    }
}

impl From<Transport> for TransportKind {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Sse => TransportKind::Sse,
            Transport::LongPoll => TransportKind::Poll,
            _ => TransportKind::Ws,
        }
    }
}

/// Client configuration; [`default_config`] fills in the defaults.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientConfig {
    /// The server's base URL (`https://host:port`).
    pub url: String,
    /// Transports, most preferred first.
    pub transports: Vec<TransportKind>,
    /// Upper bound of the first reconnect delay.
    pub backoff_base_ms: u64,
    /// Growth per consecutive failure.
    pub backoff_factor: f64,
    /// Largest upper bound of a delay.
    pub backoff_cap_ms: u64,
    /// Give up after this many consecutive failures; none: never.
    pub max_attempts: Option<u32>,
    /// A connection must stay up this long before the failure count resets.
    pub healthy_after_ms: u64,
    /// How long an attempt may take until the server's welcome.
    pub open_timeout_ms: u64,
    /// Silence after which a connection is dead; none: twice the server's heartbeat.
    pub heartbeat_timeout_ms: Option<u64>,
    /// How often to try a better transport while on a fallback; none: never.
    pub upgrade_probe_ms: Option<u64>,
    /// How long the server may hold a long poll.
    pub poll_hold_ms: u64,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Further servers sharing the same channels, tried in turn when the
    /// one in use fails.
    pub endpoints: Vec<String>,
    /// Take part in presence under this client id.
    pub client_id: Option<String>,
    /// Presence data shown with the client id (at most 1024 bytes).
    pub presence_data: Option<String>,
    /// Keep cursors in this directory (one small file per channel, written
    /// atomically), so that `subscribe` without `from` resumes after the
    /// last event a previous run took; e.g. the app's files directory.
    pub cursor_dir: Option<String>,
}

/// A cursor store the app implements (a database, preferences): one event id
/// per channel. Pass it to `Client.withCallbacks`.
#[uniffi::export(callback_interface)]
pub trait CursorStore: Send + Sync {
    /// The cursor saved for `channel`, if any.
    fn load(&self, channel: String) -> Result<Option<String>, ListenerError>;
    /// Replaces the cursor of `channel`; called before each event is handed
    /// to the listener.
    fn save(&self, channel: String, cursor: String) -> Result<(), ListenerError>;
}

/// Gives the client a token before each connection (an app's login
/// session). Called on a background thread; it may block (refresh over the
/// network). A refused token is asked for again; three refusals in a row
/// stop the client with `unauthorized`.
#[uniffi::export(callback_interface)]
pub trait TokenProvider: Send + Sync {
    /// The token to send now, as `Authorization: Bearer <token>`.
    fn token(&self) -> Result<String, ListenerError>;
}

/// The app's token provider, as the client uses it.
struct ForeignTokens(Arc<dyn TokenProvider>);

impl resub::auth::TokenProvider for ForeignTokens {
    fn token(&self) -> resub::auth::TokenFuture {
        let provider = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || provider.token())
                .await
                .map_err(|e| resub::Error::Unavailable(e.to_string()))?
                .map_err(|e| resub::Error::Unavailable(format!("token provider: {e}")))
        })
    }
}

/// The app's store, as the client uses it.
struct ForeignStore(Box<dyn CursorStore>);

impl resub::CursorStore for ForeignStore {
    fn load(&self, channel: &str) -> Result<Option<String>, resub::StoreError> {
        self.0.load(channel.to_owned()).map_err(|e| resub::StoreError::Io(e.to_string()))
    }

    fn save(&self, channel: &str, cursor: &str) -> Result<(), resub::StoreError> {
        self.0.save(channel.to_owned(), cursor.to_owned()).map_err(|e| resub::StoreError::Io(e.to_string()))
    }
}

/// The defaults for a server at `url`.
#[uniffi::export]
pub fn default_config(url: String) -> ClientConfig {
    let b = Backoff::default();
    ClientConfig {
        url,
        transports: vec![TransportKind::Ws, TransportKind::Sse, TransportKind::Poll],
        backoff_base_ms: b.base.as_millis() as u64,
        backoff_factor: b.factor,
        backoff_cap_ms: b.cap.as_millis() as u64,
        max_attempts: b.max_attempts,
        healthy_after_ms: 5_000,
        open_timeout_ms: 10_000,
        heartbeat_timeout_ms: None,
        upgrade_probe_ms: Some(60_000),
        poll_hold_ms: 25_000,
        token: None,
        endpoints: Vec::new(),
        client_id: None,
        presence_data: None,
        cursor_dir: None,
    }
}

/// One event, with `data` exactly as published.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EventMessage {
    /// The channel.
    pub channel: String,
    /// Its id: pass it as `from` to resume after it.
    pub id: String,
    /// The event type (`message` when none was given).
    pub event: String,
    /// The payload.
    pub data: String,
}

/// A member of a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PresenceMember {
    /// Its client id.
    pub client_id: String,
    /// Its presence data; `""` if none.
    pub data: String,
}

/// An error carried in a state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ErrorInfo {
    /// The stable code.
    pub code: String,
    /// The message.
    pub message: String,
}

/// The connection state.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum State {
    /// An attempt is under way.
    Connecting {
        /// The transport tried.
        transport: TransportKind,
        /// Consecutive failures before it.
        attempt: u32,
        /// The server tried (base URL).
        endpoint: String,
    },
    /// Connected.
    Connected {
        /// The transport in use.
        transport: TransportKind,
        /// The more preferred transport given up, if any.
        fallback_from: Option<TransportKind>,
        /// Why it was given up.
        fallback_reason: Option<String>,
        /// The server in use (base URL).
        endpoint: String,
    },
    /// Not connected; the next attempt is scheduled.
    Disconnected {
        /// Why.
        reason: String,
        /// Consecutive failures.
        attempt: u32,
        /// Delay until the next attempt.
        retry_in_ms: u64,
    },
    /// Stopped for good.
    Closed {
        /// The error that stopped it, if one did.
        error: Option<ErrorInfo>,
    },
}

impl From<ConnectionState> for State {
    fn from(s: ConnectionState) -> Self {
        match s {
            ConnectionState::Connecting { transport, attempt, endpoint } => {
                State::Connecting { transport: transport.into(), attempt, endpoint }
            }
            ConnectionState::Connected { transport, fallback, endpoint } => State::Connected {
                transport: transport.into(),
                fallback_from: fallback.as_ref().map(|f| f.from.into()),
                fallback_reason: fallback.map(|f| f.reason.to_string()),
                endpoint,
            },
            ConnectionState::Disconnected { reason, attempt, retry_in, .. } => {
                State::Disconnected { reason: reason.to_string(), attempt, retry_in_ms: retry_in.as_millis() as u64 }
            }
            ConnectionState::Closed { error } => {
                State::Closed { error: error.map(|e| ErrorInfo { code: e.code().to_owned(), message: e.to_string() }) }
            }
            _ => State::Closed { error: None },
        }
    }
}

/// Receives a subscription's messages, on a thread of the client's runtime.
/// Whatever a method raises is logged and ignored.
#[uniffi::export(callback_interface)]
pub trait SubscriptionListener: Send + Sync {
    /// The next event after the cursor.
    fn on_event(&self, event: EventMessage) -> Result<(), ListenerError>;
    /// The subscription could not continue from its cursor (`reason`); it
    /// continues after `head`. Events may have been missed: re-sync.
    fn on_reset(&self, channel: String, reason: String, head: String) -> Result<(), ListenerError>;
    /// `client_id` joined (`action` = `join`) or left (`leave`) the channel's
    /// presence, with its presence `data`. Only for clients configured with
    /// a `client_id`.
    fn on_presence(
        &self,
        channel: String,
        action: String,
        client_id: String,
        data: String,
    ) -> Result<(), ListenerError>;
    /// The subscription ended with an error (`code` as in [`ResubError`]).
    fn on_error(&self, code: String, message: String) -> Result<(), ListenerError>;
    /// The subscription ended; nothing follows.
    fn on_end(&self) -> Result<(), ListenerError>;
}

/// Receives connection state changes.
#[uniffi::export(callback_interface)]
pub trait StateListener: Send + Sync {
    /// The state changed.
    fn on_state(&self, state: State) -> Result<(), ListenerError>;
}

fn report(what: &str, result: Result<(), ListenerError>) {
    if let Err(e) = result {
        tracing::warn!(%e, "{what} listener raised; ignored");
    }
}

/// Stops a subscription or a state listener when cancelled or dropped (on
/// the JVM, `close()` drops it).
#[derive(uniffi::Object)]
pub struct Handle {
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

#[uniffi::export]
impl Handle {
    /// Stops it; safe to call more than once, and from inside a listener.
    pub fn cancel(&self) {
        if let Some(stop) = self.stop.lock().expect("handle lock").take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A connection to a resub server.
#[derive(uniffi::Object)]
pub struct Client {
    inner: resub::Client,
}

impl Client {
    fn build(
        config: ClientConfig,
        store: Option<Box<dyn CursorStore>>,
        tokens: Option<Box<dyn TokenProvider>>,
    ) -> Result<Arc<Self>, ResubError> {
        let mut b = resub::Client::builder(&config.url)
            .transports(&config.transports.iter().map(|t| Transport::from(*t)).collect::<Vec<_>>())
            .backoff(Backoff {
                base: Duration::from_millis(config.backoff_base_ms),
                factor: config.backoff_factor,
                cap: Duration::from_millis(config.backoff_cap_ms),
                max_attempts: config.max_attempts,
            })
            .healthy_after(Duration::from_millis(config.healthy_after_ms))
            .open_timeout(Duration::from_millis(config.open_timeout_ms))
            .upgrade_probe(config.upgrade_probe_ms.map(Duration::from_millis))
            .poll_hold(Duration::from_millis(config.poll_hold_ms));
        if let Some(ms) = config.heartbeat_timeout_ms {
            b = b.heartbeat_timeout(Duration::from_millis(ms));
        }
        if let Some(token) = &config.token {
            b = b.token(token);
        }
        if let Some(tokens) = tokens {
            b = b.token_provider(ForeignTokens(Arc::from(tokens)));
        }
        if !config.endpoints.is_empty() {
            b = b.endpoints(&config.endpoints);
        }
        match (store, &config.cursor_dir) {
            (Some(store), _) => b = b.cursor_store(ForeignStore(store)),
            (None, Some(dir)) => {
                let store = resub::FileStore::new(dir)
                    .map_err(|e| resub::Error::Store(resub::StoreError::Io(format!("{dir}: {e}"))))?;
                b = b.cursor_store(store);
            }
            (None, None) => {}
        }
        if let Some(id) = &config.client_id {
            b = b.presence(id, config.presence_data.as_deref().unwrap_or(""));
        }
        // The client's tasks live on this crate's runtime, whatever thread
        // the host calls from.
        let _guard = runtime().enter();
        Ok(Arc::new(Client { inner: b.build()? }))
    }
}

#[uniffi::export]
impl Client {
    /// Starts a client; it connects at once and reconnects by itself.
    #[uniffi::constructor]
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, ResubError> {
        Self::build(config, None, None)
    }

    /// Starts a client that keeps its cursors in the app's `store` (instead
    /// of `cursor_dir`) and asks `tokens` for a token before each connection
    /// (instead of the fixed `token`); either may be absent.
    #[uniffi::constructor]
    pub fn with_callbacks(
        config: ClientConfig,
        store: Option<Box<dyn CursorStore>>,
        tokens: Option<Box<dyn TokenProvider>>,
    ) -> Result<Arc<Self>, ResubError> {
        Self::build(config, store, tokens)
    }

    /// Subscribes to `channel`, live or after the event id `from`. Messages
    /// go to `listener`; the returned handle ends the subscription.
    pub fn subscribe(
        &self,
        channel: String,
        from: Option<String>,
        listener: Box<dyn SubscriptionListener>,
    ) -> Result<Arc<Handle>, ResubError> {
        resub::protocol::validate_channel(&channel).map_err(resub::Error::from)?;
        if let Some(f) = &from {
            f.parse::<resub::protocol::EventId>().map_err(resub::Error::from)?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let client = self.inner.clone();
        runtime().spawn(async move {
            let sub = match &from {
                Some(after) => client.subscribe_from(&channel, after).await,
                None => client.subscribe(&channel).await,
            };
            let mut sub = match sub {
                Ok(s) => s,
                Err(e) => {
                    report("subscription", listener.on_error(e.code().to_owned(), e.to_string()));
                    report("subscription", listener.on_end());
                    return;
                }
            };
            let mut stopped = stopped.fuse();
            loop {
                // Biased: once the handle is closed (even from inside the
                // listener), nothing more is delivered.
                futures::select_biased! {
                    _ = stopped => break,
                    item = sub.next() => match item {
                        None => break,
                        Some(Ok(Message::Event(e))) => {
                            let event = e.event_type().to_owned();
                            let m = EventMessage { channel: e.channel, id: e.id, event, data: e.data };
                            report("subscription", listener.on_event(m));
                        }
                        Some(Ok(Message::Reset { channel, reason, head })) => {
                            report("subscription", listener.on_reset(channel, reason.to_string(), head));
                        }
                        Some(Ok(Message::Presence(p))) => {
                            let action = match p.action {
                                resub::PresenceAction::Join => "join",
                                resub::PresenceAction::Leave => "leave",
                            };
                            let (id, data) = (p.member.client_id, p.member.data);
                            report("subscription", listener.on_presence(p.channel, action.to_owned(), id, data));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            report("subscription", listener.on_error(e.code().to_owned(), e.to_string()));
                            break;
                        }
                    },
                }
            }
            drop(sub);
            report("subscription", listener.on_end());
        });
        Ok(Arc::new(Handle { stop: Mutex::new(Some(stop)) }))
    }

    /// Calls `listener` with the current state, then on every change, until
    /// the handle is cancelled.
    pub fn on_state(&self, listener: Box<dyn StateListener>) -> Arc<Handle> {
        let (stop, stopped) = oneshot::channel::<()>();
        let mut states = self.inner.states();
        let current = self.inner.state();
        runtime().spawn(async move {
            report("state", listener.on_state(current.into()));
            let mut stopped = stopped.fuse();
            loop {
                futures::select_biased! {
                    _ = stopped => return,
                    s = states.next() => match s {
                        Some(s) => report("state", listener.on_state(s.into())),
                        None => return,
                    },
                }
            }
        });
        Arc::new(Handle { stop: Mutex::new(Some(stop)) })
    }

    /// Who is present on `channel` now, sorted by client id.
    pub async fn presence(&self, channel: String) -> Result<Vec<PresenceMember>, ResubError> {
        let client = self.inner.clone();
        // The request runs on this crate's runtime, whatever executor awaits it.
        let members = runtime()
            .spawn(async move { client.presence(&channel).await })
            .await
            .map_err(|e| ResubError::from(resub::Error::Unavailable(e.to_string())))??;
        Ok(members.into_iter().map(|m| PresenceMember { client_id: m.client_id, data: m.data }).collect())
    }

    /// Publishes `data` to `channel`; returns the event id once acked.
    pub async fn publish(&self, channel: String, data: String) -> Result<String, ResubError> {
        Ok(self.inner.publish(&channel, data).await?)
    }

    /// The current connection state.
    pub fn state(&self) -> State {
        self.inner.state().into()
    }

    /// Forward the host's network reachability: `false` holds reconnection
    /// attempts, `true` reconnects at once with the backoff reset.
    pub fn network_available(&self, online: bool) {
        self.inner.network_available(online);
    }

    /// Call when the app returns to the foreground: the connection is checked
    /// with a short deadline and replaced if dead.
    pub fn wake(&self) {
        self.inner.wake();
    }

    /// Closes the client without waiting (safe from inside a listener);
    /// subscriptions end with `on_end`. (Not `close`: generated Kotlin
    /// objects have a `close()` of their own, which frees them.)
    pub fn shutdown(&self) {
        let client = self.inner.clone();
        runtime().spawn(async move { client.close().await });
    }

    /// Closes the client and waits until it has stopped.
    pub async fn shutdown_and_wait(&self) {
        self.inner.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_keeps_its_code_across_the_border() {
        let errors = [
            resub::Error::Unauthorized,
            resub::Error::Forbidden { channel: "c".into(), message: "no".into() },
            resub::Error::BadRequest("x".into()),
            resub::Error::Tls("bad certificate".into()),
            resub::Error::RetriesExhausted { attempts: 3, last: resub::DisconnectReason::HeartbeatTimeout },
            resub::Error::Closed,
            resub::Error::AlreadySubscribed("c".into()),
            resub::Error::InvalidUrl { url: "x".into(), why: "no scheme" },
            resub::Error::PublishRejected { code: "413".into(), message: "too large".into() },
            resub::Error::PublishQueueFull { waiting: 3, bytes: 30 },
            resub::Error::EndOfStream,
            resub::Error::HttpStatus { status: 500 },
            resub::Error::UnexpectedContentType("text/html".into()),
            resub::Error::FrameTooLarge { limit: 10 },
            resub::Error::InvalidClientId("a b".into()),
            resub::Error::Unavailable("HTTP 503".into()),
            resub::Error::NoRandomness("no entropy".into()),
            "bad channel!".parse::<resub::protocol::EventId>().map(|_| ()).unwrap_err().into(),
        ];
        let mut codes = std::collections::BTreeSet::new();
        for e in errors {
            let ResubError::Failed { code, detail } = ResubError::from(e.clone());
            assert_eq!(code, e.code());
            assert_eq!(detail, e.to_string());
            codes.insert(code);
        }
        assert_eq!(codes.len(), 18, "every error has a code of its own");
    }

    #[test]
    fn states_convert_with_their_details() {
        let fallback =
            resub::Fallback { from: Transport::WebSocket, reason: resub::DisconnectReason::Refused { status: 403 } };
        let endpoint = "http://b.example:8080".to_owned();
        let s: State = ConnectionState::Connected {
            transport: Transport::Sse,
            fallback: Some(fallback),
            endpoint: endpoint.clone(),
        }
        .into();
        assert_eq!(
            s,
            State::Connected {
                transport: TransportKind::Sse,
                fallback_from: Some(TransportKind::Ws),
                fallback_reason: Some("refused with HTTP 403".into()),
                endpoint,
            }
        );
        let s: State = ConnectionState::Closed { error: Some(resub::Error::Unauthorized) }.into();
        assert!(matches!(s, State::Closed { error: Some(ErrorInfo { code, .. }) } if code == "unauthorized"));
    }
}
