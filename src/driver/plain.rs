//! The driver loop for plain SSE streams: feeds a [`PlainSession`] and
//! carries out its outputs.

use std::collections::HashMap;
use std::sync::Arc;

use futures::channel::mpsc as fmpsc;
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::StateHub;
use super::native::{self, ConnectOptions};
use crate::core::ConnId;
use crate::core::plain::{PlainEvent, PlainInput, PlainOutput, PlainSession};
use crate::protocol::sse::SseRef;
use crate::{ConnectionState, Error, Instant};

/// Every item of a plain event stream, owned, for the session.
struct PlainSink(ConnId);

impl native::SseSink for PlainSink {
    type Out = PlainInput;

    fn item(&mut self, item: SseRef<'_>, out: &mut Vec<PlainInput>) {
        out.push(PlainInput::Item { conn: self.0, item: item.to_item() });
    }
}

/// Runs a plain SSE session until it stops, the handle is dropped, or
/// `close` fires.
pub(crate) async fn run(
    mut session: PlainSession,
    tx: mpsc::Sender<Result<PlainEvent, Error>>,
    mut close: oneshot::Receiver<()>,
    shared: Arc<StateHub>,
    opts: ConnectOptions,
) {
    let (ev_tx, mut ev_rx) = fmpsc::channel::<PlainInput>(super::EVENT_QUEUE);
    let mut conns: HashMap<ConnId, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        while let Some(out) = session.poll_output() {
            match out {
                PlainOutput::Connect { conn, url, last_event_id } => {
                    let opts = opts.clone();
                    let mut events = ev_tx.clone();
                    let task = tokio::spawn(async move {
                        let opened = PlainInput::Opened { conn };
                        let sink = PlainSink(conn);
                        let error =
                            native::read_sse(&url, last_event_id.as_deref(), &opts, false, &mut events, opened, sink)
                                .await;
                        let _ = events.send(PlainInput::Closed { conn, error }).await;
                    });
                    conns.insert(conn, task);
                }
                PlainOutput::Disconnect { conn } => {
                    if let Some(task) = conns.remove(&conn) {
                        task.abort();
                    }
                }
                PlainOutput::Deliver(ev) => {
                    if tx.send(Ok(ev)).await.is_err() {
                        session.close(); // The application dropped the stream.
                    }
                }
                PlainOutput::State(state) => {
                    if let ConnectionState::Closed { error: Some(e) } = &state {
                        let _ = tx.send(Err(e.clone())).await;
                    }
                    shared.publish(state);
                }
            }
        }
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
            _ = &mut close => session.close(),
            Some(input) = ev_rx.next() => session.handle_input(input, Instant::now()),
            () = sleep => session.handle_timeout(Instant::now()),
        }
    }
    for (_, task) in conns {
        task.abort();
    }
}
