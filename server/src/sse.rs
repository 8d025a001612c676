//! The SSE transport: one registered connection per stream, whose outbound
//! queue is written as `text/event-stream`, with heartbeats, and which obeys
//! the fault switches (stall, abrupt drop).

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use resub::protocol::ServerFrame;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use crate::state::{Frame, Mode, Registered, Registration, encode};

/// The reconnection delay announced in the `retry:` line, in milliseconds.
pub(crate) const RETRY_MS: u64 = 1_000;

/// A chunk is cut after this many bytes when frames are queued faster than
/// they are written.
const MAX_CHUNK: usize = 64 * 1024;

/// The comment line that starts a heartbeat block.
const PING_COMMENT: &[u8] = b": ping\n";

/// One heartbeat block: the comment `: ping` and a `ping` frame event,
/// `: ping\ndata: {"type":"ping"}\n\n`. The frame makes the heartbeat
/// visible to a browser `EventSource`, which never exposes comments.
fn heartbeat_block() -> Bytes {
    let mut out = PING_COMMENT.to_vec();
    write_event(&encode(&ServerFrame::Ping), &mut out);
    out.into()
}

/// Writes one frame as an SSE event: an `id:` line for event frames, then the
/// frame's JSON on one `data:` line.
pub(crate) fn write_event(frame: &Frame, out: &mut Vec<u8>) {
    if let Some(id) = frame.event_id() {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(frame.json.as_str().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The state of one SSE stream, owned by the response body: when hyper drops
/// the body (the client went away), the registration goes with it.
struct Stream {
    registration: Registration,
    rx: mpsc::Receiver<Frame>,
    mode: watch::Receiver<Mode>,
    heartbeat: Duration,
    heartbeat_ms: u64,
    /// The heartbeat block, encoded once.
    ping: Bytes,
    next_ping: Option<Instant>,
    done: bool,
}

/// What woke a stream up.
enum Wake {
    Mode,
    Frame(Option<Frame>),
    Ping,
}

/// The body of an SSE response for a registered connection whose `subscribed`
/// frames and replays are already queued.
pub(crate) fn body(registered: Registered, heartbeat: Duration) -> Body {
    let heartbeat = heartbeat.max(Duration::from_millis(1));
    let Registered { registration, tx, rx, mode } = registered;
    // Only the registry keeps a sender, so the queue closes when the
    // connection is removed from it.
    drop(tx);
    let stream = Stream {
        registration,
        rx,
        mode,
        heartbeat,
        heartbeat_ms: u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX),
        ping: heartbeat_block(),
        next_ping: None,
        done: false,
    };
    Body::from_stream(futures::stream::unfold(stream, next_chunk))
}

/// The `error` frame telling a client to reconnect at once, elsewhere if it
/// can (PROTOCOL.md §6).
pub(crate) fn restarting() -> ServerFrame {
    crate::state::error_frame("restarting", None, None, "the server is shutting down")
}

fn dropped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection dropped by the fixture")
}

/// The next piece of the body: `Ok` bytes to write, or an `Err` that makes
/// hyper abort the connection without ending the chunked body.
async fn next_chunk(mut s: Stream) -> Option<(Result<Bytes, io::Error>, Stream)> {
    if s.done {
        return None;
    }
    let id = s.registration.id();
    loop {
        let mode = *s.mode.borrow_and_update();
        match mode {
            Mode::Normal => {}
            Mode::Restart => {
                // What is queued, then the word to reconnect, then the end of
                // the body.
                let mut out = Vec::new();
                while let Ok(frame) = s.rx.try_recv() {
                    write_event(&frame, &mut out);
                }
                write_event(&encode(&restarting()), &mut out);
                s.done = true;
                debug!(conn = id, "sse stream told to reconnect");
                return Some((Ok(out.into()), s));
            }
            Mode::Dropped => {
                debug!(conn = id, "sse stream dropped abruptly");
                s.done = true;
                return Some((Err(dropped()), s));
            }
            Mode::Stalled => {
                debug!(conn = id, "sse stream stalled");
                // Silent until dropped, or until hyper drops the body because
                // the client went away.
                if s.mode.wait_for(|m| *m == Mode::Dropped).await.is_err() {
                    s.done = true;
                    return Some((Err(dropped()), s));
                }
                continue;
            }
        }
        let Some(next_ping) = s.next_ping else {
            let welcome = encode(&ServerFrame::Welcome { heartbeat_ms: s.heartbeat_ms });
            let mut out = format!("retry: {RETRY_MS}\n").into_bytes();
            write_event(&welcome, &mut out);
            s.next_ping = Some(Instant::now() + s.heartbeat);
            return Some((Ok(out.into()), s));
        };
        let wake = tokio::select! {
            biased;
            changed = s.mode.changed() => {
                if changed.is_err() {
                    s.done = true;
                    return Some((Err(dropped()), s));
                }
                Wake::Mode
            }
            frame = s.rx.recv() => Wake::Frame(frame),
            () = sleep_until(next_ping) => Wake::Ping,
        };
        match wake {
            Wake::Mode => {}
            Wake::Frame(None) => {
                // Removed from the registry without being told: treat as a
                // drop.
                s.done = true;
                return Some((Err(dropped()), s));
            }
            Wake::Frame(Some(frame)) => {
                let mut out = Vec::new();
                write_event(&frame, &mut out);
                while out.len() < MAX_CHUNK && *s.mode.borrow() == Mode::Normal {
                    match s.rx.try_recv() {
                        Ok(frame) => write_event(&frame, &mut out),
                        Err(_) => break,
                    }
                }
                s.next_ping = Some(Instant::now() + s.heartbeat);
                return Some((Ok(out.into()), s));
            }
            Wake::Ping => {
                s.next_ping = Some(Instant::now() + s.heartbeat);
                let ping = s.ping.clone();
                return Some((Ok(ping), s));
            }
        }
    }
}
