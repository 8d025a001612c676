//! One WebSocket connection: a task that writes the connection's queue in
//! order, sends heartbeats, handles client frames (answering a client `ping`
//! at once), and obeys the fault switches (stall, abrupt drop).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use resub::protocol::{ClientFrame, ServerFrame, validate_channel};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use crate::auth::Identity;
use crate::state::{
    ClientInfo, Frame, Mode, NotRegistered, Registered, Shared, Transport, bad_request, encode, error_frame,
};

/// The close code for a message over the size limit (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

/// Whether a read failed because the message was over the size limit.
fn too_big(err: &axum::Error) -> bool {
    use std::error::Error as _;
    err.source()
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

/// The most queued frames written at once (one flush).
const WRITE_BATCH: usize = 64;

/// The close code telling a client to reconnect at once, elsewhere if it
/// can: the server is going away (PROTOCOL.md §6).
pub(crate) const CLOSE_RESTART: u16 = 1012;

/// Serves an upgraded connection until the client leaves or the fixture
/// drops it. Returning drops the socket; no close frame is sent unless the
/// client started the closing handshake.
pub(crate) async fn run(shared: Arc<Shared>, mut ws: WebSocket, client: Option<ClientInfo>, identity: Arc<Identity>) {
    let capacity = shared.cfg.max_connection_queue;
    let registered = shared.register(Transport::WebSocket, capacity, client, Arc::clone(&identity));
    let Registered { registration, tx, rx, mode: mode_rx } = match registered {
        Ok(registered) => registered,
        Err(refused) => {
            // Upgraded already: the refusal is a close code.
            let (code, reason) = match refused {
                NotRegistered::Closing => (CLOSE_RESTART, "the server is shutting down"),
                NotRegistered::TooMany => (4503, "1"),
            };
            debug!(code, "connection refused");
            let _ = ws.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
            return;
        }
    };
    let id = registration.id();
    debug!(conn = id, "connection open");
    let dropped = until_dropped(mode_rx.clone());
    let conn =
        Connection { shared: &shared, id, tx, identity, bucket: PublishBucket::new(shared.cfg.limits.publish_rate) };
    tokio::select! {
        biased;
        () = dropped => debug!(conn = id, "connection dropped abruptly"),
        () = serve(conn, ws, rx, mode_rx) => debug!(conn = id, "connection closed"),
    }
}

/// What a connection's handler works with.
struct Connection<'a> {
    shared: &'a Shared,
    id: u64,
    /// A sender of the outbound queue, for replies.
    tx: mpsc::Sender<Frame>,
    identity: Arc<Identity>,
    bucket: PublishBucket,
}

/// A token bucket bounding a connection's publishes per second, with bursts
/// of as many.
struct PublishBucket {
    /// Publishes per second; 0: unlimited.
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl PublishBucket {
    fn new(rate: u32) -> Self {
        Self { rate, tokens: f64::from(rate), at: Instant::now() }
    }

    /// Takes a token; false when none is left.
    fn take(&mut self) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let rate = f64::from(self.rate);
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Completes when the connection is told to drop (or its registration is
/// gone).
async fn until_dropped(mut mode: watch::Receiver<Mode>) {
    let _gone = mode.wait_for(|m| *m == Mode::Dropped).await.is_ok();
}

async fn serve(
    mut conn: Connection<'_>,
    mut ws: WebSocket,
    mut rx: mpsc::Receiver<Frame>,
    mode: watch::Receiver<Mode>,
) {
    let (shared, id) = (conn.shared, conn.id);
    let heartbeat = shared.cfg.heartbeat.max(Duration::from_millis(1));
    let heartbeat_ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
    let welcome = encode(&ServerFrame::Welcome { heartbeat_ms });
    if ws.send(Message::Text(welcome.json)).await.is_err() {
        return;
    }
    let ping = encode(&ServerFrame::Ping).json;
    // A ping is due a heartbeat after the last frame sent. The timer is reset
    // lazily, when it fires early, not on every frame.
    let mut next_ping = Instant::now() + heartbeat;
    let timer = sleep_until(next_ping);
    tokio::pin!(timer);
    // Modes never return to normal: one future, polled across the loop,
    // rather than a new registration with the watch on every frame.
    let mut watched = mode.clone();
    let leaving = async move { watched.wait_for(|m| *m != Mode::Normal).await.is_ok() };
    tokio::pin!(leaving);
    loop {
        tokio::select! {
            biased;
            told = &mut leaving => {
                if !told {
                    return;
                }
                break;
            }
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                // Whatever else is queued goes in the same write: under
                // fan-out a connection is often several frames behind.
                if ws.feed(Message::Text(frame.json)).await.is_err() {
                    return;
                }
                for _ in 1..WRITE_BATCH {
                    let Ok(frame) = rx.try_recv() else { break };
                    if ws.feed(Message::Text(frame.json)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
                next_ping = Instant::now() + heartbeat;
            }
            msg = ws.recv() => match msg {
                Some(Ok(msg)) => {
                    if !handle(&mut conn, msg).await {
                        return;
                    }
                }
                Some(Err(err)) => {
                    debug!(conn = id, %err, "read failed");
                    if too_big(&err) {
                        // Told, so the client does not just retry the same.
                        let close = CloseFrame { code: CLOSE_TOO_BIG, reason: "message too big".into() };
                        let _ = ws.send(Message::Close(Some(close))).await;
                    }
                    return;
                }
                None => return,
            },
            () = &mut timer => {
                if Instant::now() >= next_ping {
                    if ws.send(Message::Text(ping.clone())).await.is_err() {
                        return;
                    }
                    next_ping = Instant::now() + heartbeat;
                }
                timer.as_mut().reset(next_ping);
            }
        }
    }
    if *mode.borrow() == Mode::Restart {
        // What is queued goes first: fewer events to replay on the next node.
        while let Ok(frame) = rx.try_recv() {
            if ws.send(Message::Text(frame.json)).await.is_err() {
                return;
            }
        }
        let close = CloseFrame { code: CLOSE_RESTART, reason: "the server is shutting down".into() };
        let _ = ws.send(Message::Close(Some(close))).await;
        debug!(conn = id, "told to reconnect");
        return;
    }
    debug!(conn = id, "connection stalled");
    // Silent until the client goes away: read and discard. The queue is kept
    // (not drained) so nothing queued is ever written.
    while let Some(Ok(_)) = ws.recv().await {}
    drop(rx);
}

/// Queues a reply; false when the queue is full (the connection is then
/// dropped).
fn reply(id: u64, tx: &mpsc::Sender<Frame>, frame: &ServerFrame) -> bool {
    let ok = tx.try_send(encode(frame)).is_ok();
    if !ok {
        warn!(conn = id, "outbound queue full; connection dropped");
    }
    ok
}

/// Handles one client message; false when the connection must end.
async fn handle(conn: &mut Connection<'_>, msg: Message) -> bool {
    let (shared, id, tx) = (conn.shared, conn.id, &conn.tx);
    let text = match msg {
        Message::Text(text) => text,
        Message::Binary(_) => {
            let frame = bad_request(None, None, "binary messages are not supported; send JSON text");
            return reply(id, tx, &frame);
        }
        // Pings are answered by the WebSocket layer; a close is answered there
        // too and ends the stream on the next read.
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return true,
    };
    if is_ping(text.as_str()) {
        return reply(id, tx, &ServerFrame::Ping);
    }
    let frame = match serde_json::from_str::<ClientFrame>(text.as_str()) {
        Ok(frame) => frame,
        Err(err) => {
            // PROTOCOL.md §3: the error names the frame's channel and key
            // when it had them, so that only that subscription or publish fails.
            let raw = serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap_or_default();
            let field = |name| raw.get(name).and_then(serde_json::Value::as_str);
            let frame = bad_request(field("channel"), field("key"), format!("invalid client frame: {err}"));
            return reply(id, tx, &frame);
        }
    };
    match frame {
        ClientFrame::Subscribe { channel, cursor } => {
            if let Err(err) = shared.sync_channel(&channel).await {
                // Without the channel's state the outcome cannot be decided:
                // the client resumes later, maybe on another node.
                warn!(conn = id, %err, "cannot subscribe; closing");
                return false;
            }
            shared.subscribe(id, &channel, cursor.as_deref());
            true
        }
        ClientFrame::Unsubscribe { channel } => {
            if validate_channel(&channel).is_err() {
                let frame = bad_request(Some(&channel), None, format!("invalid channel name {channel:?}"));
                return reply(id, tx, &frame);
            }
            shared.unsubscribe(id, &channel);
            true
        }
        ClientFrame::Publish { channel, key, event, data } => {
            let limit = shared.cfg.limits.max_payload;
            let refusal = if data.len() > limit {
                Some(("too_large", format!("data is {} bytes; the limit is {limit}", data.len())))
            } else if !conn.identity.publish.allows(&channel) {
                Some(("forbidden", "this token may not publish to the channel".to_owned()))
            } else if !conn.bucket.take() {
                let rate = shared.cfg.limits.publish_rate;
                Some(("rate_limited", format!("a connection may publish {rate} events per second")))
            } else {
                None
            };
            if let Some((code, message)) = refusal {
                shared.count_refusal(code);
                return reply(id, tx, &error_frame(code, Some(&channel), Some(&key), message));
            }
            let frame = match shared.publish(&channel, Some(&key), event.as_deref(), &data).await {
                Ok(_) if shared.take_drop_ack() => {
                    debug!(conn = id, %key, "publish applied; its ack is lost with the connection");
                    return false;
                }
                Ok(event_id) => ServerFrame::Ack { key, id: event_id },
                Err(err @ crate::ServerError::Storage(_)) => {
                    error_frame("unavailable", Some(&channel), Some(&key), err.to_string())
                }
                Err(err) => bad_request(Some(&channel), Some(&key), err.to_string()),
            };
            reply(id, tx, &frame)
        }
        _ => reply(id, tx, &bad_request(None, None, "unsupported client frame")),
    }
}

/// Whether a client message is a `ping` frame: a JSON object whose `type` is
/// `"ping"` (other fields are ignored). Checked before decoding a
/// [`ClientFrame`], so the answer does not depend on the protocol crate
/// knowing the frame.
fn is_ping(text: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map.get("type").and_then(serde_json::Value::as_str) == Some("ping"),
        _ => false,
    }
}
