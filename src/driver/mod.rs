//! The driver loop: waits for the next of (application command, connection
//! event, core deadline), feeds the core, and carries out its outputs. On
//! native targets it also runs the connections themselves (reading, decoding,
//! writing), so that a frame reaches the session on the thread that read it.
//! It is
//! written once over `futures` and makes no decision of its own; what differs
//! per platform (spawning, sleeping, opening connections) sits behind
//! `platform`, which is `native/` (tokio) or `wasm/` (the browser).

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod plain;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native as platform;
#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm as platform;

use std::sync::{Arc, Mutex};

use futures::channel::{mpsc, oneshot};
use futures::future::Fuse;
use futures::{FutureExt, SinkExt, StreamExt};

use crate::core::{ChannelMap, ConnId, Input, Output, PostError, Session, TransportError};
use crate::protocol::EventId;
use crate::{ConnectionState, Error, Instant, Message, Stats};
use platform::{ConnHandle, ConnectOptions, Conns};

/// Capacity of the queue from connection tasks to the loop, in events of up
/// to 64 frames (a long-poll answer: up to its batch). When it is full,
/// connection tasks stop reading their sockets and TCP pushes back.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) const EVENT_QUEUE: usize = 16;

/// Most connection events the loop takes in one turn before it delivers what
/// they produced.
const READY_BUDGET: usize = 64;

/// Capacity of a state listener's queue; a listener further behind skips.
const STATE_QUEUE: usize = 256;

/// What a connection task reports.
#[derive(Debug)]
pub(crate) enum ConnEvent {
    Opened(ConnId),
    #[cfg_attr(any(target_arch = "wasm32", feature = "json-decode"), allow(dead_code))]
    Received(ConnId, String),
    /// Frames the connection decoded itself, from messages of at most this
    /// many bytes each.
    Frames(ConnId, Result<Vec<crate::protocol::ServerFrame>, String>, usize),
    /// Bytes with no frame (SSE comments); a browser never sees those.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    Activity(ConnId),
    Closed(ConnId, TransportError),
    Posted(String, Result<String, PostError>),
    /// A browser signal (online, offline, page visible).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    Signal(Input),
}

impl ConnEvent {
    /// Hands the event to the session. A connection that reports its end
    /// has its handle dropped here: its task is over, and a connection that
    /// ends by itself (every long poll, every drop by the server) is not
    /// told to disconnect by the session.
    fn apply(self, session: &mut Session, conns: &mut Vec<(ConnId, ConnHandle)>, now: Instant) {
        if let ConnEvent::Closed(conn, _) = &self {
            conns.retain(|(id, _)| id != conn);
        }
        let input = match self {
            ConnEvent::Opened(conn) => Input::Opened { conn },
            ConnEvent::Received(conn, text) => Input::Received { conn, text },
            ConnEvent::Frames(conn, frames, bytes) => Input::Frames { conn, frames, bytes },
            ConnEvent::Activity(conn) => Input::Activity { conn },
            ConnEvent::Closed(conn, error) => Input::Closed { conn, error },
            ConnEvent::Posted(key, result) => Input::Posted { key, result },
            ConnEvent::Signal(input) => input,
        };
        session.handle_input(input, now);
    }
}

/// Where connection tasks report to, and the application's commands go: on
/// native targets `futures` channels (bounded for events, so that a slow
/// loop slows the sockets down), in the browser a plain queue.
#[cfg(not(target_arch = "wasm32"))]
mod queues {
    use futures::channel::mpsc;

    pub(crate) type EventSender = mpsc::Sender<super::ConnEvent>;
    pub(crate) type EventReceiver = mpsc::Receiver<super::ConnEvent>;
    pub(crate) type CommandSender = mpsc::UnboundedSender<super::Command>;
    pub(crate) type CommandReceiver = mpsc::UnboundedReceiver<super::Command>;

    pub(crate) fn event_queue() -> (EventSender, EventReceiver) {
        mpsc::channel(super::EVENT_QUEUE)
    }

    pub(crate) fn command_queue() -> (CommandSender, CommandReceiver) {
        mpsc::unbounded()
    }
}
#[cfg(target_arch = "wasm32")]
mod queues {
    use super::wasm::queue;

    pub(crate) type EventSender = queue::Sender<super::ConnEvent>;
    pub(crate) type EventReceiver = queue::Receiver<super::ConnEvent>;
    pub(crate) type CommandSender = queue::Sender<super::Command>;
    pub(crate) type CommandReceiver = queue::Receiver<super::Command>;

    pub(crate) fn event_queue() -> (EventSender, EventReceiver) {
        queue::unbounded()
    }

    pub(crate) fn command_queue() -> (CommandSender, CommandReceiver) {
        queue::unbounded()
    }
}
pub(crate) use queues::{CommandSender, EventSender, command_queue};

/// Where a subscription's messages go, in batches: one wake-up of the
/// application per batch rather than per message.
pub(crate) type SubSender = mpsc::Sender<Vec<Result<Message, Error>>>;

/// Most messages in one batch to a subscription.
pub(crate) const SUB_BATCH: usize = 64;

/// A subscription as the loop keeps it.
struct SubEntry {
    id: u64,
    tx: SubSender,
    /// Messages produced in this turn of the loop, not yet sent.
    batch: Vec<Result<Message, Error>>,
    /// The subscription ended: remove it once its batch is sent.
    ending: bool,
}

/// Sends `channel`'s pending batch. Waiting here when the application is
/// slow stops the loop from reading, which stops the sockets from being
/// read: back-pressure instead of an unbounded buffer. A close requested
/// meanwhile ends the wait (the batch is dropped with the subscription).
async fn flush(subs: &mut ChannelMap<SubEntry>, channel: &str, session: &mut Session, closing: &CloseSignal) {
    let Some(entry) = subs.get_mut(channel) else { return };
    if entry.batch.is_empty() {
        return;
    }
    // The next message reserves a whole batch again: an idle subscription
    // holds none.
    let batch = std::mem::take(&mut entry.batch);
    let mut send = entry.tx.send(batch);
    let sent = futures::future::poll_fn(|cx| {
        if closing.poll_requested(cx) {
            return std::task::Poll::Ready(None);
        }
        send.poll_unpin(cx).map(Some)
    })
    .await;
    let Some(sent) = sent else { return };
    let gone = sent.is_err();
    if entry.ending {
        subs.remove(channel);
    } else if gone {
        subs.remove(channel);
        session.unsubscribe(channel, Instant::now());
    }
}

/// What the application asks of the loop.
pub(crate) enum Command {
    Subscribe {
        channel: String,
        from: Option<EventId>,
        id: u64,
        tx: SubSender,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Unsubscribe {
        channel: String,
        id: u64,
    },
    Publish {
        channel: String,
        event: Option<String>,
        data: String,
        reply: oneshot::Sender<Result<String, Error>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
    /// A host signal (network up or down, app back in the foreground).
    Signal(Input),
}

/// The connection state, and the listeners that want its changes.
pub(crate) struct StateHub {
    current: Mutex<ConnectionState>,
    listeners: Mutex<Vec<mpsc::Sender<ConnectionState>>>,
}

impl StateHub {
    pub(crate) fn new(initial: ConnectionState) -> Self {
        Self { current: Mutex::new(initial), listeners: Mutex::new(Vec::new()) }
    }

    pub(crate) fn current(&self) -> ConnectionState {
        self.current.lock().expect("state lock").clone()
    }

    /// A new listener; its stream ends after `Closed` (at once if closed already).
    pub(crate) fn listen(&self) -> mpsc::Receiver<ConnectionState> {
        let (tx, rx) = mpsc::channel(STATE_QUEUE);
        let current = self.current.lock().expect("state lock");
        if !matches!(*current, ConnectionState::Closed { .. }) {
            self.listeners.lock().expect("listeners lock").push(tx);
        }
        rx
    }

    pub(crate) fn publish(&self, state: ConnectionState) {
        let closed = matches!(state, ConnectionState::Closed { .. });
        *self.current.lock().expect("state lock") = state.clone();
        let mut listeners = self.listeners.lock().expect("listeners lock");
        // A full listener misses this change; a dropped one is forgotten.
        listeners.retain_mut(|l| match l.try_send(state.clone()) {
            Ok(()) => true,
            Err(e) => !e.is_disconnected(),
        });
        if closed {
            listeners.clear();
        }
    }
}

/// State the loop shares with `Client` handles.
pub(crate) struct Shared {
    pub states: StateHub,
    pub stats: Mutex<Stats>,
    /// Publishes handed to the loop and not settled yet, queued as commands
    /// or waiting in the session's outbox.
    pub outbox: Outbox,
    /// Set by `Client::close`: reaches the loop even while it waits for a
    /// subscription that is not being read.
    pub closing: CloseSignal,
    /// Connection handles the loop holds, as of its last turn.
    pub held_connections: std::sync::atomic::AtomicUsize,
}

/// The publishes of a client not settled yet, bounded in count and bytes
/// from the moment `publish` is called: a loop waiting for a slow
/// subscription takes no command, and the publishes made meanwhile must not
/// pile up in its queue.
pub(crate) struct Outbox {
    /// Publishes and their bytes (data and event types).
    held: Mutex<(usize, usize)>,
    max: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max: usize, max_bytes: usize) -> Self {
        Self { held: Mutex::new((0, 0)), max, max_bytes }
    }

    /// Makes room for a publish of `bytes`, or says the outbox is full.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<(), Error> {
        let mut held = self.held.lock().expect("outbox lock");
        let (waiting, queued) = *held;
        if waiting >= self.max || queued.saturating_add(bytes) > self.max_bytes {
            return Err(Error::PublishQueueFull { waiting, bytes: queued });
        }
        *held = (waiting + 1, queued + bytes);
        Ok(())
    }

    /// A publish of `bytes` settled (or never reached the session).
    pub(crate) fn release(&self, bytes: usize) {
        let mut held = self.held.lock().expect("outbox lock");
        held.0 = held.0.saturating_sub(1);
        held.1 = held.1.saturating_sub(bytes);
    }
}

/// A one-way "close now" flag with a waker.
#[derive(Default)]
pub(crate) struct CloseSignal {
    flag: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

impl CloseSignal {
    pub(crate) fn request(&self) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.waker.wake();
    }

    /// Whether a close was requested; if not, `cx` is woken when one is.
    fn poll_requested(&self, cx: &mut std::task::Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// A publish waiting for its result: its token, where the result goes, and
/// the bytes it holds in the shared outbox.
type PendingReply = (u64, oneshot::Sender<Result<String, Error>>, usize);

/// Runs a session until it closes.
pub(crate) async fn run(
    mut session: Session,
    mut commands: queues::CommandReceiver,
    shared: Arc<Shared>,
    opts: ConnectOptions,
) {
    #[cfg(target_arch = "wasm32")]
    let mut opts = opts;
    let (ev_tx, mut ev_rx) = queues::event_queue();
    let _signals = platform::watch_signals(ev_tx.clone());
    // A connection or two (a probe beside the working one), and a bounded
    // number of publishes: small lists, less code than maps in the browser build.
    let mut conns: Vec<(ConnId, ConnHandle)> = Vec::new();
    // What the connections do, run by this loop (natively; the browser
    // runs its own callbacks).
    let mut running = Conns::default();
    let mut subs: ChannelMap<SubEntry> = ChannelMap::default();
    // Channels with a batch to send at the end of this turn.
    let mut dirty: Vec<String> = Vec::new();
    let mut publishes: Vec<PendingReply> = Vec::new();
    let mut closers: Vec<oneshot::Sender<()>> = Vec::new();
    let mut next_token = 0u64;
    let mut sleep = Box::pin(platform::sleep_until(Instant::now()).fuse());
    sleep.set(Fuse::terminated());
    let mut armed: Option<Instant> = None;
    loop {
        while let Some(out) = session.poll_output() {
            match out {
                Output::Connect { conn, transport, url } => {
                    let mut handle = platform::connect(conn, transport, url, &opts, ev_tx.clone());
                    running.run(&mut handle);
                    conns.push((conn, handle));
                }
                Output::Post { key, url, data } => platform::post(key, url, data, &opts, ev_tx.clone()),
                Output::Send { conn, text } => {
                    if let Some(i) = conns.iter().position(|(id, _)| *id == conn)
                        && !conns[i].1.send(text)
                    {
                        // The peer has stopped reading what is sent: the
                        // connection is cut (its handle dropped) and reported
                        // lost.
                        conns.swap_remove(i);
                        let why = "send queue full: the server is not reading".into();
                        tracing::warn!(conn = conn.0, "{why}");
                        session.handle_input(Input::Closed { conn, error: TransportError::Lost(why) }, Instant::now());
                    }
                }
                Output::Disconnect { conn } => {
                    if let Some(i) = conns.iter().position(|(id, _)| *id == conn) {
                        // Dropping a handle cuts the connection; a closing
                        // session lets it say goodbye.
                        let (_, c) = conns.swap_remove(i);
                        if session.is_closed() {
                            c.close_gracefully();
                        }
                    }
                }
                Output::Deliver { message } => {
                    if let Some(entry) = subs.get_mut(message.channel()) {
                        if entry.batch.capacity() == 0 {
                            entry.batch.reserve_exact(SUB_BATCH);
                        }
                        if entry.batch.is_empty() {
                            dirty.push(message.channel().to_owned());
                        }
                        let full = (entry.batch.len() + 1 >= SUB_BATCH).then(|| message.channel().to_owned());
                        entry.batch.push(Ok(message));
                        if let Some(channel) = full {
                            flush(&mut subs, &channel, &mut session, &shared.closing).await;
                        }
                    }
                }
                Output::SubscriptionEnded { channel, error } => {
                    if let Some(entry) = subs.get_mut(&channel) {
                        entry.batch.push(Err(error));
                        entry.ending = true;
                        if entry.batch.len() == 1 {
                            dirty.push(channel);
                        }
                    }
                }
                Output::PublishDone { token, result } => {
                    if let Some(i) = publishes.iter().position(|(t, ..)| *t == token) {
                        let (_, reply, bytes) = publishes.swap_remove(i);
                        shared.outbox.release(bytes);
                        let _ = reply.send(result);
                    }
                }
                Output::State(state) => {
                    tracing::debug!(%state, "state");
                    shared.states.publish(state);
                }
            }
        }
        for channel in std::mem::take(&mut dirty) {
            flush(&mut subs, &channel, &mut session, &shared.closing).await;
        }
        *shared.stats.lock().expect("stats lock") = session.stats();
        shared.held_connections.store(conns.len(), std::sync::atomic::Ordering::Relaxed);
        if session.is_closed() {
            break;
        }
        // The timer is armed lazily: a deadline that moved later (the
        // heartbeat deadline does on every frame) keeps the armed timer,
        // which then fires early and finds nothing due; only an earlier
        // deadline re-arms it. Re-arming a timer per frame costs more than
        // the frame.
        match (session.poll_timeout(), armed) {
            (Some(d), Some(at)) if d >= at => {}
            (Some(d), _) => {
                sleep.set(platform::sleep_until(d).fuse());
                armed = Some(d);
            }
            (None, _) => {}
        }
        futures::select_biased! {
            // First the sockets: what they have read is queued as events,
            // which the branch after takes in the same turn.
            () = futures::future::poll_fn(|cx| running.poll_drive(cx)).fuse() => {}
            cmd = commands.next() => match cmd {
                Some(Command::Subscribe { channel, from, id, tx, reply }) => {
                    let result = session.subscribe(&channel, from, Instant::now());
                    if result.is_ok() {
                        subs.insert(channel, SubEntry { id, tx, batch: Vec::new(), ending: false });
                    }
                    let _ = reply.send(result);
                }
                Some(Command::Unsubscribe { channel, id }) => {
                    if subs.get(&channel).is_some_and(|entry| entry.id == id) {
                        subs.remove(&channel);
                        session.unsubscribe(&channel, Instant::now());
                    }
                }
                Some(Command::Publish { channel, event, data, reply }) => {
                    let token = next_token;
                    next_token += 1;
                    let bytes = data.len() + event.as_ref().map_or(0, String::len);
                    match session.publish(token, &channel, event, data) {
                        Ok(()) => {
                            publishes.push((token, reply, bytes));
                        }
                        Err(e) => {
                            shared.outbox.release(bytes);
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Some(Command::Signal(input)) => {
                    // A fresh token goes on fetch requests too.
                    #[cfg(target_arch = "wasm32")]
                    if let Input::Token(Some(token)) = &input {
                        opts.set_token(token);
                    }
                    session.handle_input(input, Instant::now())
                }
                Some(Command::Close { done }) => {
                    closers.push(done);
                    session.close();
                }
                None => session.close(),
            },
            ev = ev_rx.next() => {
                if let Some(ev) = ev {
                    let now = Instant::now();
                    ev.apply(&mut session, &mut conns, now);
                    // Take what else is ready in one go: one wake-up of the
                    // loop per burst instead of one per event. The budget
                    // bounds the outputs this queues.
                    for _ in 1..READY_BUDGET {
                        match ev_rx.next().now_or_never() {
                            Some(Some(ev)) => ev.apply(&mut session, &mut conns, now),
                            _ => break,
                        }
                    }
                }
            }
            () = sleep => {
                armed = None;
                session.handle_timeout(Instant::now());
            }
        }
    }
    tracing::debug!("session closed");
    running.detach();
    drop(subs);
    for done in closers {
        let _ = done.send(());
    }
}
