//! The driver loop: waits for the next of (application command, connection
//! event, core deadline), feeds the core, and carries out its outputs. It makes
//! no decision of its own; the platform pieces (spawning connection tasks,
//! sleeping) sit in `native/`.

pub(crate) mod native;
pub(crate) mod plain;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::{ConnId, Input, Output, PostError, Session, TransportError};
use crate::protocol::EventId;
use crate::{ConnectionState, Error, Instant, Message, Stats};
use native::{ConnHandle, ConnectOptions};

/// Capacity of the queue from connection tasks to the loop. When it is full,
/// connection tasks stop reading their sockets and TCP pushes back.
const EVENT_QUEUE: usize = 256;

/// What a connection task reports.
pub(crate) enum ConnEvent {
    Opened(ConnId),
    Received(ConnId, String),
    Activity(ConnId),
    Closed(ConnId, TransportError),
    Posted(String, Result<String, PostError>),
}

impl From<ConnEvent> for Input {
    fn from(ev: ConnEvent) -> Input {
        match ev {
            ConnEvent::Opened(conn) => Input::Opened { conn },
            ConnEvent::Received(conn, text) => Input::Received { conn, text },
            ConnEvent::Activity(conn) => Input::Activity { conn },
            ConnEvent::Posted(key, result) => Input::Posted { key, result },
            ConnEvent::Closed(conn, error) => Input::Closed { conn, error },
        }
    }
}

/// Where a subscription's messages go.
pub(crate) type SubSender = mpsc::Sender<Result<Message, Error>>;

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
    Close,
}

/// State the loop shares with `Client` handles.
pub(crate) struct Shared {
    pub state: Mutex<ConnectionState>,
    pub stats: Mutex<Stats>,
    pub states: broadcast::Sender<ConnectionState>,
}

/// Runs a session until it closes.
pub(crate) async fn run(
    mut session: Session,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    opts: ConnectOptions,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<ConnEvent>(EVENT_QUEUE);
    let mut conns: HashMap<ConnId, ConnHandle> = HashMap::new();
    let mut subs: HashMap<String, (u64, SubSender)> = HashMap::new();
    let mut publishes: HashMap<u64, oneshot::Sender<Result<String, Error>>> = HashMap::new();
    let mut next_token = 0u64;
    loop {
        while let Some(out) = session.poll_output() {
            match out {
                Output::Connect { conn, transport, url } => {
                    let handle = native::connect(conn, transport, url, opts.clone(), ev_tx.clone());
                    conns.insert(conn, handle);
                }
                Output::Post { key, url, data } => native::post(key, url, data, &opts, ev_tx.clone()),
                Output::Send { conn, text } => {
                    if let Some(c) = conns.get(&conn) {
                        c.send(text);
                    }
                }
                Output::Disconnect { conn } => {
                    if let Some(c) = conns.remove(&conn)
                        && session.is_closed()
                    {
                        c.close_gracefully();
                    }
                }
                Output::Deliver { channel, message } => {
                    // Waiting here when the application is slow stops the loop
                    // from reading, which stops the sockets from being read:
                    // back-pressure instead of an unbounded buffer.
                    let gone = match subs.get(&channel) {
                        Some((_, tx)) => tx.send(Ok(message)).await.is_err(),
                        None => false,
                    };
                    if gone {
                        subs.remove(&channel);
                        session.unsubscribe(&channel, Instant::now());
                    }
                }
                Output::SubscriptionEnded { channel, error } => {
                    if let Some((_, tx)) = subs.remove(&channel) {
                        let _ = tx.send(Err(error)).await;
                    }
                }
                Output::PublishDone { token, result } => {
                    if let Some(reply) = publishes.remove(&token) {
                        let _ = reply.send(result);
                    }
                }
                Output::State(state) => {
                    tracing::debug!(%state, "state");
                    *shared.state.lock().expect("state lock") = state.clone();
                    let _ = shared.states.send(state);
                }
            }
        }
        *shared.stats.lock().expect("stats lock") = session.stats();
        if session.is_closed() {
            break;
        }
        let deadline = session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                Some(Command::Subscribe { channel, from, id, tx, reply }) => {
                    let result = session.subscribe(&channel, from, Instant::now());
                    if result.is_ok() {
                        subs.insert(channel, (id, tx));
                    }
                    let _ = reply.send(result);
                }
                Some(Command::Unsubscribe { channel, id }) => {
                    if subs.get(&channel).is_some_and(|(sub_id, _)| *sub_id == id) {
                        subs.remove(&channel);
                        session.unsubscribe(&channel, Instant::now());
                    }
                }
                Some(Command::Publish { channel, event, data, reply }) => {
                    let token = next_token;
                    next_token += 1;
                    match session.publish(token, &channel, event, data) {
                        Ok(()) => {
                            publishes.insert(token, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Some(Command::Close) | None => session.close(),
            },
            Some(ev) = ev_rx.recv() => session.handle_input(ev.into(), Instant::now()),
            () = sleep => session.handle_timeout(Instant::now()),
        }
    }
    tracing::debug!("session closed");
}
