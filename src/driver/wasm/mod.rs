//! Browser I/O: `WebSocket`, `EventSource` and `fetch` from web-sys, timers
//! from `setTimeout`, and the page's network and visibility signals.
//!
//! The browser's own reconnect logic is kept out of the way: an
//! `EventSource` is closed on its first error, so that the core decides when
//! and where to reconnect, with its cursors in the URL.

pub(crate) mod queue;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use js_sys::Promise;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, BinaryType, CloseEvent, EventSource, MessageEvent, Request, RequestInit, Response, WebSocket,
};

use super::{ConnEvent, EventSender};
use crate::core::{ConnId, Input, PostError, Transport, TransportError};
use crate::protocol::{FIELD_NAMES, FrameKind, Outcome, RawServerFrame, ServerFrame, WireResetReason};
use crate::{Error, Instant};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_request(request: &Request) -> Promise;
    /// `JSON.parse` of a JavaScript string as it is, without a copy into
    /// wasm memory and back.
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn parse_json(text: &JsValue) -> Result<JsValue, JsValue>;
}

/// What a connection needs besides its URL.
#[derive(Clone, Debug)]
pub(crate) struct ConnectOptions {
    headers: Vec<(String, String)>,
    /// The largest poll answer read (the frame limit times
    /// [`POLL_BATCH_FACTOR`](crate::core::POLL_BATCH_FACTOR)).
    poll_limit: usize,
    /// Most bytes a WebSocket may hold buffered for sending.
    send_queue_bytes: usize,
    /// `Bearer <token>` from the application's newest token, in place of
    /// any fixed one.
    bearer: Option<String>,
}

impl ConnectOptions {
    /// Headers go on `fetch` requests; a browser cannot add headers to a
    /// WebSocket or an EventSource, and it trusts its own roots.
    pub(crate) fn new(
        headers: &[(String, String)],
        _roots: &[Vec<u8>],
        max_frame_bytes: usize,
        send_queue_bytes: usize,
    ) -> Result<Self, Error> {
        let poll_limit = max_frame_bytes.saturating_mul(crate::core::POLL_BATCH_FACTOR);
        Ok(Self { headers: headers.to_vec(), poll_limit, send_queue_bytes, bearer: None })
    }

    /// Sends `token` as `Authorization: Bearer` on `fetch` requests from now
    /// on, in place of the one before.
    pub(crate) fn set_token(&mut self, token: &str) {
        let mut value = String::from("Bearer ");
        value.push_str(token);
        self.bearer = Some(value);
    }
}

/// Runs `fut` on the page's event loop.
pub(crate) fn spawn(fut: impl Future<Output = ()> + 'static) {
    wasm_bindgen_futures::spawn_local(fut);
}

/// Completes at `deadline`.
pub(crate) async fn sleep_until(deadline: Instant) {
    let ms = deadline.saturating_duration_since(Instant::now()).as_millis();
    Timeout::new(i32::try_from(ms).unwrap_or(i32::MAX)).await;
}

/// A `setTimeout` as a future; cleared when dropped.
struct Timeout {
    id: JsValue,
    rx: oneshot::Receiver<()>,
    _callback: Closure<dyn FnMut(JsValue)>,
}

impl Timeout {
    fn new(ms: i32) -> Self {
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        // The same closure type as every other callback: one set of glue.
        let callback = callback(move |_| {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        });
        let id = set_timeout(callback.as_ref().unchecked_ref(), ms);
        Self { id, rx, _callback: callback }
    }
}

impl Future for Timeout {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

impl Drop for Timeout {
    fn drop(&mut self) {
        clear_timeout(&self.id);
    }
}

/// Reports to the loop from a browser callback. Frames go through an
/// [`Inbox`], which bounds them; the rest (opens, closes, signals, publish
/// results) are few.
fn report(events: &EventSender, ev: ConnEvent) {
    let _ = events.unbounded_send(ev);
}

/// How many events may wait for the loop before a connection stops adding
/// frames (as the native driver's bounded queue).
const INBOX_LIMIT: usize = 256;

/// Messages queued after which the loop is woken at once instead of by the
/// posted wake-up: a browser may run many message callbacks before the
/// posted task, and the loop takes this many per turn.
const WAKE_AFTER: usize = 64;

/// A connection's frames on their way to the loop, bounded. A browser socket
/// cannot be paused, so when the loop is a full queue behind (the application
/// is not reading its subscriptions) the connection is closed and reported
/// lost: the frames after the last one queued are never seen, and the core
/// resumes from its cursor once the application reads again. Nothing is
/// skipped; memory stays bounded.
///
/// The loop is woken once per run of messages, from a task of its own
/// (a `MessageChannel` message) or once [`WAKE_AFTER`] are in, rather than
/// after each: a browser hands over every message in a callback of its
/// own, and waking the loop after each one made it turn once per message.
struct Inbox {
    conn: ConnId,
    tx: EventSender,
    overflowed: bool,
    /// Whether a wake-up is posted and not yet run.
    posted: Rc<Cell<bool>>,
    channel: web_sys::MessageChannel,
    _on_wake: Closure<dyn FnMut(JsValue)>,
}

impl Inbox {
    fn new(conn: ConnId, events: &EventSender) -> Self {
        let posted = Rc::new(Cell::new(false));
        let channel = web_sys::MessageChannel::new().expect("MessageChannel");
        let on_wake = {
            let (tx, posted) = (events.clone(), posted.clone());
            callback(move |_| {
                posted.set(false);
                tx.wake();
            })
        };
        channel.port1().set_onmessage(Some(on_wake.as_ref().unchecked_ref()));
        Self { conn, tx: events.clone(), overflowed: false, posted, channel, _on_wake: on_wake }
    }

    /// Queues `ev`; on overflow calls `close` once and reports the loss.
    fn push(&mut self, ev: ConnEvent, close: impl FnOnce()) {
        if self.overflowed {
            return;
        }
        if self.tx.len() < INBOX_LIMIT {
            let _ = self.tx.push_quietly(ev);
            if self.tx.len() >= WAKE_AFTER {
                self.tx.wake();
            } else if !self.posted.replace(true) {
                let _ = self.channel.port2().post_message(&JsValue::UNDEFINED);
            }
            return;
        }
        self.overflowed = true;
        close();
        let why = "the application is not reading: closed, to resume from the cursor";
        report(&self.tx, ConnEvent::Closed(self.conn, TransportError::Lost(why.into())));
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The wake-up's callback goes with the inbox: a message still posted
        // must not reach it. What was queued meanwhile is woken for now.
        self.channel.port1().set_onmessage(None);
        self.channel.port1().close();
        if self.posted.get() {
            self.tx.wake();
        }
    }
}

/// Every field name a frame may have, then a poll answer's list.
fn field_names() -> impl Iterator<Item = &'static str> {
    FIELD_NAMES.into_iter().chain(["frames"])
}

thread_local! {
    /// [`field_names`] as JavaScript strings, made once: a frame's fields
    /// are looked up without turning each name into a new string first.
    static FIELD_KEYS: Vec<JsValue> = field_names().map(JsValue::from_str).collect();
}

fn field(o: &JsValue, key: &str) -> Option<JsValue> {
    let i = field_names().position(|f| f == key)?;
    FIELD_KEYS.with(|names| js_sys::Reflect::get(o, &names[i]).ok()).filter(|v| !v.is_undefined() && !v.is_null())
}

/// A text field of `o`; a field that is there but not a string is recorded
/// in `bad` (the first one), to be reported once all are read. One copy for
/// every field, and no early return dropping what was read so far: smaller
/// in the browser build.
#[inline(never)]
fn text_field(o: &JsValue, key: &'static str, bad: &mut Option<&'static str>) -> Option<String> {
    let v = field(o, key)?;
    let s = v.as_string();
    if s.is_none() && bad.is_none() {
        *bad = Some(key);
    }
    s
}

/// One frame from a parsed JSON value, by the same rules as the native
/// decoder (the core's [`RawServerFrame`]).
fn frame_from_js(o: &JsValue) -> Result<ServerFrame, String> {
    if !o.is_object() {
        return Err("a frame is not a JSON object".into());
    }
    let heartbeat_ms = match field(o, "heartbeat_ms") {
        None => None,
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() && n >= 0.0 && n.fract() == 0.0 => Some(n as u64),
            _ => return Err("'heartbeat_ms' is not a non-negative integer".into()),
        },
    };
    let bad = &mut None;
    let Some(kind) = text_field(o, "type", bad) else {
        return Err(if bad.is_some() { "'type' is not a string" } else { "a frame without 'type'" }.into());
    };
    let outcome = match text_field(o, "outcome", bad) {
        None => None,
        Some(s) => Some(Outcome::from_wire(&s).ok_or_else(|| format!("unknown outcome '{s}'"))?),
    };
    let raw = RawServerFrame {
        kind: FrameKind::from_wire(&kind),
        heartbeat_ms,
        channel: text_field(o, "channel", bad).map(Into::into),
        outcome,
        reason: text_field(o, "reason", bad).map(WireResetReason::from),
        head: text_field(o, "head", bad),
        id: text_field(o, "id", bad).map(Into::into),
        event: text_field(o, "event", bad),
        data: text_field(o, "data", bad),
        key: text_field(o, "key", bad),
        code: text_field(o, "code", bad),
        message: text_field(o, "message", bad),
        action: text_field(o, "action", bad),
        client_id: text_field(o, "client_id", bad),
    };
    if let Some(key) = bad {
        return Err(format!("'{key}' is not a string"));
    }
    ServerFrame::try_from(raw)
}

/// Decodes a message: for a poll response (`batch`) with the quick reading
/// first ([`ServerFrame::read_events`]), else with the browser's
/// `JSON.parse` ([`parse_frames`]).
fn decode(text: &str, batch: bool) -> Result<Vec<ServerFrame>, String> {
    if let Some(frames) = batch.then(|| ServerFrame::read_events(text)).flatten() {
        return Ok(frames);
    }
    parse_frames(&JsValue::from_str(text), batch)
}

/// Decodes a message, a JavaScript string, with the browser's `JSON.parse`
/// alone: one frame, or for a poll response (`batch`) the frames of
/// `{"frames": [...]}`.
pub fn parse_frames(text: &JsValue, batch: bool) -> Result<Vec<ServerFrame>, String> {
    let v = parse_json(text).map_err(|_| "malformed JSON".to_owned())?;
    if !batch {
        return frame_from_js(&v).map(|f| vec![f]);
    }
    let frames: js_sys::Array =
        field(&v, "frames").and_then(|f| f.dyn_into().ok()).ok_or("a poll response without 'frames'")?;
    // A plain loop: collecting into a `Result` costs more code.
    let mut out = Vec::with_capacity(frames.length() as usize);
    for i in 0..frames.length() {
        out.push(frame_from_js(&frames.get(i))?);
    }
    Ok(out)
}

fn frames_event(conn: ConnId, text: &str, batch: bool) -> ConnEvent {
    ConnEvent::Frames(conn, decode(text, batch), text.len())
}

/// One frame from a message the browser gave as a string: an event read
/// from its text in wasm ([`ServerFrame::read_event`]), anything else parsed
/// by the browser from its own string.
fn text_event(conn: ConnId, text: &JsValue) -> ConnEvent {
    let (frames, bytes) = decode_message(text);
    ConnEvent::Frames(conn, frames, bytes)
}

/// Decodes one WebSocket message or SSE event's data, given as the
/// browser's string: the frame and the message's length in bytes.
fn decode_message(text: &JsValue) -> (Result<Vec<ServerFrame>, String>, usize) {
    let Some(s) = text.as_string() else {
        return (Err("a message that is not text".into()), 0);
    };
    let frames = match ServerFrame::read_event(&s) {
        Some(frame) => Ok(vec![frame]),
        None => parse_frames(text, false),
    };
    (frames, s.len())
}

/// The browser runs each connection through its callbacks: the loop has
/// nothing to drive.
#[derive(Default)]
pub(crate) struct Conns {}

impl Conns {
    pub(crate) fn run(&mut self, _handle: &mut ConnHandle) {}

    pub(crate) fn poll_drive(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }

    pub(crate) fn detach(self) {}
}

/// A running connection; dropping it closes it and silences its callbacks.
pub(crate) enum ConnHandle {
    WebSocket { ws: WebSocket, limit: usize, _callbacks: Vec<Closure<dyn FnMut(JsValue)>> },
    EventSource { es: EventSource, _callbacks: Vec<Closure<dyn FnMut(JsValue)>> },
    Fetch { abort: AbortController },
}

impl ConnHandle {
    /// Sends a frame. `false` when the browser's buffer of what is not sent
    /// yet would go over its bound: the peer has stopped reading, and the
    /// connection is to be given up.
    pub(crate) fn send(&self, text: String) -> bool {
        if let ConnHandle::WebSocket { ws, limit, .. } = self {
            if ws.buffered_amount() as usize + text.len() > *limit {
                return false;
            }
            let _ = ws.send_with_str(&text);
        }
        true
    }

    /// The browser always closes with a close handshake when it can.
    pub(crate) fn close_gracefully(self) {}
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        match self {
            ConnHandle::WebSocket { ws, .. } => {
                ws.set_onopen(None);
                ws.set_onmessage(None);
                ws.set_onclose(None);
                ws.set_onerror(None);
                let _ = ws.close();
            }
            ConnHandle::EventSource { es, .. } => {
                es.set_onopen(None);
                es.set_onmessage(None);
                es.set_onerror(None);
                es.close();
            }
            ConnHandle::Fetch { abort } => abort.abort(),
        }
    }
}

/// Starts a connection (for long polling: one request) on `transport`.
pub(crate) fn connect(
    conn: ConnId,
    transport: Transport,
    url: String,
    opts: &ConnectOptions,
    events: EventSender,
) -> ConnHandle {
    match transport {
        Transport::WebSocket => websocket(conn, &url, opts, events),
        Transport::Sse => event_source(conn, &url, events),
        Transport::LongPoll => poll(conn, url, opts, events),
    }
}

/// A new `AbortController`, which every browser can make. Not `expect`: the
/// error's `Debug` would bring a JS value printer into the module.
fn abort_controller() -> AbortController {
    AbortController::new().unwrap_or_else(|_| unreachable!("AbortController"))
}

fn callback(f: impl FnMut(JsValue) + 'static) -> Closure<dyn FnMut(JsValue)> {
    Closure::new(f)
}

/// The constructor threw (a malformed URL): reported as a failed attempt.
fn not_opened(conn: ConnId, e: &JsValue, events: &EventSender) -> ConnHandle {
    report(events, ConnEvent::Closed(conn, TransportError::Connect(describe(e))));
    ConnHandle::Fetch { abort: abort_controller() }
}

/// `onopen`: reports the opening and remembers it (a failure after it is a
/// lost connection, before it a failed attempt).
fn open_callback(conn: ConnId, events: &EventSender, opened: &Rc<Cell<bool>>) -> Closure<dyn FnMut(JsValue)> {
    let (events, opened) = (events.clone(), opened.clone());
    callback(move |_| {
        opened.set(true);
        report(&events, ConnEvent::Opened(conn));
    })
}

fn websocket(conn: ConnId, url: &str, opts: &ConnectOptions, events: EventSender) -> ConnHandle {
    let ws = match WebSocket::new(url) {
        Ok(ws) => ws,
        Err(e) => return not_opened(conn, &e, &events),
    };
    ws.set_binary_type(BinaryType::Arraybuffer);
    let opened = Rc::new(Cell::new(false));
    let on_open = open_callback(conn, &events, &opened);
    let on_message = {
        let mut inbox = Inbox::new(conn, &events);
        let ws = ws.clone();
        callback(move |e: JsValue| {
            let data = e.unchecked_into::<MessageEvent>().data();
            let ev = if data.is_string() {
                text_event(conn, &data)
            } else {
                match String::from_utf8(js_sys::Uint8Array::new(&data).to_vec()) {
                    Ok(text) => frames_event(conn, &text, false),
                    Err(_) => ConnEvent::Closed(conn, TransportError::Lost("binary frame that is not UTF-8".into())),
                }
            };
            inbox.push(ev, || {
                let _ = ws.close();
            });
        })
    };
    let on_close = callback(move |e: JsValue| {
        let e = e.unchecked_into::<CloseEvent>();
        let error = if opened.get() {
            crate::core::websocket_closed(e.code(), e.reason())
        } else {
            TransportError::OpenFailed("the WebSocket did not open".into())
        };
        report(&events, ConnEvent::Closed(conn, error));
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    ConnHandle::WebSocket { ws, limit: opts.send_queue_bytes, _callbacks: vec![on_open, on_message, on_close] }
}

fn event_source(conn: ConnId, url: &str, events: EventSender) -> ConnHandle {
    let es = match EventSource::new(url) {
        Ok(es) => es,
        Err(e) => return not_opened(conn, &e, &events),
    };
    let opened = Rc::new(Cell::new(false));
    let on_open = open_callback(conn, &events, &opened);
    let on_message = {
        let mut inbox = Inbox::new(conn, &events);
        let es = es.clone();
        callback(move |e: JsValue| {
            let data = e.unchecked_into::<MessageEvent>().data();
            inbox.push(text_event(conn, &data), || es.close());
        })
    };
    let on_error = {
        let es = es.clone();
        callback(move |_| {
            // The browser would reconnect on its own, from its own idea of the
            // last id: stop it, the core decides.
            es.close();
            let error = if opened.get() {
                TransportError::Lost("the event stream broke".into())
            } else {
                TransportError::OpenFailed("the event stream did not open".into())
            };
            report(&events, ConnEvent::Closed(conn, error));
        })
    };
    es.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    es.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    es.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    ConnHandle::EventSource { es, _callbacks: vec![on_open, on_message, on_error] }
}

fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
    opts: &ConnectOptions,
    abort: Option<&AbortController>,
) -> Result<Request, JsValue> {
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(body));
    }
    if let Some(abort) = abort {
        init.set_signal(Some(&abort.signal()));
    }
    let request = Request::new_with_str_and_init(url, &init)?;
    let bearer = opts.bearer.as_deref().map(|b| ("authorization", b));
    let fixed = opts.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for (name, value) in fixed.chain(bearer).chain(headers.iter().copied()) {
        request.headers().set(name, value)?;
    }
    Ok(request)
}

fn poll(conn: ConnId, url: String, opts: &ConnectOptions, events: EventSender) -> ConnHandle {
    let abort = abort_controller();
    let req = request("GET", &url, None, &[("accept", "application/json")], opts, Some(&abort));
    let limit = opts.poll_limit;
    wasm_bindgen_futures::spawn_local(async move {
        let error = match run_poll(conn, req, limit, &events).await {
            Ok(()) => TransportError::Completed,
            Err(e) => e,
        };
        report(&events, ConnEvent::Closed(conn, error));
    });
    ConnHandle::Fetch { abort }
}

async fn run_poll(
    conn: ConnId,
    req: Result<Request, JsValue>,
    limit: usize,
    events: &EventSender,
) -> Result<(), TransportError> {
    let req = req.map_err(|e| TransportError::Connect(describe(&e)))?;
    let resp: Response =
        JsFuture::from(fetch_request(&req)).await.map_err(|e| TransportError::Connect(describe(&e)))?.unchecked_into();
    let header = |name| resp.headers().get(name).ok().flatten();
    let ctype = header("content-type").unwrap_or_default();
    crate::core::http_answer(resp.status(), &ctype, header("retry-after").as_deref(), "application/json")?;
    report(events, ConnEvent::Opened(conn));
    let text = read_bounded(&resp, limit)
        .await
        .map_err(|e| TransportError::Lost(describe(&e)))?
        .ok_or(TransportError::TooLarge { limit })?;
    report(events, frames_event(conn, &text, true));
    Ok(())
}

/// The body of `resp` as text, or `None` when it is longer than `limit`
/// bytes: a `Content-Length` over it is refused before anything is read,
/// and a streamed body is read chunk by chunk and given up at the limit.
async fn read_bounded(resp: &Response, limit: usize) -> Result<Option<String>, JsValue> {
    let length = resp.headers().get("content-length").ok().flatten().and_then(|v| v.trim().parse::<usize>().ok());
    if length.is_some_and(|n| n > limit) {
        return Ok(None);
    }
    let Some(body) = resp.body() else { return Ok(Some(String::new())) };
    let reader = body.get_reader().unchecked_into::<web_sys::ReadableStreamDefaultReader>();
    let mut bytes = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read()).await?;
        if js_sys::Reflect::get(&chunk, &"done".into())?.is_truthy() {
            break;
        }
        let value = js_sys::Uint8Array::new(&js_sys::Reflect::get(&chunk, &"value".into())?);
        if bytes.len() + value.length() as usize > limit {
            let _ = reader.cancel();
            return Ok(None);
        }
        bytes.extend_from_slice(&value.to_vec());
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Sends an HTTP publish with `fetch` and reports the result.
pub(crate) fn post(key: String, url: String, data: String, opts: &ConnectOptions, events: EventSender) {
    let req = request(
        "POST",
        &url,
        Some(&data),
        &[("idempotency-key", &key), ("content-type", "text/plain;charset=UTF-8")],
        opts,
        None,
    );
    wasm_bindgen_futures::spawn_local(async move {
        let result = async {
            let req = req.map_err(|e| PostError::Failed(describe(&e)))?;
            let resp: Response = JsFuture::from(fetch_request(&req))
                .await
                .map_err(|e| PostError::Failed(describe(&e)))?
                .unchecked_into();
            let status = resp.status();
            // An answer is an id or an error message: a longer one is not
            // read, and the publish is sent again with the same key.
            let limit = crate::core::MAX_POST_ANSWER;
            let body = read_bounded(&resp, limit).await.map_err(|e| PostError::Failed(describe(&e)))?;
            let Some(body) = body else {
                return Err(match status {
                    200 => PostError::Failed("answer over the limit".into()),
                    _ => PostError::Status { status, message: String::new() },
                });
            };
            if status != 200 {
                return Err(PostError::Status { status, message: body.chars().take(200).collect() });
            }
            js_sys::JSON::parse(&body)
                .ok()
                .and_then(|v| field(&v, "id"))
                .and_then(|id| id.as_string())
                .ok_or_else(|| PostError::Status { status, message: "unexpected answer to a publish".into() })
        }
        .await;
        report(&events, ConnEvent::Posted(key, result));
    });
}

/// Listens to the `online` and `offline` events of the global scope (a page's
/// window, or a worker's own scope) and to a page's `visibilitychange`, and
/// feeds them to the core; stops listening when dropped.
pub(crate) fn watch_signals(events: EventSender) -> Option<Signals> {
    let global: web_sys::EventTarget = js_sys::global().unchecked_into();
    // A worker has no document: no visibility to watch there.
    let document = web_sys::window().and_then(|w| w.document());
    // A constructor rather than an `Input` to clone: cloning would bring in
    // the clone code of every kind of input.
    let on = |input: fn() -> Input| {
        let events = events.clone();
        callback(move |_| report(&events, ConnEvent::Signal(input())))
    };
    let online = on(|| Input::Online);
    let offline = on(|| Input::Offline);
    let _ = global.add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
    let _ = global.add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
    let visible = document.map(|document| {
        let events = events.clone();
        let d = document.clone();
        let visible = callback(move |_| {
            if d.visibility_state() == web_sys::VisibilityState::Visible {
                report(&events, ConnEvent::Signal(Input::Wake));
            }
        });
        let _ = document.add_event_listener_with_callback("visibilitychange", visible.as_ref().unchecked_ref());
        (document, visible)
    });
    Some(Signals { global, online, offline, visible })
}

/// A page event listener.
type Listener = Closure<dyn FnMut(JsValue)>;

/// The listeners of a running client.
pub(crate) struct Signals {
    global: web_sys::EventTarget,
    online: Listener,
    offline: Listener,
    /// A page's document, and its `visibilitychange` listener.
    visible: Option<(web_sys::Document, Listener)>,
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = self.global.remove_event_listener_with_callback("online", self.online.as_ref().unchecked_ref());
        let _ = self.global.remove_event_listener_with_callback("offline", self.offline.as_ref().unchecked_ref());
        if let Some((document, visible)) = &self.visible {
            let _ = document.remove_event_listener_with_callback("visibilitychange", visible.as_ref().unchecked_ref());
        }
    }
}

fn describe(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| "browser error".into())
}

#[cfg(all(test, feature = "json-decode"))]
mod tests {
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::core::Transport;

    /// The browser's reading of a parsed frame (`JSON.parse`, then its
    /// fields), which takes whatever the quick reading of events leaves,
    /// against the native decoder (serde) on the same frames: the same frame
    /// or an error from both.
    #[test]
    fn frames_decode_in_the_browser_as_natively() {
        let frames = [
            r#"{"type":"event","channel":"c","id":"1-2","data":"d"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","event":"tick","data":"{\"n\":1}"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","event":null,"data":"d"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":""}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":5}"#,
            r#"{"type":"event","channel":"c","id":7,"data":"d"}"#,
            r#"{"type":"event","channel":"c","data":"d"}"#,
            r#"{"type":"event","id":"1-2","data":"d"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d","extra":[1]}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d","key":5}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d","heartbeat_ms":"x"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d","outcome":"nope"}"#,
            r#"{"type":"welcome","heartbeat_ms":500}"#,
            r#"{"type":"subscribed","channel":"c","outcome":"live","head":"1-0"}"#,
            r#"{"type":5,"channel":"c","id":"1-2","data":"d"}"#,
            r#"{"type":"later","channel":"c"}"#,
            r#"["event"]"#,
        ];
        for text in frames {
            let native = crate::core::decode_text(Transport::WebSocket, text);
            let browser = super::decode(text, false);
            assert_eq!(browser.is_ok(), native.is_ok(), "{text}: browser {browser:?}, native {native:?}");
            if let (Ok(b), Ok(n)) = (browser, native) {
                assert_eq!(b, n, "{text}");
            }
        }
    }
}
