//! The wasm-bindgen layer of the npm package: thin wrappers that turn
//! [`resub::Client`] into JavaScript objects. The JavaScript side
//! (`js/index.js`) adds the idiomatic surface: `for await`, `on()`, and
//! errors as a `ResubError` class. No policy lives here.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use std::task::{Context, Poll, Waker};

use futures::StreamExt;
use js_sys::{Object, Reflect};
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Error, Message, PresenceAction, Subscription, Transport};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

/// The heap allocator: talc, smaller than the default dlmalloc (a wasm
/// module runs on one thread, which this allocator assumes).
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// One promise type for every async method: one instantiation of the
/// promise glue instead of one per method, which keeps the module small.
fn promise(fut: impl std::future::Future<Output = Result<JsValue, JsValue>> + 'static) -> js_sys::Promise {
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<JsValue, JsValue>>>> = Box::pin(fut);
    future_to_promise(fut)
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// `{ code, message }`, which the JavaScript side turns into a `ResubError`.
fn error_value(code: &str, message: &str) -> JsValue {
    let o = Object::new();
    set(&o, "code", code);
    set(&o, "message", message);
    o.into()
}

fn js_error(e: &Error) -> JsValue {
    error_value(e.code(), &e.to_string())
}

/// Appends `m` to the JSON array being written in `out` (which starts with
/// `[`), in the shape `index.d.ts` gives each message: a batch crosses to
/// JavaScript as one string and one `JSON.parse`, not a property set per
/// field. `false` for a kind of message this layer does not hand out.
fn message_json(m: Message, out: &mut String) -> bool {
    use resub::protocol::push_json_string as string;
    let field = |out: &mut String, key: &str, value: &str| {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        string(out, value);
    };
    let at = out.len();
    out.push_str(if at > 1 { ",{\"type\":" } else { "{\"type\":" });
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

/// Sets a disconnect reason's stable code (`reason`) and its text (`detail`).
fn set_reason(o: &Object, r: &DisconnectReason) {
    set(o, "reason", r.code());
    set(o, "detail", r.to_string());
}

fn state_value(s: &ConnectionState) -> JsValue {
    let o = Object::new();
    match s {
        ConnectionState::Connecting { transport, attempt, endpoint } => {
            set(&o, "state", "connecting");
            set(&o, "transport", transport.name());
            set(&o, "attempt", *attempt);
            set(&o, "endpoint", endpoint.as_str());
        }
        ConnectionState::Connected { transport, fallback, endpoint } => {
            set(&o, "state", "connected");
            set(&o, "transport", transport.name());
            set(&o, "endpoint", endpoint.as_str());
            if let Some(fb) = fallback {
                let f = Object::new();
                set(&f, "from", fb.from.name());
                set_reason(&f, &fb.reason);
                set(&o, "fallback", f);
            }
        }
        ConnectionState::Disconnected { reason, attempt, retry_in, .. } => {
            set(&o, "state", "disconnected");
            set_reason(&o, reason);
            set(&o, "attempt", *attempt);
            set(&o, "retryInMs", retry_in.as_secs_f64() * 1000.0);
        }
        ConnectionState::Closed { error } => {
            set(&o, "state", "closed");
            if let Some(e) = error {
                set(&o, "error", js_error(e));
            }
        }
        _ => set(&o, "state", "unknown"),
    }
    o.into()
}

/// The client; see `Client` in `index.d.ts`.
#[wasm_bindgen]
pub struct WasmClient {
    inner: Client,
}

#[wasm_bindgen]
impl WasmClient {
    /// `new WasmClient(url, options)`; throws `{code, message}` on bad input.
    /// `options` is the array `index.js` made of the user's options once it
    /// checked them (`wasmOptions`): numbers in milliseconds, lists joined by
    /// spaces, `undefined` for what is not set. Reading that by position is
    /// much smaller here than reading and checking JS objects.
    #[wasm_bindgen(constructor)]
    pub fn new(url: &str, options: js_sys::Array) -> Result<WasmClient, JsValue> {
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
        if let Some(n) = num(10) {
            b = b.max_pending_publish_bytes(n as usize);
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
        // A string: that token; `true`: tokens come through `setToken`.
        if let Some(v) = at(15) {
            b = match v.as_string() {
                Some(token) => b.token(&token),
                None => b.await_token(),
            };
        }
        let inner = b.build().map_err(|e| js_error(&e))?;
        Ok(WasmClient { inner })
    }

    /// Starts a subscription at once; its first item is an error if it could
    /// not start.
    pub fn subscribe(&self, channel: String, from: Option<String>) -> WasmSubscription {
        let slot = Rc::new(RefCell::new(Slot { stage: Stage::Starting, waiting: false, waker: None }));
        let client = self.inner.clone();
        let started = slot.clone();
        spawn_local(async move {
            let sub = match &from {
                Some(after) => client.subscribe_from(&channel, after).await,
                None => client.subscribe(&channel).await,
            };
            let mut slot = started.borrow_mut();
            // Closed while starting: the subscription is dropped here, which
            // ends it.
            if matches!(slot.stage, Stage::Starting) {
                slot.stage = match sub {
                    Ok(sub) => Stage::Running(sub),
                    Err(e) => Stage::Failed(js_error(&e)),
                };
            }
            slot.wake();
        });
        WasmSubscription { slot }
    }

    /// Publishes; resolves to the event id.
    pub fn publish(&self, channel: String, data: String, event: Option<String>) -> js_sys::Promise {
        let client = self.inner.clone();
        promise(async move {
            match client.publish_event(&channel, event.as_deref(), data).await {
                Ok(id) => Ok(JsValue::from_str(&id)),
                Err(e) => Err(js_error(&e)),
            }
        })
    }

    /// Calls `listener(state)` on every state change from now on, until the
    /// client closes; `index.js` shares this one call among its listeners.
    #[wasm_bindgen(js_name = onState)]
    pub fn on_state(&self, listener: js_sys::Function) {
        let mut states = self.inner.states();
        spawn_local(async move {
            while let Some(s) = states.next().await {
                let _ = listener.call1(&JsValue::NULL, &state_value(&s));
            }
        });
    }

    /// A fresh token from the application's provider, or `undefined` when
    /// it could not get one.
    #[wasm_bindgen(js_name = setToken)]
    pub fn set_token(&self, token: Option<String>) {
        self.inner.set_token(token);
    }

    /// The current state.
    pub fn state(&self) -> JsValue {
        state_value(&self.inner.state())
    }

    /// Counters: delivered, replayed, duplicates, resets, connections.
    pub fn stats(&self) -> JsValue {
        let s = self.inner.stats();
        let o = Object::new();
        set(&o, "delivered", s.delivered as f64);
        set(&o, "replayed", s.replayed as f64);
        set(&o, "duplicates", s.duplicates as f64);
        set(&o, "resets", s.resets as f64);
        set(&o, "connections", s.connections as f64);
        set(&o, "failures", s.failures as f64);
        o.into()
    }

    /// Closes the client; resolves when it has stopped.
    pub fn close(&self) -> js_sys::Promise {
        let client = self.inner.clone();
        promise(async move {
            client.close().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// Where a subscription is.
enum Stage {
    /// Waiting for the client to confirm it.
    Starting,
    /// Could not start: this error is the first and last item.
    Failed(JsValue),
    Running(Subscription),
    Ended,
}

/// A subscription's stage, and the `next()` call waiting on it.
struct Slot {
    stage: Stage,
    /// A `next()` call is under way.
    waiting: bool,
    waker: Option<Waker>,
}

impl Slot {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// The next items for JavaScript: the messages ready now as a JSON
    /// array, an error, or `undefined` at the end. An error or the end that
    /// follows messages comes with the next call.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<JsValue, JsValue>> {
        let mut json = String::from("[");
        let ready = |json: String| Poll::Ready(Ok(JsValue::from(json + "]")));
        loop {
            let item = match &mut self.stage {
                Stage::Starting => None,
                Stage::Failed(_) if json.len() > 1 => return ready(json),
                Stage::Failed(_) => match std::mem::replace(&mut self.stage, Stage::Ended) {
                    Stage::Failed(e) => return Poll::Ready(Err(e)),
                    _ => unreachable!(),
                },
                Stage::Running(_) if json.len() >= MAX_BATCH_JSON => return ready(json),
                Stage::Running(sub) => match sub.poll_next_unpin(cx) {
                    Poll::Pending => None,
                    Poll::Ready(item) => Some(item),
                },
                Stage::Ended if json.len() > 1 => return ready(json),
                Stage::Ended => return Poll::Ready(Ok(JsValue::UNDEFINED)),
            };
            match item {
                None if json.len() > 1 => return ready(json),
                None => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Some(Some(Ok(m))) => {
                    message_json(m, &mut json);
                }
                Some(Some(Err(e))) => self.stage = Stage::Failed(js_error(&e)),
                Some(None) => self.stage = Stage::Ended,
            }
        }
    }
}

/// A batch stops growing once its JSON is this long (it holds at least one
/// message, however long).
const MAX_BATCH_JSON: usize = 1 << 20;

/// One subscription; see `Subscription` in `index.d.ts`.
#[wasm_bindgen]
pub struct WasmSubscription {
    slot: Rc<RefCell<Slot>>,
}

#[wasm_bindgen]
impl WasmSubscription {
    /// Resolves to the messages ready now (at least one) as a JSON array, or
    /// `undefined` when the subscription has ended; rejects with
    /// `{code, message}` once if it ended with an error.
    #[wasm_bindgen(js_name = nextBatch)]
    pub fn next_batch(&self) -> js_sys::Promise {
        // Calls are sequential (an async iterator awaits each); a call made
        // while another waits sees the end.
        if std::mem::replace(&mut self.slot.borrow_mut().waiting, true) {
            return js_sys::Promise::resolve(&JsValue::UNDEFINED);
        }
        let slot = self.slot.clone();
        promise(std::future::poll_fn(move |cx| {
            let mut slot = slot.borrow_mut();
            let item = slot.poll_batch(cx);
            slot.waiting = item.is_pending();
            item
        }))
    }

    /// Ends the subscription; pending and later `next()` calls see the end.
    pub fn close(&self) {
        let mut slot = self.slot.borrow_mut();
        slot.stage = Stage::Ended;
        slot.wake();
    }
}
