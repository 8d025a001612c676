//! The wasm-bindgen layer of the npm package: the sans-IO session
//! ([`resub::core::Session`]) behind a compact, batch-oriented interface.
//! The JavaScript driver (`js/client.js`) does the I/O (WebSocket,
//! EventSource, fetch, timers, browser signals), reports what happened, and
//! carries out the outputs, which cross as one JSON array per turn. Every
//! decision (what to open, what an answer means, when to retry, what to hand
//! the application) is the session's; the frames are decoded here too.

#![cfg(target_arch = "wasm32")]

use std::time::Duration;

use js_sys::Reflect;
use resub::core::{
    Backoff, Config, ConnId, Input, MAX_POST_ANSWER, Output, POLL_BATCH_FACTOR, PostError, Session, TOKEN_TIMEOUT,
    TransportError, http_answer, websocket_closed,
};
use resub::protocol::{EventId, ServerFrame, push_json_string as string};
use resub::{Client, ConnectionState, DisconnectReason, Error, Instant, Message, PresenceAction, Transport};
use wasm_bindgen::prelude::*;

/// The heap allocator: talc, smaller than the default dlmalloc (a wasm
/// module runs on one thread, which this allocator assumes).
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// `{"code":…,"message":…}`, which the JavaScript side turns into a `ResubError`.
fn error_json(e: &Error, out: &mut String) {
    out.push_str("{\"code\":");
    string(out, e.code());
    out.push_str(",\"message\":");
    string(out, &e.to_string());
    out.push('}');
}

fn js_error(e: &Error) -> JsValue {
    let mut out = String::new();
    error_json(e, &mut out);
    JsValue::from(out)
}

fn field(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    string(out, value);
}

fn number(out: &mut String, key: &str, value: u64) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(&value.to_string());
}

/// Appends `m` to `out` as JSON, in the shape `index.d.ts` gives each message: a batch crosses to
/// JavaScript as one string and one `JSON.parse`, not a property set per
/// field. `false` for a kind of message this layer does not hand out.
fn message_json(m: Message, out: &mut String) -> bool {
    let at = out.len();
    out.push_str("{\"type\":");
    match m {
        Message::Event(e) => {
            out.push_str("\"event\"");
            field(out, "channel", &e.channel);
            field(out, "id", &e.id);
            field(out, "event", e.event_type());
            field(out, "data", &e.data);
        }
        Message::Resumed { channel, after } => {
            out.push_str("\"resumed\"");
            field(out, "channel", &channel);
            field(out, "after", &after);
        }
        Message::Reset { channel, reason, head } => {
            out.push_str("\"reset\"");
            field(out, "channel", &channel);
            field(out, "reset", reason.as_str());
            field(out, "head", &head);
        }
        Message::Presence(p) => {
            out.push_str("\"presence\"");
            field(out, "channel", &p.channel);
            field(out, "presence", if p.action == PresenceAction::Join { "join" } else { "leave" });
            field(out, "clientId", &p.member.client_id);
            field(out, "data", &p.member.data);
        }
        _ => {
            out.truncate(at);
            return false;
        }
    }
    out.push('}');
    true
}

/// A disconnect reason's stable code (`reason`) and its text (`detail`).
fn reason_json(r: &DisconnectReason, out: &mut String) {
    field(out, "reason", r.code());
    field(out, "detail", &r.to_string());
}

/// Appends a connection state as `index.d.ts` gives it.
fn state_json(s: &ConnectionState, out: &mut String) {
    out.push_str("{\"state\":");
    match s {
        ConnectionState::Connecting { transport, attempt, endpoint } => {
            out.push_str("\"connecting\"");
            field(out, "transport", transport.name());
            number(out, "attempt", u64::from(*attempt));
            field(out, "endpoint", endpoint);
        }
        ConnectionState::Connected { transport, fallback, endpoint } => {
            out.push_str("\"connected\"");
            field(out, "transport", transport.name());
            field(out, "endpoint", endpoint);
            if let Some(fb) = fallback {
                out.push_str(",\"fallback\":{\"from\":");
                string(out, fb.from.name());
                reason_json(&fb.reason, out);
                out.push('}');
            }
        }
        ConnectionState::Disconnected { reason, attempt, retry_in, .. } => {
            out.push_str("\"disconnected\"");
            reason_json(reason, out);
            number(out, "attempt", u64::from(*attempt));
            number(out, "retryInMs", retry_in.as_millis() as u64);
        }
        ConnectionState::Closed { error } => {
            out.push_str("\"closed\"");
            if let Some(e) = error {
                out.push_str(",\"error\":");
                error_json(e, out);
            }
        }
        _ => out.push_str("\"unknown\""),
    }
    out.push('}');
}

/// Appends one output as the JavaScript driver reads it: an array whose
/// first element says what to do.
///
/// - `[0, conn, transport, url]` open a connection (`"ws"`, `"sse"`, `"poll"`)
/// - `[1, conn, text]` send a WebSocket text frame
/// - `[2, key, url, data]` POST a publish with `Idempotency-Key: key`
/// - `[3, conn]` close a connection and report nothing more about it
/// - `[4, message]` hand a message to its channel's subscription, or
///   `[4, message, cursor]` for one that moves the subscription's cursor
///   (see `Message::cursor`), which is saved before the application sees it
/// - `[5, channel, error]` the channel's subscription ended with an error
/// - `[6, token, id]` or `[6, token, null, error]` a publish finished
/// - `[7, state]` the connection state changed
/// - `[8, seq]` hand the event the driver kept as `seq` to its subscription;
///   an event moves the cursor to its id
///
/// `kept`: the output comes from an event the driver parsed itself and
/// kept (see [`Core::event`]), delivered as `[8, seq]`.
fn output_json(o: Output, out: &mut String, kept: Option<f64>) {
    let at = out.len();
    out.push_str(if at > 1 { ",[" } else { "[" });
    let conn = |out: &mut String, kind: &str, conn: ConnId| {
        out.push_str(kind);
        out.push_str(&conn.0.to_string());
    };
    match o {
        Output::Connect { conn: id, transport, url } => {
            conn(out, "0,", id);
            out.push(',');
            string(out, transport.name());
            out.push(',');
            string(out, &url);
        }
        Output::Send { conn: id, text } => {
            conn(out, "1,", id);
            out.push(',');
            string(out, &text);
        }
        Output::Post { key, url, data } => {
            out.push_str("2,");
            string(out, &key);
            out.push(',');
            string(out, &url);
            out.push(',');
            string(out, &data);
        }
        Output::Disconnect { conn: id } => conn(out, "3,", id),
        Output::Deliver { message: Message::Event(_) } if let Some(seq) = kept => {
            out.push_str("8,");
            out.push_str(&(seq as u64).to_string());
        }
        Output::Deliver { message } => {
            out.push_str("4,");
            let cursor = message.cursor().map(str::to_owned);
            if !message_json(message, out) {
                out.truncate(at);
                return;
            }
            if let Some(cursor) = cursor {
                out.push(',');
                string(out, &cursor);
            }
        }
        Output::SubscriptionEnded { channel, error } => {
            out.push_str("5,");
            string(out, &channel);
            out.push(',');
            error_json(&error, out);
        }
        Output::PublishDone { token, result } => {
            out.push_str("6,");
            out.push_str(&token.to_string());
            match result {
                Ok(id) => {
                    out.push(',');
                    string(out, &id);
                }
                Err(e) => {
                    out.push_str(",null,");
                    error_json(&e, out);
                }
            }
        }
        Output::State(state) => {
            out.push_str("7,");
            state_json(&state, out);
        }
        _ => {
            out.truncate(at);
            return;
        }
    }
    out.push(']');
}

/// The media type of a long poll's answer.
const POLL_TYPE: &str = "application/json";

/// The session, as the JavaScript driver runs it; see `js/client.js`.
#[wasm_bindgen]
pub struct Core {
    session: Session,
    /// The outputs so far, as the JSON array `poll` hands over (without its
    /// closing bracket). They are taken from the session after each call,
    /// so that an event the driver kept is known by the input it came in.
    out: String,
    /// Largest long-poll answer read, in bytes.
    poll_limit: usize,
    /// Most bytes a WebSocket may hold unsent before it counts as stuck.
    send_limit: usize,
}

fn conn(id: f64) -> ConnId {
    ConnId(id as u64)
}

#[wasm_bindgen]
impl Core {
    /// `new Core(url, options)`; throws `{code, message}` (as JSON) on bad
    /// input. `options` is the array `client.js` made of the user's options
    /// once it checked them (`wasmOptions`): numbers in milliseconds, lists
    /// joined by spaces, `undefined` for what is not set. Reading that by
    /// position is much smaller here than reading and checking JS objects.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, options: js_sys::Array) -> Result<Core, JsValue> {
        let at = |i| Some(options.get(i)).filter(|v| !v.is_undefined() && !v.is_null());
        let text = |i| at(i).and_then(|v| v.as_string());
        let num = |i| at(i).and_then(|v| v.as_f64());
        let ms = |i| num(i).map(|n| Duration::from_millis(n as u64));
        let mut b = Client::builder(url);
        // One letter per transport, in order of preference.
        if let Some(list) = text(0) {
            let mut ts = Vec::new();
            for c in list.bytes() {
                ts.push(match c {
                    b'w' => Transport::WebSocket,
                    b's' => Transport::Sse,
                    _ => Transport::LongPoll,
                });
            }
            b = b.transports(&ts);
        }
        let mut backoff = Backoff::default();
        if let Some(d) = ms(1) {
            backoff.base = d;
        }
        if let Some(d) = ms(2) {
            backoff.cap = d;
        }
        if let Some(f) = num(3) {
            backoff.factor = f;
        }
        backoff.max_attempts = num(4).map(|n| n as u32);
        b = b.backoff(backoff);
        if let Some(d) = ms(5) {
            b = b.heartbeat_timeout(d);
        }
        if let Some(d) = ms(6) {
            b = b.open_timeout(d);
        }
        if let Some(d) = ms(7) {
            b = b.healthy_after(d);
        }
        if let Some(d) = ms(8) {
            b = b.poll_hold(d);
        }
        if let Some(n) = num(9) {
            b = b.max_pending_publishes(n as usize);
        }
        let defaults = Config::default();
        let mut publish_bytes = defaults.max_pending_publish_bytes;
        if let Some(n) = num(10) {
            publish_bytes = n as usize;
            b = b.max_pending_publish_bytes(publish_bytes);
        }
        if let Some(id) = text(11) {
            b = b.presence(&id, &text(12).unwrap_or_default());
        }
        // A negative number: never probe.
        if let Some(n) = num(13) {
            b = b.upgrade_probe((n >= 0.0).then(|| Duration::from_millis(n as u64)));
        }
        if let Some(list) = text(14) {
            // No string indexing here: its panic path would bring Unicode
            // tables into the module.
            let mut urls: Vec<&str> = Vec::new();
            let mut rest = list.as_str();
            while let Some((url, more)) = rest.split_once(' ') {
                urls.push(url);
                rest = more;
            }
            urls.push(rest);
            b = b.endpoints(&urls);
        }
        // A string: that token; `true`: tokens come through `token()`.
        if let Some(v) = at(15) {
            b = match v.as_string() {
                Some(token) => b.token(&token),
                None => b.await_token(),
            };
        }
        let session = b.into_session().map_err(|e| js_error(&e))?;
        Ok(Core {
            session,
            out: String::from("["),
            poll_limit: defaults.max_frame_bytes.saturating_mul(POLL_BATCH_FACTOR),
            // A connection holds at most the outbox and a frame's worth of
            // subscribes and pings queued for sending.
            send_limit: publish_bytes.saturating_add(defaults.max_frame_bytes),
        })
    }

    /// `[largest poll answer, most bytes a WebSocket may hold unsent,
    /// largest publish answer, largest frame]` in bytes, and how long a
    /// token provider may take, in milliseconds.
    pub fn limits(&self) -> Vec<f64> {
        let frame = self.poll_limit / POLL_BATCH_FACTOR;
        let token = TOKEN_TIMEOUT.as_millis() as f64;
        vec![self.poll_limit as f64, self.send_limit as f64, MAX_POST_ANSWER as f64, frame as f64, token]
    }

    /// Throws `{code, message}` (as JSON) unless an answer to
    /// `GET /presence/{channel}` with `status` is the list (its `body` is
    /// for the message).
    #[wasm_bindgen(js_name = presenceAnswer)]
    pub fn presence_answer(status: u16, body: &str) -> Result<(), JsValue> {
        resub::core::presence_answer(status, body).map_err(|e| js_error(&e))
    }

    /// The server in use (or to be tried first).
    pub fn endpoint(&self) -> String {
        self.session.endpoint_url().to_owned()
    }

    /// The transport tried first.
    pub fn transport(&self) -> String {
        self.session.transport().name().to_owned()
    }

    /// Starts a subscription, after the event id `from` if given; throws
    /// `{code, message}` (as JSON) if it cannot start.
    pub fn subscribe(&mut self, channel: &str, from: Option<String>) -> Result<(), JsValue> {
        let from = match from {
            Some(f) => Some(f.parse::<EventId>().map_err(|e| js_error(&e.into()))?),
            None => None,
        };
        let result = self.session.subscribe(channel, from, Instant::now()).map_err(|e| js_error(&e));
        self.drain(None);
        result
    }

    /// Ends the subscription to `channel`.
    pub fn unsubscribe(&mut self, channel: &str) {
        self.session.unsubscribe(channel, Instant::now());
        self.drain(None);
    }

    /// Publishes; the result comes as output 6 with `token`. Throws
    /// `{code, message}` (as JSON) if the publish is refused at once.
    pub fn publish(&mut self, token: f64, channel: &str, data: String, event: Option<String>) -> Result<(), JsValue> {
        let result = self.session.publish(token as u64, channel, event, data).map_err(|e| js_error(&e));
        self.drain(None);
        result
    }

    /// Closes the session.
    pub fn close(&mut self) {
        self.session.close();
        self.drain(None);
    }

    /// Whether the session has closed.
    #[wasm_bindgen(js_name = isClosed)]
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    fn input(&mut self, input: Input) {
        self.session.handle_input(input, Instant::now());
        self.drain(None);
    }

    /// Takes what the session has to do into `out`.
    fn drain(&mut self, kept: Option<f64>) {
        while let Some(o) = self.session.poll_output() {
            output_json(o, &mut self.out, kept);
        }
    }

    /// Connection `conn` opened.
    pub fn opened(&mut self, conn: f64) {
        self.input(Input::Opened { conn: self::conn(conn) });
    }

    /// A WebSocket message or an SSE event's data, the string `text` of
    /// `bytes` bytes, arrived on `conn`, and it is not an event in the shape
    /// [`event`](Self::event) takes: the browser's `JSON.parse` reads it.
    pub fn message(&mut self, conn: f64, text: &JsValue, bytes: f64) {
        let frames = resub::browser::parse_frames(text, false);
        self.input(Input::Frames { conn: self::conn(conn), frames, bytes: bytes as usize });
    }

    /// An event frame arrived on `conn` (a WebSocket message or SSE event of
    /// `bytes` bytes, or one frame of a long-poll answer, 0), which the
    /// driver parsed with `JSON.parse` and keeps as `seq`: an object with
    /// the keys `type` (`"event"`), `channel`, `id` and `data`, strings, and
    /// maybe `event`, a string or null. Its data stays in JavaScript: if the
    /// session delivers it, the output is `[8, seq]`.
    pub fn event(&mut self, conn: f64, channel: &str, id: &str, event: Option<String>, seq: f64, bytes: f64) {
        let frame = ServerFrame::Event { channel: channel.into(), id: id.into(), event, data: String::new() };
        let input = Input::Frames { conn: self::conn(conn), frames: Ok(vec![frame]), bytes: bytes as usize };
        self.session.handle_input(input, Instant::now());
        self.drain(Some(seq));
    }

    /// The body of a long-poll answer arrived on `conn` as the string
    /// `text`, or one frame of it as `{"frames":[frame]}` (its size was
    /// bounded as it was read).
    pub fn answer(&mut self, conn: f64, text: &JsValue) {
        let frames = resub::browser::parse_frames(text, true);
        self.input(Input::Frames { conn: self::conn(conn), frames, bytes: 0 });
    }

    /// Whether an HTTP answer to a long poll is one whose body is read
    /// (see `resub::core::http_answer`).
    pub fn accepts(status: u16, content_type: &str) -> bool {
        http_answer(status, content_type, None, POLL_TYPE).is_ok()
    }

    /// A long poll was answered in a way [`accepts`](Self::accepts) refused.
    pub fn refused(&mut self, conn: f64, status: u16, content_type: &str, retry_after: Option<String>) {
        if let Err(error) = http_answer(status, content_type, retry_after.as_deref(), POLL_TYPE) {
            self.input(Input::Closed { conn: self::conn(conn), error });
        }
    }

    /// Connection `conn` failed or ended. `kind`: 0 could not connect
    /// (`text` says why), 1 did not open, 2 lost, 3 a WebSocket closed with
    /// `code` and reason `text`, 4 a long-poll answer over the limit, 5 a
    /// long poll completed.
    pub fn closed(&mut self, conn: f64, kind: u8, code: u16, text: String) {
        let error = match kind {
            0 => TransportError::Connect(text),
            1 => TransportError::OpenFailed(text),
            3 => websocket_closed(code, text),
            4 => TransportError::TooLarge { limit: self.poll_limit },
            5 => TransportError::Completed,
            _ => TransportError::Lost(text),
        };
        self.input(Input::Closed { conn: self::conn(conn), error });
    }

    /// The publish with idempotency key `key` was answered with `status`
    /// and `body` (`undefined`: longer than the limit), or with status 0
    /// failed on the way (`body` says why).
    pub fn posted(&mut self, key: String, status: u16, body: Option<String>) {
        let result = match (status, body) {
            (0, why) => Err(PostError::Failed(why.unwrap_or_default())),
            (200, None) => Err(PostError::Failed("answer over the limit".into())),
            (200, Some(body)) => js_sys::JSON::parse(&body)
                .ok()
                .filter(|v| v.is_object())
                .and_then(|v| Reflect::get(&v, &JsValue::from_str("id")).ok())
                .and_then(|id| id.as_string())
                .ok_or_else(|| PostError::Status { status, message: "unexpected answer to a publish".into() }),
            (_, body) => {
                Err(PostError::Status { status, message: body.unwrap_or_default().chars().take(200).collect() })
            }
        };
        self.input(Input::Posted { key, result });
    }

    /// A browser signal: 0 online, 1 offline, 2 the page is visible again.
    pub fn signal(&mut self, kind: u8) {
        self.input(match kind {
            0 => Input::Online,
            1 => Input::Offline,
            _ => Input::Wake,
        });
    }

    /// A fresh token from the application's provider, or `undefined` when
    /// it could not get one.
    pub fn token(&mut self, token: Option<String>) {
        self.input(Input::Token(token));
    }

    /// The deadline [`wait`](Self::wait) gave has passed.
    pub fn timeout(&mut self) {
        self.session.handle_timeout(Instant::now());
        self.drain(None);
    }

    /// Milliseconds until the session wants [`timeout`](Self::timeout)
    /// called, or -1 when it has no deadline.
    pub fn wait(&self) -> f64 {
        match self.session.poll_timeout() {
            Some(d) => d.saturating_duration_since(Instant::now()).as_secs_f64() * 1000.0,
            None => -1.0,
        }
    }

    /// What to do now, as one JSON array of outputs (see `output_json`), or
    /// `undefined` when there is nothing.
    pub fn poll(&mut self) -> Option<String> {
        // Outputs made at creation, before any call.
        self.drain(None);
        if self.out.len() == 1 {
            return None;
        }
        let mut out = std::mem::replace(&mut self.out, String::from("["));
        out.push(']');
        Some(out)
    }

    /// Counters: delivered, replayed, duplicates, resets, connections, failures.
    pub fn stats(&self) -> Vec<f64> {
        let s = self.session.stats();
        [s.delivered, s.replayed, s.duplicates, s.resets, s.connections, s.failures].map(|n| n as f64).to_vec()
    }
}
