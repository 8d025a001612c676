//! UniFFI bindings of resub for Kotlin, Swift and Python.
//!
//! A thin layer: objects wrap [`resub::Client`], listener callback
//! interfaces receive messages and states, a handle ends a subscription
//! when cancelled or dropped, every error is one [`ResubError`] with a
//! stable code. No policy lives here: it is all in the core.
//!
//! # Threads
//!
//! The client's I/O runs on a small tokio runtime this crate owns
//! (threads `resub-io`), so the host may call from any thread. No foreign
//! code ever runs on those threads:
//!
//! - each subscription has a delivery thread of its own (`resub-deliver`)
//!   that calls its listener and the cursor store, in order; a listener that
//!   takes its time delays only its own subscription (up to
//!   [`DELIVERY_QUEUE`] messages behind, past which the client stops reading
//!   the subscription, as a Rust `Subscription` that is not read);
//! - each state listener has a thread of its own (`resub-state`);
//! - token providers are called on the runtime's blocking pool;
//! - log lines go to the log listener's thread (`resub-log`, see [`log`]).
//!
//! # Lifecycle
//!
//! `shutdown_and_wait` returns once the client has stopped and every
//! delivery thread has delivered its last callback (`on_end`) and released
//! the foreign objects it held: after it returns, no library thread calls
//! into the host again. `shutdown` does the same without waiting. Dropping
//! the last reference to a client shuts it down too. Since a thread calling
//! into an interpreter that is being torn down crashes the process, the
//! shipped wrappers (`resub.py`, `Resub.kt`) call [`shutdown_all`] from the
//! host's exit hook (`atexit`, a JVM shutdown hook).

mod log;
mod types;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::channel::oneshot;
use futures::{FutureExt, StreamExt};
use resub::core::{Backoff, Config};
use resub::{Message, Transport};
use tokio::sync::mpsc;

pub use log::{LogLevel, LogListener, clear_log_listener, set_log_listener};
use types::millis;
pub use types::{
    ClientConfig, DisconnectCode, ErrorInfo, EventMessage, ListenerError, PresenceMember, ResubError, State, Stats,
    TransportKind,
};

uniffi::setup_scaffolding!();

/// Messages a subscription's delivery thread may be behind its listener
/// before the client stops reading the subscription.
pub const DELIVERY_QUEUE: usize = 4096;

/// How long an exit hook waits for one client's threads.
const EXIT_WAIT: Duration = Duration::from_secs(5);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("resub-io")
            .enable_all()
            .build()
            .expect("the resub runtime starts")
    })
}

/// Runs `fut` on the library's runtime, and hands its output to the
/// foreign executor in a way that leaves no library thread inside the host
/// once the host has it.
///
/// A foreign `await` is resumed by a library thread calling the host's
/// continuation (through the future's waker). An interpreter may take the
/// lock it needs away from that thread in the middle of the call, resume
/// the awaiting code on its own thread, and, if that code then exits,
/// start tearing down; the library thread, coming back for the lock, is
/// then killed mid-call, which aborts the process. So the final poll, which
/// the host makes on its own thread, waits until that wake-up call has
/// returned before it reports the output: by the time the host has the
/// output, the library thread is out of the host.
fn on_runtime<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> impl std::future::Future<Output = T> + Send {
    struct Slot<T> {
        out: Option<T>,
        waker: Option<std::task::Waker>,
        /// The task is done with the host: it set `out` and, if a waker
        /// was stored, called it and got back.
        finished: bool,
    }
    let shared = Arc::new((Mutex::new(Slot { out: None, waker: None, finished: false }), std::sync::Condvar::new()));
    let task = shared.clone();
    runtime().spawn(async move {
        let out = fut.await;
        let (lock, done) = &*task;
        let waker = {
            let mut slot = lock.lock().expect("completion lock");
            slot.out = Some(out);
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        lock.lock().expect("completion lock").finished = true;
        done.notify_all();
    });
    std::future::poll_fn(move |cx| {
        let (lock, done) = &*shared;
        let mut slot = lock.lock().expect("completion lock");
        if slot.out.is_none() {
            slot.waker = Some(cx.waker().clone());
            return std::task::Poll::Pending;
        }
        // The output is there: the task is about to finish (or has).
        while !slot.finished {
            slot = done.wait(slot).expect("completion lock");
        }
        std::task::Poll::Ready(slot.out.take().expect("the output, taken once"))
    })
}

// --- callbacks the host implements ------------------------------------------

/// A cursor store the app implements (a database, preferences): one event id
/// per channel. Pass it to `Client.withCallbacks`. Called on the
/// subscription's delivery thread.
#[uniffi::export(callback_interface)]
pub trait CursorStore: Send + Sync {
    /// The cursor saved for `channel`, if any (called at `subscribe`, on the
    /// caller's thread).
    fn load(&self, channel: String) -> Result<Option<String>, ListenerError>;
    /// Replaces the cursor of `channel`; called before each event (and
    /// reset) is handed to the listener.
    fn save(&self, channel: String, cursor: String) -> Result<(), ListenerError>;
}

/// Gives the client a token before each connection (an app's login
/// session). Called on a background thread of the library; it may block
/// (refresh over the network). If it raises, the state says so
/// (`Disconnected` with reason `NoCredentials` and the message); a refused
/// token or a failure is asked again, three in a row stop the client with
/// `unauthorized`.
#[uniffi::export(callback_interface)]
pub trait TokenProvider: Send + Sync {
    /// The token to send now, as `Authorization: Bearer <token>`.
    fn token(&self) -> Result<String, ListenerError>;
}

/// Receives a subscription's messages, in order, on the subscription's
/// delivery thread. Whatever a method raises is logged and ignored. The
/// shipped wrappers give every method but `on_event` a default that does
/// nothing.
#[uniffi::export(callback_interface)]
pub trait SubscriptionListener: Send + Sync {
    /// The next event after the cursor.
    fn on_event(&self, event: EventMessage) -> Result<(), ListenerError>;
    /// A (re)subscription resumed after the cursor `after`: nothing was lost.
    fn on_resumed(&self, channel: String, after: String) -> Result<(), ListenerError>;
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

/// Receives connection state changes, on a thread of its own.
#[uniffi::export(callback_interface)]
pub trait StateListener: Send + Sync {
    /// The state changed.
    fn on_state(&self, state: State) -> Result<(), ListenerError>;
}

/// Logs a callback that raised (at `warn`, with what it said).
fn report(what: &str, result: Result<(), ListenerError>) {
    if let Err(e) = result {
        tracing::warn!(target: "resub_ffi", "a {what} callback raised (ignored): {e}");
    }
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
                .map_err(|ListenerError::Failed { reason }| resub::Error::Unavailable(reason))
        })
    }
}

/// Where a subscription's cursors are kept, if anywhere.
#[derive(Clone)]
enum Store {
    Foreign(Arc<dyn CursorStore>),
    Files(Arc<resub::FileStore>),
}

impl Store {
    fn load(&self, channel: &str) -> Result<Option<String>, ResubError> {
        let failed = |e: String| ResubError::from(resub::Error::Store(resub::StoreError::Io(e)));
        match self {
            Store::Foreign(s) => s.load(channel.to_owned()).map_err(|e| failed(e.to_string())),
            Store::Files(s) => resub::CursorStore::load(&**s, channel).map_err(|e| failed(e.to_string())),
        }
    }

    fn save(&self, channel: &str, cursor: &str) -> Result<(), String> {
        match self {
            Store::Foreign(s) => s.save(channel.to_owned(), cursor.to_owned()).map_err(|e| e.to_string()),
            Store::Files(s) => resub::CursorStore::save(&**s, channel, cursor).map_err(|e| e.to_string()),
        }
    }
}

// --- handles -------------------------------------------------------------

/// Stops a subscription or a state listener when cancelled or dropped (on
/// the JVM, `close()` drops it). After `cancel` returns, its listener gets
/// nothing but `on_end`.
#[derive(uniffi::Object)]
pub struct Handle {
    stop: Mutex<Option<oneshot::Sender<()>>>,
    cancelled: Arc<AtomicBool>,
}

#[uniffi::export]
impl Handle {
    /// Stops it; safe to call more than once, and from inside a listener.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
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

// --- the client ------------------------------------------------------------

/// What a client shares with its delivery threads and the exit hook.
struct Core {
    inner: resub::Client,
    store: Option<Store>,
    /// Set by shutdown: delivery threads skip what is queued, and end with
    /// `on_end`.
    closing: AtomicBool,
    /// The delivery threads, to wait for at shutdown.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Core {
    fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        let client = self.inner.clone();
        runtime().spawn(async move { client.close().await });
    }

    /// Waits (up to `limit` per thread) for every delivery thread but the
    /// caller's own; true when all ended.
    fn join_threads(&self, limit: Duration) -> bool {
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        let me = std::thread::current().id();
        let mut all = true;
        for t in threads {
            if t.thread().id() == me {
                continue;
            }
            // No deadline (`Duration::MAX`): wait as long as it takes.
            let Some(deadline) = std::time::Instant::now().checked_add(limit) else {
                let _ = t.join();
                continue;
            };
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(target: "resub_ffi", "a callback did not return within {limit:?}; not waiting for it");
                all = false;
            }
        }
        all
    }

    fn spawn_thread(&self, name: &str, body: impl FnOnce() + Send + 'static) {
        let t = std::thread::Builder::new().name(name.into()).spawn(body).expect("a delivery thread starts");
        let mut threads = self.threads.lock().expect("threads lock");
        threads.retain(|t| !t.is_finished());
        threads.push(t);
    }
}

/// The configuration for a server at `url`, every other option left to the
/// core's default (the same as `ClientConfig(url = …)` where a language has
/// default arguments).
#[uniffi::export]
pub fn default_config(url: String) -> ClientConfig {
    ClientConfig {
        url,
        transports: None,
        backoff_base_ms: None,
        backoff_factor: None,
        backoff_cap_ms: None,
        max_attempts: None,
        healthy_after_ms: None,
        open_timeout_ms: None,
        heartbeat_timeout_ms: None,
        upgrade_probe_ms: None,
        poll_hold_ms: None,
        max_pending_publishes: None,
        max_pending_publish_bytes: None,
        max_frame_bytes: None,
        token: None,
        endpoints: None,
        client_id: None,
        presence_data: None,
        cursor_dir: None,
    }
}

/// Every client alive, for the exit hook.
static LIVE: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// Shuts every client of the process down and waits (a few seconds at
/// most) until no library thread will call into the host again; stops the
/// log listener too. The shipped wrappers call it when the interpreter or
/// VM exits; an app may call it itself.
#[uniffi::export]
pub fn shutdown_all() {
    let cores: Vec<Arc<Core>> = LIVE.lock().expect("live lock").drain(..).filter_map(|w| w.upgrade()).collect();
    for core in &cores {
        core.begin_shutdown();
    }
    for core in &cores {
        core.join_threads(EXIT_WAIT);
    }
    log::shutdown();
}

/// A connection to a resub server.
#[derive(uniffi::Object)]
pub struct Client {
    core: Arc<Core>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // The last reference: stop, without waiting (a finalizer may hold
        // a lock that a delivery thread needs).
        self.core.begin_shutdown();
    }
}

impl Client {
    fn build(
        config: ClientConfig,
        store: Option<Box<dyn CursorStore>>,
        tokens: Option<Box<dyn TokenProvider>>,
    ) -> Result<Arc<Self>, ResubError> {
        log::install();
        let d = Config::default();
        let mut b = resub::Client::builder(&config.url);
        if let Some(ts) = &config.transports {
            b = b.transports(&ts.iter().map(|t| Transport::from(*t)).collect::<Vec<_>>());
        }
        b = b.backoff(Backoff {
            base: config.backoff_base_ms.map(|ms| millis("backoff_base_ms", ms)).transpose()?.unwrap_or(d.backoff.base),
            factor: config.backoff_factor.unwrap_or(d.backoff.factor),
            cap: config.backoff_cap_ms.map(|ms| millis("backoff_cap_ms", ms)).transpose()?.unwrap_or(d.backoff.cap),
            max_attempts: config.max_attempts.or(d.backoff.max_attempts),
        });
        if let Some(ms) = config.healthy_after_ms {
            b = b.healthy_after(millis("healthy_after_ms", ms)?);
        }
        if let Some(ms) = config.open_timeout_ms {
            b = b.open_timeout(millis("open_timeout_ms", ms)?);
        }
        if let Some(ms) = config.heartbeat_timeout_ms {
            b = b.heartbeat_timeout(millis("heartbeat_timeout_ms", ms)?);
        }
        if let Some(ms) = config.upgrade_probe_ms {
            let every = millis("upgrade_probe_ms", ms)?;
            b = b.upgrade_probe((!every.is_zero()).then_some(every));
        }
        if let Some(ms) = config.poll_hold_ms {
            b = b.poll_hold(millis("poll_hold_ms", ms)?);
        }
        if let Some(n) = config.max_pending_publishes {
            b = b.max_pending_publishes(n as usize);
        }
        if let Some(n) = config.max_pending_publish_bytes {
            b = b.max_pending_publish_bytes(n as usize);
        }
        if let Some(n) = config.max_frame_bytes {
            b = b.max_frame_bytes(n as usize);
        }
        if let Some(token) = &config.token {
            b = b.token(token);
        }
        if let Some(tokens) = tokens {
            b = b.token_provider(ForeignTokens(Arc::from(tokens)));
        }
        if let Some(endpoints) = config.endpoints.as_ref().filter(|e| !e.is_empty()) {
            b = b.endpoints(endpoints);
        }
        let store = match (store, &config.cursor_dir) {
            (Some(store), _) => Some(Store::Foreign(Arc::from(store))),
            (None, Some(dir)) => Some(Store::Files(Arc::new(
                resub::FileStore::new(dir)
                    .map_err(|e| resub::Error::Store(resub::StoreError::Io(format!("{dir}: {e}"))))?,
            ))),
            (None, None) => None,
        };
        if let Some(id) = &config.client_id {
            b = b.presence(id, config.presence_data.as_deref().unwrap_or(""));
        }
        // The client's tasks live on this crate's runtime, whatever thread
        // the host calls from.
        let _guard = runtime().enter();
        let core = Arc::new(Core {
            inner: b.build()?,
            store,
            closing: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let mut live = LIVE.lock().expect("live lock");
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&core));
        Ok(Arc::new(Client { core }))
    }

    fn closed(&self) -> Result<(), ResubError> {
        let closed = self.core.closing.load(Ordering::Acquire)
            || matches!(self.core.inner.state(), resub::ConnectionState::Closed { .. });
        if closed { Err(resub::Error::Closed.into()) } else { Ok(()) }
    }
}

/// What a subscription's pump hands its delivery thread.
enum Item {
    Message(Message),
    Failed(resub::Error),
    End,
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

    /// Subscribes to `channel`, after the event id `from`, or else after
    /// the cursor store's cursor, or else live. Messages go to `listener`
    /// on the subscription's delivery thread; the returned handle ends the
    /// subscription. Fails with `closed` after a shutdown, with
    /// `invalid_argument` for a bad channel name or cursor.
    pub fn subscribe(
        &self,
        channel: String,
        from: Option<String>,
        listener: Box<dyn SubscriptionListener>,
    ) -> Result<Arc<Handle>, ResubError> {
        self.closed()?;
        resub::protocol::validate_channel(&channel).map_err(resub::Error::from)?;
        let from = match (from, &self.core.store) {
            (Some(f), _) => Some(f),
            (None, Some(store)) => store.load(&channel)?,
            (None, None) => None,
        };
        if let Some(f) = &from {
            f.parse::<resub::protocol::EventId>().map_err(resub::Error::from)?;
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let cancelled = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Item>(DELIVERY_QUEUE);
        // The pump: reads the subscription on the runtime, never blocking it.
        let client = self.core.inner.clone();
        let pump_channel = channel.clone();
        runtime().spawn(async move {
            let sub = match &from {
                Some(after) => client.subscribe_from(&pump_channel, after).await,
                None => client.subscribe(&pump_channel).await,
            };
            let mut sub = match sub {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Item::Failed(e)).await;
                    let _ = tx.send(Item::End).await;
                    return;
                }
            };
            let mut stopped = stopped.fuse();
            loop {
                futures::select_biased! {
                    _ = stopped => break,
                    item = sub.next() => match item {
                        None => break,
                        Some(Ok(m)) => if tx.send(Item::Message(m)).await.is_err() { return },
                        Some(Err(e)) => {
                            let _ = tx.send(Item::Failed(e)).await;
                            break;
                        }
                    },
                }
            }
            drop(sub);
            let _ = tx.send(Item::End).await;
        });
        // The delivery thread: the listener and the store, in order.
        let core = self.core.clone();
        let stop_delivering = cancelled.clone();
        let store = self.core.store.clone();
        self.core.spawn_thread("resub-deliver", move || {
            deliver(rx, &*listener, store.as_ref(), &channel, &stop_delivering, &core.closing);
            drop(listener);
            drop(store);
        });
        Ok(Arc::new(Handle { stop: Mutex::new(Some(stop)), cancelled }))
    }

    /// Calls `listener` with the current state, then on every change, on a
    /// thread of its own, until the handle is cancelled or the client closes
    /// (the last state is `Closed`).
    pub fn on_state(&self, listener: Box<dyn StateListener>) -> Arc<Handle> {
        let (stop, stopped) = oneshot::channel::<()>();
        let cancelled = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel::<State>(256);
        let mut states = self.core.inner.states();
        let current = self.core.inner.state();
        runtime().spawn(async move {
            if tx.send(current.into()).await.is_err() {
                return;
            }
            let mut stopped = stopped.fuse();
            loop {
                futures::select_biased! {
                    _ = stopped => return,
                    s = states.next() => match s {
                        Some(s) => if tx.send(s.into()).await.is_err() { return },
                        None => return,
                    },
                }
            }
        });
        let stop_delivering = cancelled.clone();
        self.core.spawn_thread("resub-state", move || {
            while let Some(state) = rx.blocking_recv() {
                if stop_delivering.load(Ordering::Acquire) {
                    break;
                }
                report("state", listener.on_state(state));
            }
            drop(listener);
        });
        Arc::new(Handle { stop: Mutex::new(Some(stop)), cancelled })
    }

    /// Who is present on `channel` now, sorted by client id.
    pub async fn presence(&self, channel: String) -> Result<Vec<PresenceMember>, ResubError> {
        let client = self.core.inner.clone();
        // The request runs on this crate's runtime, whatever executor awaits it.
        let members = on_runtime(async move { client.presence(&channel).await }).await?;
        Ok(members.into_iter().map(|m| PresenceMember { client_id: m.client_id, data: m.data }).collect())
    }

    /// Publishes `data` to `channel`; returns the event id once acked.
    pub async fn publish(&self, channel: String, data: String) -> Result<String, ResubError> {
        self.publish_event(channel, None, data).await
    }

    /// Publishes `data` to `channel` with an event type (`None`: `message`);
    /// returns the event id once acked.
    pub async fn publish_event(
        &self,
        channel: String,
        event: Option<String>,
        data: String,
    ) -> Result<String, ResubError> {
        let client = self.core.inner.clone();
        on_runtime(async move { client.publish_event(&channel, event.as_deref(), data).await })
            .await
            .map_err(ResubError::from)
    }

    /// The current connection state.
    pub fn state(&self) -> State {
        self.core.inner.state().into()
    }

    /// The client's counters.
    pub fn stats(&self) -> Stats {
        self.core.inner.stats().into()
    }

    /// Forward the host's network reachability: `false` holds reconnection
    /// attempts, `true` reconnects at once with the backoff reset.
    pub fn network_available(&self, online: bool) {
        self.core.inner.network_available(online);
    }

    /// Call when the app returns to the foreground: the connection is
    /// checked with a short deadline (a WebSocket is pinged, an SSE stream
    /// or a held poll replaced by a fresh request) and replaced if dead.
    pub fn wake(&self) {
        self.core.inner.wake();
    }

    /// Closes the client without waiting (safe from inside a listener):
    /// what is queued for listeners is not delivered, each subscription
    /// ends with `on_end`. (Not `close`: generated Kotlin objects have a
    /// `close()` of their own, which frees them.)
    pub fn shutdown(&self) {
        self.core.begin_shutdown();
    }

    /// Closes the client and returns once it has stopped and every listener
    /// has had its last callback: no library thread calls into the host
    /// for this client after it returns. (From inside a listener, it does
    /// not wait for that listener's own thread.)
    pub async fn shutdown_and_wait(&self) {
        let core = self.core.clone();
        on_runtime(async move {
            core.closing.store(true, Ordering::Release);
            core.inner.close().await;
            let _ = tokio::task::spawn_blocking(move || core.join_threads(Duration::MAX)).await;
        })
        .await;
    }
}

/// A subscription's delivery thread: takes what the pump hands over and
/// calls the store and the listener, in order, until the end.
fn deliver(
    mut rx: mpsc::Receiver<Item>,
    listener: &dyn SubscriptionListener,
    store: Option<&Store>,
    channel: &str,
    cancelled: &AtomicBool,
    closing: &AtomicBool,
) {
    while let Some(item) = rx.blocking_recv() {
        let stopping = cancelled.load(Ordering::Acquire) || closing.load(Ordering::Acquire);
        let m = match item {
            Item::End => break,
            _ if stopping => continue,
            Item::Failed(e) => {
                report("subscription", listener.on_error(e.code().to_owned(), e.to_string()));
                continue;
            }
            Item::Message(m) => m,
        };
        // The cursor is saved before the listener sees the message, so a
        // crash in between resumes after it, not before.
        if let (Some(store), Some(cursor)) = (store, m.cursor())
            && let Err(e) = store.save(channel, cursor)
        {
            // The subscription ends before that event: dropping the queue
            // stops its pump, which ends the subscription.
            tracing::error!(target: "resub_ffi", channel, %e, "cannot save the cursor; the subscription ends");
            let code = resub::Error::Store(resub::StoreError::Io(e.clone())).code().to_owned();
            report("subscription", listener.on_error(code, format!("cannot save the cursor: {e}")));
            break;
        }
        let result = match m {
            Message::Event(e) => {
                let event = e.event_type().to_owned();
                listener.on_event(EventMessage { channel: e.channel.into(), id: e.id.into(), event, data: e.data })
            }
            Message::Resumed { channel, after } => listener.on_resumed(channel, after),
            Message::Reset { channel, reason, head } => listener.on_reset(channel, reason.to_string(), head),
            Message::Presence(p) => {
                let action = match p.action {
                    resub::PresenceAction::Join => "join",
                    resub::PresenceAction::Leave => "leave",
                };
                listener.on_presence(p.channel, action.to_owned(), p.member.client_id, p.member.data)
            }
            _ => Ok(()),
        };
        report("subscription", result);
    }
    report("subscription", listener.on_end());
}

#[cfg(test)]
mod tests;
