//! One WebSocket connection: a task that writes the connection's queue in
//! order, sends heartbeats, handles client frames (answering a client `ping`
//! at once), and obeys the fault switches (stall, abrupt drop).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use resub::protocol::{ClientFrame, ServerFrame, validate_channel};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};

use crate::MAX_PAYLOAD;
use crate::state::{ClientInfo, Frame, Mode, Registered, Shared, Transport, bad_request, encode, error_frame};

/// Serves an upgraded connection until the client leaves or the fixture
/// drops it. Returning drops the socket; no close frame is sent unless the
/// client started the closing handshake.
pub(crate) async fn run(shared: Arc<Shared>, ws: WebSocket, client: Option<ClientInfo>) {
    let capacity = shared.cfg.max_connection_queue;
    let Some(Registered { registration, tx, rx, mode: mode_rx }) =
        shared.register(Transport::WebSocket, capacity, client)
    else {
        debug!("connection refused: shutting down");
        return;
    };
    let id = registration.id();
    debug!(conn = id, "connection open");
    let dropped = until_dropped(mode_rx.clone());
    tokio::select! {
        biased;
        () = dropped => debug!(conn = id, "connection dropped abruptly"),
        () = serve(&shared, id, ws, tx, rx, mode_rx) => debug!(conn = id, "connection closed"),
    }
}

/// Completes when the connection is told to drop (or its registration is
/// gone).
async fn until_dropped(mut mode: watch::Receiver<Mode>) {
    let _gone = mode.wait_for(|m| *m == Mode::Dropped).await.is_ok();
}

async fn serve(
    shared: &Shared,
    id: u64,
    mut ws: WebSocket,
    tx: mpsc::Sender<Frame>,
    mut rx: mpsc::Receiver<Frame>,
    mut mode: watch::Receiver<Mode>,
) {
    let heartbeat = shared.cfg.heartbeat.max(Duration::from_millis(1));
    let heartbeat_ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
    let welcome = encode(&ServerFrame::Welcome { heartbeat_ms });
    if ws.send(Message::Text(welcome.json)).await.is_err() {
        return;
    }
    let ping = encode(&ServerFrame::Ping).json;
    let mut next_ping = Instant::now() + heartbeat;
    loop {
        if *mode.borrow_and_update() != Mode::Normal {
            break;
        }
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                if ws.send(Message::Text(frame.json)).await.is_err() {
                    return;
                }
                next_ping = Instant::now() + heartbeat;
            }
            msg = ws.recv() => match msg {
                Some(Ok(msg)) => {
                    if !handle(shared, id, &tx, msg).await {
                        return;
                    }
                }
                Some(Err(err)) => {
                    debug!(conn = id, %err, "read failed");
                    return;
                }
                None => return,
            },
            () = sleep_until(next_ping) => {
                if ws.send(Message::Text(ping.clone())).await.is_err() {
                    return;
                }
                next_ping = Instant::now() + heartbeat;
            }
        }
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
async fn handle(shared: &Shared, id: u64, tx: &mpsc::Sender<Frame>, msg: Message) -> bool {
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
            if data.len() > MAX_PAYLOAD {
                let frame = error_frame(
                    "too_large",
                    Some(&channel),
                    Some(&key),
                    format!("data is {} bytes; the limit is {MAX_PAYLOAD}", data.len()),
                );
                return reply(id, tx, &frame);
            }
            let frame = match shared.publish(&channel, Some(&key), event.as_deref(), &data).await {
                Ok(_) if shared.take_drop_ack() => {
                    debug!(conn = id, %key, "publish applied; its ack is lost with the connection");
                    return false;
                }
                Ok(event_id) => ServerFrame::Ack { key, id: event_id },
                Err(err @ crate::FixtureError::Redis(_)) => {
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
