//! Simulated-time tests of the session: scripted scenarios, then a seeded
//! randomized run over thousands of fault schedules against a model server.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::*;
use crate::PresenceAction;
use crate::core::Backoff;

// The same tests run in a browser (wasm-bindgen-test in headless Chromium).
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn seeds(jitter: u64) -> Seeds {
    Seeds { jitter, keys: u128::from(jitter) << 64 | 0xfeed }
}

fn config() -> Config {
    Config {
        backoff: Backoff {
            base: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_secs(2),
            max_attempts: None,
        },
        healthy_after: Duration::from_secs(1),
        open_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

fn event(channel: &str, id: &str, data: &str) -> String {
    encode_server(&ServerFrame::Event { channel: channel.into(), id: id.into(), event: None, data: data.into() })
}

fn encode_server(f: &ServerFrame) -> String {
    serde_json::to_string(f).unwrap()
}

fn welcome(ms: u64) -> String {
    encode_server(&ServerFrame::Welcome { heartbeat_ms: ms })
}

fn subscribed(channel: &str, outcome: Outcome, reason: Option<WireResetReason>, head: &str) -> String {
    encode_server(&ServerFrame::Subscribed { channel: channel.into(), outcome, reason, head: head.into() })
}

/// A session plus what it asked for, drained after every step.
struct Rig {
    s: Session,
    now: Instant,
    sent: Vec<(ConnId, ClientFrame)>,
    connects: Vec<ConnId>,
    disconnects: Vec<ConnId>,
    delivered: Vec<Message>,
    ended: Vec<(String, Error)>,
    states: Vec<ConnectionState>,
    published: Vec<(u64, Result<String, Error>)>,
    posts: Vec<(String, String, String)>,
    urls: Vec<(Transport, String)>,
}

impl Rig {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(cfg: Config) -> Self {
        let now = Instant::now();
        let s = Session::new(cfg, "http://example.test:80", seeds(1), now).unwrap();
        let mut r = Rig {
            s,
            now,
            sent: vec![],
            connects: vec![],
            disconnects: vec![],
            delivered: vec![],
            ended: vec![],
            states: vec![],
            published: vec![],
            posts: vec![],
            urls: vec![],
        };
        r.drain();
        r
    }

    fn drain(&mut self) {
        while let Some(o) = self.s.poll_output() {
            match o {
                Output::Connect { conn, transport, url } => {
                    self.connects.push(conn);
                    self.urls.push((transport, url));
                }
                Output::Post { key, url, data } => self.posts.push((key, url, data)),
                Output::Send { conn, text } => self.sent.push((conn, serde_json::from_str(&text).unwrap())),
                Output::Disconnect { conn } => self.disconnects.push(conn),
                Output::Deliver { message, .. } => self.delivered.push(message),
                Output::SubscriptionEnded { channel, error } => self.ended.push((channel, error)),
                Output::PublishDone { token, result } => self.published.push((token, result)),
                Output::State(st) => self.states.push(st),
            }
        }
    }

    fn conn(&self) -> ConnId {
        *self.connects.last().unwrap()
    }

    fn input(&mut self, i: Input) {
        self.s.handle_input(i, self.now);
        self.drain();
    }

    fn recv(&mut self, text: String) {
        let conn = self.conn();
        self.input(Input::Received { conn, text });
    }

    fn open(&mut self) {
        let conn = self.conn();
        self.input(Input::Opened { conn });
        self.recv(welcome(1000));
    }

    fn close(&mut self, error: TransportError) {
        let conn = self.conn();
        self.input(Input::Closed { conn, error });
    }

    fn advance_to_timeout(&mut self) {
        self.now = self.s.poll_timeout().expect("a timer is armed");
        self.s.handle_timeout(self.now);
        self.drain();
    }

    fn events(&self) -> Vec<String> {
        self.delivered
            .iter()
            .filter_map(|m| match m {
                Message::Event(e) => Some(e.data.clone()),
                _ => None,
            })
            .collect()
    }

    fn last_state(&self) -> &ConnectionState {
        self.states.last().unwrap()
    }
}

#[test]
fn first_connect_is_retried_with_backoff() {
    let mut r = Rig::new();
    assert_eq!(r.connects.len(), 1);
    let t0 = r.now;
    r.close(TransportError::Connect("connection refused".into()));
    let ConnectionState::Disconnected { attempt, retry_at, .. } = r.last_state().clone() else {
        panic!("not disconnected: {:?}", r.last_state())
    };
    assert_eq!(attempt, 1);
    assert!(retry_at <= t0 + Duration::from_millis(100));
    r.advance_to_timeout();
    assert_eq!(r.connects.len(), 2, "a second attempt follows the first failure");
    assert_ne!(r.connects[0], r.connects[1]);
}

#[test]
fn resumes_after_drop_without_duplicates() {
    let mut r = Rig::new();
    r.s.subscribe("c", None, r.now).unwrap();
    r.open();
    assert!(matches!(&r.sent[0].1, ClientFrame::Subscribe { cursor: None, .. }));
    r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
    for i in 1..=3 {
        r.recv(event("c", &format!("ep-{i}"), &i.to_string()));
    }
    r.close(TransportError::Lost("reset by peer".into()));
    r.advance_to_timeout();
    r.open();
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("ep-3"), "resubscribes from the last delivered id");
    r.recv(subscribed("c", Outcome::Resumed, None, "ep-5"));
    // A server may replay from before the cursor: those are dropped.
    for i in 2..=6 {
        r.recv(event("c", &format!("ep-{i}"), &i.to_string()));
    }
    assert_eq!(r.events(), ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(r.s.stats().duplicates, 2);
    assert_eq!(r.s.stats().replayed, 2);
    assert!(r.delivered.iter().any(|m| matches!(m, Message::Resumed { after, .. } if after == "ep-3")));
}

#[test]
fn gap_forces_a_reconnect_that_resumes_from_the_cursor() {
    let mut r = Rig::new();
    r.s.subscribe("c", None, r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
    r.recv(event("c", "ep-1", "1"));
    r.recv(event("c", "ep-3", "3"));
    assert_eq!(r.events(), ["1"], "nothing after a gap is delivered");
    assert_eq!(r.disconnects, [r.conn()]);
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::Protocol(_), .. }));
    r.advance_to_timeout();
    r.open();
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("ep-1"));
}

#[test]
fn event_from_another_epoch_without_reset_is_not_delivered() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("ep-4".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Resumed, None, "ep-4"));
    r.recv(event("c", "other-1", "x"));
    assert!(r.events().is_empty());
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { .. }));
}

#[test]
fn heartbeat_silence_replaces_the_connection() {
    let mut r = Rig::new();
    r.open();
    let opened = r.now;
    assert_eq!(r.s.poll_timeout(), Some(opened + Duration::from_millis(2000)));
    r.now += Duration::from_millis(1500);
    r.recv(encode_server(&ServerFrame::Ping));
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_millis(2000)), "any frame extends the deadline");
    r.advance_to_timeout();
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::HeartbeatTimeout, .. }));
    assert_eq!(r.disconnects.len(), 1);
    r.advance_to_timeout();
    assert_eq!(r.connects.len(), 2);
}

#[test]
fn open_timeout_abandons_a_silent_attempt() {
    let mut r = Rig::new();
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.advance_to_timeout();
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::OpenTimeout, .. }));
}

#[test]
fn retry_after_is_honoured() {
    for _ in 0..50 {
        let mut r = Rig::new();
        let t0 = r.now;
        r.close(TransportError::Status { status: 503, retry_after: Some(Duration::from_secs(3)) });
        let ConnectionState::Disconnected { retry_at, reason, .. } = r.last_state().clone() else { panic!() };
        assert_eq!(reason, DisconnectReason::Unavailable { retry_after: Some(Duration::from_secs(3)) });
        assert!(retry_at >= t0 + Duration::from_secs(3));
        assert!(retry_at <= t0 + Duration::from_millis(3100));
    }
}

#[test]
fn close_code_hint_is_honoured() {
    let mut r = Rig::new();
    r.open();
    let t0 = r.now;
    r.close(TransportError::Closed { code: 4503, reason: "2.5".into() });
    let ConnectionState::Disconnected { retry_at, .. } = r.last_state().clone() else { panic!() };
    assert!(retry_at >= t0 + Duration::from_millis(2500));
}

#[test]
fn unauthorized_stops_without_retrying() {
    let mut r = Rig::new();
    r.s.subscribe("c", None, r.now).unwrap();
    let (tx, _) = (r.s.publish(7, "c", None, "x".into()), ());
    tx.unwrap();
    r.close(TransportError::Status { status: 401, retry_after: None });
    assert_eq!(r.last_state(), &ConnectionState::Closed { error: Some(Error::Unauthorized) });
    assert_eq!(r.s.poll_timeout(), None, "no retry is scheduled");
    assert_eq!(r.ended, [("c".to_string(), Error::Unauthorized)]);
    assert_eq!(r.published, [(7, Err(Error::Unauthorized))]);
    assert_eq!(r.s.subscribe("d", None, r.now), Err(Error::Closed));
}

fn app_tokens() -> Rig {
    Rig::with(Config { await_token: true, ..config() })
}

#[test]
fn app_token_is_awaited_before_the_first_connection() {
    let mut r = app_tokens();
    r.s.subscribe("c", None, r.now).unwrap();
    assert!(r.connects.is_empty(), "no connection without a token");
    assert_eq!(r.s.poll_timeout(), None, "nothing to do but wait for the token");
    r.input(Input::Token(Some("t 1".into())));
    assert_eq!(r.connects.len(), 1);
    assert_eq!(r.urls[0].1, "ws://example.test:80/ws?access_token=t%201");
}

#[test]
fn refused_app_token_is_replaced_before_the_next_attempt() {
    let mut r = app_tokens();
    r.s.subscribe("c", None, r.now).unwrap();
    r.input(Input::Token(Some("t1".into())));
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
    r.recv(event("c", "ep-1", "1"));
    r.close(TransportError::Closed { code: 4401, reason: "token expired".into() });
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { .. }));
    r.advance_to_timeout();
    assert_eq!(r.connects.len(), 1, "the refused token is not tried again");
    r.input(Input::Token(Some("t2".into())));
    assert_eq!(r.connects.len(), 2);
    assert!(r.urls[1].1.ends_with("?access_token=t2"));
    r.open();
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("ep-1"), "the cursor survives the refusal");
}

#[test]
fn app_token_handed_in_early_still_waits_for_the_backoff() {
    let mut r = app_tokens();
    r.input(Input::Token(Some("t1".into())));
    r.close(TransportError::Status { status: 401, retry_after: None });
    let ConnectionState::Disconnected { retry_at, .. } = r.last_state().clone() else { panic!() };
    r.input(Input::Token(Some("t2".into())));
    assert_eq!(r.connects.len(), 1, "a refusal is followed by the usual backoff");
    r.advance_to_timeout();
    assert_eq!(r.now, retry_at);
    assert_eq!(r.connects.len(), 2);
    assert!(r.urls[1].1.ends_with("?access_token=t2"));
}

#[test]
fn three_refusals_of_app_tokens_stop_the_client() {
    let mut r = app_tokens();
    r.input(Input::Token(Some("t1".into())));
    // In-band refusals, as a server tells a browser: close code, error frame, status.
    r.close(TransportError::Closed { code: 4401, reason: String::new() });
    r.advance_to_timeout();
    r.input(Input::Token(Some("t2".into())));
    r.input(Input::Opened { conn: r.conn() });
    r.recv(encode_server(&ServerFrame::Error {
        code: "unauthorized".into(),
        channel: None,
        key: None,
        message: "bad token".into(),
    }));
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { .. }));
    r.advance_to_timeout();
    r.input(Input::Token(Some("t3".into())));
    assert_eq!(r.connects.len(), 3);
    r.close(TransportError::Status { status: 401, retry_after: None });
    assert_eq!(r.last_state(), &ConnectionState::Closed { error: Some(Error::Unauthorized) });
}

#[test]
fn failing_to_get_an_app_token_counts_as_a_refusal() {
    let mut r = app_tokens();
    r.input(Input::Token(None));
    let ConnectionState::Disconnected { reason, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(reason, DisconnectReason::Refused { status: 401 });
    r.advance_to_timeout();
    assert!(r.connects.is_empty());
    r.input(Input::Token(None));
    r.input(Input::Token(None));
    assert_eq!(r.last_state(), &ConnectionState::Closed { error: Some(Error::Unauthorized) });
    assert!(r.connects.is_empty());
}

#[test]
fn failing_to_get_an_app_token_offline_is_not_a_refusal() {
    let mut r = app_tokens();
    r.input(Input::Token(Some("t1".into())));
    r.open();
    r.input(Input::Offline);
    r.close(TransportError::Lost("network down".into()));
    // A provider that fetches its token fails while the network is down.
    for _ in 0..super::super::AUTH_REFUSALS + 1 {
        r.input(Input::Token(None));
    }
    assert!(!r.s.is_closed(), "not stopped for credentials that were never refused");
    r.advance_to_timeout();
    assert_eq!(r.connects.len(), 1);
    r.input(Input::Online);
    assert_eq!(r.connects.len(), 1, "back online, still waiting for a token");
    r.input(Input::Token(Some("t2".into())));
    assert_eq!(r.connects.len(), 2);
    assert!(r.urls[1].1.ends_with("?access_token=t2"));
}

#[test]
fn a_probe_refused_for_its_app_token_is_not_tried_again_on_that_link() {
    for refused in [true, false] {
        let mut r = Rig::with(Config {
            await_token: true,
            transports: vec![Transport::WebSocket, Transport::Sse],
            // Before the heartbeat deadline (twice the welcome's 1 s).
            upgrade_probe: Some(Duration::from_millis(500)),
            ..config()
        });
        r.input(Input::Token(Some("t1".into())));
        r.close(TransportError::Status { status: 403, retry_after: None });
        r.input(Input::Token(Some("t1".into())));
        r.advance_to_timeout();
        assert_eq!(r.urls.last().unwrap().0, Transport::Sse, "fell back");
        r.open();
        assert!(r.s.timers.is_set(Timer::Probe));
        r.now = r.s.timers.0[Timer::Probe as usize].unwrap();
        r.s.handle_timeout(r.now);
        r.drain();
        let (transport, _) = r.urls.last().unwrap();
        assert_eq!(*transport, Transport::WebSocket, "probing");
        let error = if refused {
            TransportError::Closed { code: 4401, reason: "expired".into() }
        } else {
            TransportError::Connect("refused".into())
        };
        r.close(error);
        assert!(matches!(r.last_state(), ConnectionState::Connected { .. }), "the working link stays");
        assert_eq!(r.s.timers.is_set(Timer::Probe), !refused, "probe again later unless the token was refused");
    }
}

#[test]
fn every_reconnection_waits_for_a_fresh_app_token() {
    let mut r = app_tokens();
    r.input(Input::Token(Some("t1".into())));
    r.open();
    r.input(Input::Token(Some("t2".into())));
    // A failed refresh leaves the token in use alone.
    r.input(Input::Token(None));
    assert!(r.disconnects.is_empty(), "a new token does not cut a working connection");
    assert!(matches!(r.last_state(), ConnectionState::Connected { .. }));
    r.close(TransportError::Lost("reset".into()));
    r.advance_to_timeout();
    assert_eq!(r.connects.len(), 1, "the next connection waits for a token asked after the drop");
    r.input(Input::Token(Some("t3".into())));
    assert_eq!(r.connects.len(), 2);
    assert!(r.urls[1].1.ends_with("?access_token=t3"));
}

#[test]
fn tls_failure_is_not_retried() {
    let mut r = Rig::new();
    r.close(TransportError::Tls("invalid peer certificate: UnknownIssuer".into()));
    assert!(matches!(r.last_state(), ConnectionState::Closed { error: Some(Error::Tls(_)) }));
}

#[test]
fn failure_count_resets_only_after_a_healthy_period() {
    let mut r = Rig::new();
    // A server that accepts and drops at once: the count keeps growing.
    for expected in 1..=4 {
        r.open();
        r.close(TransportError::Lost("eof".into()));
        let ConnectionState::Disconnected { attempt, .. } = r.last_state().clone() else { panic!() };
        assert_eq!(attempt, expected);
        r.advance_to_timeout();
    }
    // One that stays up past `healthy_after` resets it.
    r.open();
    r.now += Duration::from_millis(1000);
    r.recv(encode_server(&ServerFrame::Ping));
    r.close(TransportError::Lost("eof".into()));
    let ConnectionState::Disconnected { attempt, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(attempt, 1);
}

#[test]
fn max_attempts_stops_with_retries_exhausted() {
    let mut cfg = config();
    cfg.backoff.max_attempts = Some(3);
    let mut r = Rig::with(cfg);
    for _ in 0..2 {
        r.close(TransportError::Connect("refused".into()));
        r.advance_to_timeout();
    }
    r.close(TransportError::Connect("refused".into()));
    assert!(matches!(
        r.last_state(),
        ConnectionState::Closed { error: Some(Error::RetriesExhausted { attempts: 3, .. }) }
    ));
}

#[test]
fn truncated_history_gives_a_typed_reset_and_moves_the_cursor() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("ep-2".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Reset, Some(WireResetReason::HistoryTruncated), "ep-90"));
    assert_eq!(
        r.delivered,
        [Message::Reset { channel: "c".into(), reason: ResetReason::HistoryTruncated, head: "ep-90".into() }]
    );
    r.recv(event("c", "ep-91", "91"));
    assert_eq!(r.events(), ["91"]);
    // After a drop, it resumes after the event it delivered, not the old cursor.
    r.close(TransportError::Lost("eof".into()));
    r.advance_to_timeout();
    r.open();
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("ep-91"));
}

#[test]
fn live_epoch_change_is_reported_and_followed() {
    let mut r = Rig::new();
    r.s.subscribe("c", None, r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "a-5"));
    r.recv(encode_server(&ServerFrame::Reset {
        channel: "c".into(),
        reason: WireResetReason::EpochChanged,
        head: "b-0".into(),
    }));
    r.recv(event("c", "b-1", "x"));
    assert!(matches!(&r.delivered[0], Message::Reset { reason: ResetReason::EpochChanged, .. }));
    assert_eq!(r.events(), ["x"]);
}

#[test]
fn a_cursor_the_server_ignored_is_reported_as_a_reset() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("a-3".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "a-9"));
    assert!(matches!(&r.delivered[0], Message::Reset { reason: ResetReason::UnknownCursor, .. }));
}

#[test]
fn many_subscriptions_share_one_connection() {
    let mut r = Rig::new();
    for i in 0..100 {
        r.s.subscribe(&format!("ch{i}"), None, r.now).unwrap();
    }
    r.open();
    assert_eq!(r.connects.len(), 1);
    let subs = r.sent.iter().filter(|(_, f)| matches!(f, ClientFrame::Subscribe { .. })).count();
    assert_eq!(subs, 100);
    assert_eq!(r.s.subscribe("ch7", None, r.now), Err(Error::AlreadySubscribed("ch7".into())));
}

#[test]
fn inputs_about_a_replaced_connection_are_ignored() {
    let mut r = Rig::new();
    let old = r.conn();
    r.close(TransportError::Connect("refused".into()));
    r.advance_to_timeout();
    r.open();
    r.input(Input::Closed { conn: old, error: TransportError::Lost("late".into()) });
    r.input(Input::Received { conn: old, text: "garbage".into() });
    assert!(matches!(r.last_state(), ConnectionState::Connected { .. }));
}

#[test]
fn an_oversized_frame_stops_with_a_typed_error_instead_of_retrying_forever() {
    let mut cfg = config();
    cfg.max_frame_bytes = 64;
    let mut r = Rig::with(cfg);
    r.open();
    r.recv(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(100)));
    assert_eq!(*r.last_state(), ConnectionState::Closed { error: Some(Error::FrameTooLarge { limit: 64 }) });
}

#[test]
fn a_driver_reporting_an_oversized_frame_stops_the_session() {
    let mut r = Rig::new();
    r.open();
    r.close(TransportError::TooLarge { limit: 1024 });
    assert_eq!(*r.last_state(), ConnectionState::Closed { error: Some(Error::FrameTooLarge { limit: 1024 }) });
}

#[test]
fn malformed_frames_are_protocol_errors() {
    let mut cfg = config();
    cfg.max_frame_bytes = 64;
    for bad in ["{not json", "\"a string\""] {
        let mut r = Rig::with(cfg.clone());
        r.open();
        r.recv(bad.to_string());
        assert!(
            matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::Protocol(_), .. }),
            "{bad}"
        );
    }
}

#[test]
fn publish_is_resent_with_the_same_key_after_a_drop() {
    let mut r = Rig::new();
    r.s.publish(1, "c", None, "hello".into()).unwrap();
    r.open();
    let ClientFrame::Publish { key: k1, .. } = r.sent.last().unwrap().1.clone() else { panic!() };
    r.close(TransportError::Lost("eof".into()));
    r.advance_to_timeout();
    r.open();
    let ClientFrame::Publish { key: k2, .. } = r.sent.last().unwrap().1.clone() else { panic!() };
    assert_eq!(k1, k2);
    r.recv(encode_server(&ServerFrame::Ack { key: k2, id: "e-1".into() }));
    assert_eq!(r.published, [(1, Ok("e-1".into()))]);
}

#[test]
fn publish_queue_is_bounded() {
    let mut cfg = config();
    cfg.max_pending_publishes = 2;
    let mut r = Rig::with(cfg);
    r.s.publish(1, "c", None, "a".into()).unwrap();
    r.s.publish(2, "c", None, "b".into()).unwrap();
    assert_eq!(r.s.publish(3, "c", None, "c".into()), Err(Error::PublishQueueFull { waiting: 2, bytes: 2 }));
}

#[test]
fn the_outbox_is_bounded_in_bytes_and_frees_them_on_ack() {
    let mut cfg = config();
    cfg.max_pending_publish_bytes = 10;
    let mut r = Rig::with(cfg);
    r.s.publish(1, "c", Some("ev".into()), "123".into()).unwrap(); // 5 bytes with its type
    r.s.publish(2, "c", None, "12345".into()).unwrap(); // 10 in all
    let full = r.s.publish(3, "c", None, "1".into());
    assert_eq!(full, Err(Error::PublishQueueFull { waiting: 2, bytes: 10 }));
    assert_eq!(full.unwrap_err().code(), "publish_queue_full");
    assert!(r.s.publish(4, "c", None, "x".repeat(11)).is_err(), "one publish over the limit is refused");
    // Acks make room, byte for byte.
    r.open();
    let keys: Vec<String> = r
        .sent
        .iter()
        .filter_map(|(_, f)| match f {
            ClientFrame::Publish { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2);
    r.recv(encode_server(&ServerFrame::Ack { key: keys[0].clone(), id: "e-1".into() }));
    r.s.publish(5, "c", None, "12345".into()).unwrap();
    assert!(r.s.publish(6, "c", None, "1".into()).is_err(), "10 bytes wait again");
    // Closing fails what waits and empties the outbox.
    r.s.close();
    r.drain();
    assert_eq!(r.published.iter().filter(|(_, res)| res == &Err(Error::Closed)).count(), 2);
}

#[test]
fn forbidden_channel_ends_only_that_subscription() {
    let mut r = Rig::new();
    r.s.subscribe("ok", None, r.now).unwrap();
    r.s.subscribe("secret", None, r.now).unwrap();
    r.open();
    r.recv(encode_server(&ServerFrame::Error {
        code: "forbidden".into(),
        channel: Some("secret".into()),
        key: None,
        message: "no".into(),
    }));
    assert!(matches!(&r.ended[..], [(c, Error::Forbidden { .. })] if c == "secret"));
    assert!(matches!(r.last_state(), ConnectionState::Connected { .. }));
}

#[test]
fn base_urls_map_to_the_endpoints() {
    let e = |u: &str| endpoints(u).unwrap();
    assert_eq!(e("http://h:1"), ("http://h:1".into(), "ws://h:1/ws".into()));
    assert_eq!(e("https://h/api/"), ("https://h/api".into(), "wss://h/api/ws".into()));
    assert_eq!(e("wss://h/ws"), ("https://h".into(), "wss://h/ws".into()));
    assert_eq!(e("http://[::1]:8080/p"), ("http://[::1]:8080/p".into(), "ws://[::1]:8080/p/ws".into()));
    assert_eq!(e("http://[::1]"), ("http://[::1]".into(), "ws://[::1]/ws".into()));
    assert_eq!(e("http://127.0.0.1:65535"), ("http://127.0.0.1:65535".into(), "ws://127.0.0.1:65535/ws".into()));
    for bad in [
        "h:1",
        "ftp://h",
        "http://",
        "http://h/?x=1",
        "http://h /",
        "https://[::1",
        "https://[::1]x",
        "https://[nope]:1",
        "http://h:",
        "http://h:65536",
        "http://h:8o",
        "http://:80",
        "http://user:pw@h",
        "http://h%20x",
    ] {
        let err = endpoints(bad).unwrap_err();
        assert_eq!(err.code(), "invalid_url", "{bad}");
    }
}

#[test]
fn an_empty_transport_list_is_refused_at_creation() {
    let mut cfg = config();
    cfg.transports = vec![];
    let err = Session::new(cfg, "http://h", seeds(1), Instant::now()).unwrap_err();
    assert_eq!(err.code(), "invalid_argument");
}

#[test]
fn wake_replaces_an_sse_stream_with_a_fresh_one_that_must_greet_quickly() {
    let mut r = with_transports(&[Transport::Sse]);
    r.s.subscribe("c", Some("E-3".parse().unwrap()), r.now).unwrap();
    r.advance_to_timeout();
    r.open();
    r.recv(subscribed("c", Outcome::Resumed, None, "E-3"));
    r.recv(event("c", "E-4", "x"));
    let old = r.conn();
    r.now += Duration::from_secs(30);
    r.recv(encode_server(&ServerFrame::Ping));
    r.input(Input::Wake);
    assert_eq!(r.disconnects.last(), Some(&old), "the doubted stream is closed");
    assert_ne!(r.conn(), old);
    assert!(r.urls.last().unwrap().1.ends_with("channel=c@E-4"), "resuming from the cursor");
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_secs(3)), "the liveness deadline");
    // A stream that does not greet in time is a dead link: replaced again.
    r.input(Input::Opened { conn: r.conn() });
    r.advance_to_timeout();
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::HeartbeatTimeout, .. }));
    // One that greets goes on, with nothing to tell the application.
    let mut r = with_transports(&[Transport::Sse]);
    r.open();
    let states = r.states.len();
    r.input(Input::Wake);
    r.open();
    assert_eq!(r.states.len(), states, "no new state: the link never broke");
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_secs(2)), "the heartbeat deadline again");
}

#[test]
fn wake_replaces_a_held_poll_with_one_answered_at_once() {
    let mut r = with_transports(&[Transport::LongPoll]);
    r.s.subscribe("c", Some("E-3".parse().unwrap()), r.now).unwrap();
    r.advance_to_timeout();
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.input(Input::Received {
        conn,
        text: batch(&[ServerFrame::Welcome { heartbeat_ms: 0 }, sub_frame("c", Outcome::Resumed, "E-3")]),
    });
    r.input(Input::Closed { conn, error: TransportError::Completed });
    assert!(r.urls.last().unwrap().1.ends_with("timeout_ms=25000"), "held: {:?}", r.urls.last());
    let held = r.conn();
    r.input(Input::Wake);
    assert_eq!(r.disconnects.last(), Some(&held));
    assert!(r.urls.last().unwrap().1.ends_with("channel=c@E-3&timeout_ms=0"), "{:?}", r.urls.last());
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_secs(3)));
    r.advance_to_timeout();
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::HeartbeatTimeout, .. }));
}

#[test]
fn a_failing_token_provider_is_reported_as_such_and_counted_as_a_refusal() {
    let mut cfg = config();
    cfg.refresh_auth = true;
    let mut r = Rig::with(cfg);
    r.close(TransportError::NoCredentials("the token provider failed: boom".into()));
    let ConnectionState::Disconnected { reason, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(reason.code(), "no_credentials");
    assert!(reason.to_string().contains("boom"), "{reason}");
    r.advance_to_timeout();
    r.close(TransportError::NoCredentials("boom".into()));
    r.advance_to_timeout();
    r.close(TransportError::NoCredentials("boom".into()));
    assert_eq!(*r.last_state(), ConnectionState::Closed { error: Some(Error::Unauthorized) });
}

// ---------------------------------------------------------------------------
// Randomized fault schedules against a model server.

/// An in-memory server that follows PROTOCOL.md on one transport, with faults.
struct Model {
    transport: Transport,
    channels: BTreeMap<String, ModelChannel>,
    conn: Option<ModelConn>,
    /// Frames on their way to the client, in order.
    wire: VecDeque<String>,
    refuse_next: u32,
    epochs: u32,
    /// Heads sent in `live` answers that reached the wire.
    live_starts: Vec<(String, EventId)>,
    /// A faulty fan-out: the next live event is not sent.
    lose_next: bool,
}

struct ModelChannel {
    epoch: String,
    /// data of seq 1..=len
    events: Vec<String>,
    /// Lowest retained seq.
    oldest: u64,
}

struct ModelConn {
    id: ConnId,
    subs: BTreeSet<String>,
    stalled: bool,
    /// A held long-poll request: the cursors it carries.
    poll: Option<Vec<(String, Option<String>)>>,
}

impl ModelChannel {
    fn head(&self) -> EventId {
        EventId::new(self.epoch.clone(), self.events.len() as u64).unwrap()
    }
}

/// The `channel` parameters of an SSE or poll URL.
fn url_channels(url: &str) -> Vec<(String, Option<String>)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("channel="))
        .map(|v| match v.split_once('@') {
            Some((c, cur)) => (c.to_owned(), Some(cur.to_owned())),
            None => (v.to_owned(), None),
        })
        .collect()
}

impl Model {
    fn live(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.stalled && c.poll.is_none())
    }

    fn frame(&mut self, f: &ServerFrame) {
        if self.live() {
            self.wire.push_back(encode_server(f));
        }
    }

    /// The `subscribed` answer and the replay for one channel (PROTOCOL.md §4).
    fn answer(&mut self, channel: &str, cursor: Option<String>, rng: &mut SmallRng) -> Vec<ServerFrame> {
        let ch = &self.channels[channel];
        let head = ch.head();
        let (outcome, reason, replay_from) = match cursor.map(|c| c.parse::<EventId>().unwrap()) {
            None => (Outcome::Live, None, None),
            Some(c) if c.epoch() != ch.epoch => (Outcome::Reset, Some(WireResetReason::EpochChanged), None),
            Some(c) if c.seq() + 1 < ch.oldest => (Outcome::Reset, Some(WireResetReason::HistoryTruncated), None),
            Some(c) => (Outcome::Resumed, None, Some(c.seq() + 1)),
        };
        let mut frames =
            vec![ServerFrame::Subscribed { channel: channel.into(), outcome, reason, head: head.to_string() }];
        if let Some(from) = replay_from {
            // Sometimes replay a little from before the cursor, as an
            // at-least-once server may.
            let back = if rng.random_bool(0.2) { rng.random_range(1..3) } else { 0 };
            let from = from.saturating_sub(back).max(ch.oldest).max(1);
            for seq in from..=ch.events.len() as u64 {
                frames.push(ServerFrame::Event {
                    channel: channel.into(),
                    id: format!("{}-{seq}", ch.epoch).into(),
                    event: None,
                    data: ch.events[seq as usize - 1].clone(),
                });
            }
        }
        if outcome == Outcome::Live {
            self.live_starts.push((channel.into(), head));
        }
        frames
    }

    fn subscribe(&mut self, channel: String, cursor: Option<String>, rng: &mut SmallRng) {
        if !self.live() {
            return;
        }
        let frames = self.answer(&channel, cursor, rng);
        if let Some(c) = self.conn.as_mut() {
            c.subs.insert(channel);
        }
        for f in &frames {
            self.frame(f);
        }
    }

    /// Answers a held poll: welcome, a `subscribed` per channel, events.
    fn answer_poll(&mut self, rng: &mut SmallRng) -> Option<(ConnId, String)> {
        let c = self.conn.as_ref()?;
        if c.stalled {
            return None;
        }
        let (id, channels) = (c.id, c.poll.clone()?);
        // Held until an event follows a cursor (or a reset or live answer is
        // due), or until the hold time runs out, here at random.
        let due = channels.iter().any(|(ch, cursor)| {
            let mc = &self.channels[ch];
            cursor.as_ref().is_none_or(|c| c.parse::<EventId>().unwrap() != mc.head())
        });
        if !due && !rng.random_bool(0.2) {
            return None;
        }
        let mut frames = vec![ServerFrame::Welcome { heartbeat_ms: 1000 }];
        for (ch, cursor) in channels {
            frames.extend(self.answer(&ch, cursor, rng));
        }
        self.conn = None;
        Some((id, batch(&frames)))
    }

    fn publish(&mut self, channel: &str, data: String, dup: bool) {
        let ch = self.channels.get_mut(channel).unwrap();
        ch.events.push(data.clone());
        let f = ServerFrame::Event { channel: channel.into(), id: ch.head().to_string().into(), event: None, data };
        if std::mem::take(&mut self.lose_next) {
            return;
        }
        if self.conn.as_ref().is_some_and(|c| c.subs.contains(channel)) {
            self.frame(&f);
            if dup {
                self.frame(&f);
            }
        }
    }
}

/// Per channel, what the application saw must be the published sequence,
/// exactly once and in order, broken only by resets whose reason matches a
/// fault that was injected.
struct Checker {
    pos: BTreeMap<String, EventId>,
    injected: BTreeMap<String, BTreeSet<&'static str>>,
}

impl Checker {
    fn check(&mut self, m: &Message, model: &Model, seed: u64) {
        match m {
            Message::Event(e) => {
                let pos = self.pos.get_mut(e.channel.as_str()).unwrap();
                let id: EventId = e.id.parse().unwrap();
                assert_eq!(id.epoch(), pos.epoch(), "seed {seed}: epoch jump without reset on {}", e.channel);
                assert_eq!(id.seq(), pos.seq() + 1, "seed {seed}: {} after {pos} on {}", e.id, e.channel);
                let ch = &model.channels[e.channel.as_str()];
                if ch.epoch == id.epoch() {
                    assert_eq!(e.data, ch.events[id.seq() as usize - 1], "seed {seed}: wrong data for {}", e.id);
                }
                *pos = id;
            }
            Message::Reset { channel, reason, head } => {
                let allowed = self.injected.get(channel).cloned().unwrap_or_default();
                assert!(
                    allowed.contains(reason.as_str()),
                    "seed {seed}: reset {reason} on {channel} without such a fault"
                );
                self.pos.insert(channel.clone(), head.parse().unwrap());
            }
            Message::Resumed { .. } => {}
            Message::Presence(p) => panic!("seed {seed}: presence without a client id: {p:?}"),
        }
    }
}

fn run_schedule(seed: u64, transport: Transport) -> (Stats, u32) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut now = Instant::now();
    let channels = ["a", "b", "c"];
    let mut model = Model {
        transport,
        channels: BTreeMap::new(),
        conn: None,
        wire: VecDeque::new(),
        refuse_next: 0,
        epochs: 0,
        live_starts: vec![],
        lose_next: false,
    };
    let mut checker = Checker { pos: BTreeMap::new(), injected: BTreeMap::new() };
    for ch in channels {
        let mut mc = ModelChannel { epoch: "e0".into(), events: vec![], oldest: 1 };
        for i in 0..rng.random_range(0..5) {
            mc.events.push(format!("{ch}-pre-{i}"));
        }
        model.channels.insert(ch.into(), mc);
    }
    let mut cfg = config();
    cfg.transports = vec![transport];
    cfg.poll_hold = Duration::from_secs(2);
    let mut s = Session::new(cfg, "http://model", seeds(seed), now).unwrap();
    for ch in channels {
        // Start from a random point of the existing history, or live.
        let from = if rng.random_bool(0.5) {
            let mc = &model.channels[ch];
            Some(EventId::new("e0", rng.random_range(0..=mc.events.len() as u64)).unwrap())
        } else {
            None
        };
        if let Some(f) = &from {
            checker.pos.insert(ch.into(), f.clone());
        }
        s.subscribe(ch, from, now).unwrap();
    }
    let mut faults = 0;
    let mut published = 0;
    let steps = rng.random_range(50..150);
    for step in 0..steps + 400 {
        let healing = step >= steps;
        // Carry out what the session asked for.
        while let Some(o) = s.poll_output() {
            match o {
                Output::Connect { conn, url, .. } => {
                    if model.refuse_next > 0 && !healing {
                        model.refuse_next -= 1;
                        let retry_after = Some(Duration::from_millis(rng.random_range(0..3000)));
                        let error = TransportError::Status { status: 503, retry_after };
                        s.handle_input(Input::Closed { conn, error }, now);
                        continue;
                    }
                    model.wire.clear();
                    let poll = (model.transport == Transport::LongPoll).then(|| url_channels(&url));
                    model.conn = Some(ModelConn { id: conn, subs: BTreeSet::new(), stalled: false, poll });
                    if model.transport != Transport::LongPoll {
                        s.handle_input(Input::Opened { conn }, now);
                        model.frame(&ServerFrame::Welcome { heartbeat_ms: 1000 });
                    }
                    if model.transport == Transport::Sse {
                        for (ch, cursor) in url_channels(&url) {
                            model.subscribe(ch, cursor, &mut rng);
                        }
                    }
                }
                Output::Send { conn, text } => {
                    if model.conn.as_ref().is_some_and(|c| c.id == conn)
                        && let ClientFrame::Subscribe { channel, cursor } = serde_json::from_str(&text).unwrap()
                    {
                        model.subscribe(channel, cursor, &mut rng);
                    }
                }
                Output::Disconnect { conn } => {
                    if model.conn.as_ref().is_some_and(|c| c.id == conn) {
                        model.conn = None;
                        model.wire.clear();
                    }
                }
                Output::Deliver { message, .. } => {
                    if let Message::Event(e) = &message
                        && !checker.pos.contains_key(e.channel.as_str())
                    {
                        panic!("seed {seed}: event before subscription start on {}", e.channel);
                    }
                    checker.check(&message, &model, seed);
                }
                Output::State(ConnectionState::Closed { error }) => {
                    panic!("seed {seed}: closed: {error:?}")
                }
                Output::State(_) => {}
                Output::SubscriptionEnded { channel, error } => {
                    panic!("seed {seed}: {channel} ended: {error}")
                }
                Output::PublishDone { .. } | Output::Post { .. } => {}
            }
        }
        // A subscription started live begins after the head its `subscribed`
        // names; the checker starts there too (the last such answer counts).
        for (ch, head) in model.live_starts.drain(..) {
            checker.pos.insert(ch, head);
        }
        if step == steps {
            // Later events reveal any event a faulty fan-out lost.
            model.lose_next = false;
            for ch in channels {
                published += 1;
                model.publish(ch, format!("{ch}-{published}"), false);
            }
        }
        let action = if healing { 99 } else { rng.random_range(0..100) };
        let conn_id = model.conn.as_ref().map(|c| c.id);
        match action {
            0..=39 => {
                let ch = channels[rng.random_range(0..channels.len())];
                published += 1;
                let dup = rng.random_bool(0.05);
                model.publish(ch, format!("{ch}-{published}"), dup);
            }
            40..=44 if conn_id.is_some() => {
                // Abrupt drop: some frames in flight arrive, the rest are lost.
                faults += 1;
                let keep = rng.random_range(0..=model.wire.len());
                model.wire.truncate(keep);
                while let Some(t) = model.wire.pop_front() {
                    s.handle_input(Input::Received { conn: conn_id.unwrap(), text: t }, now);
                }
                model.conn = None;
                let error = TransportError::Lost("reset".into());
                s.handle_input(Input::Closed { conn: conn_id.unwrap(), error }, now);
            }
            45..=46 if conn_id.is_some() => {
                faults += 1;
                model.conn.as_mut().unwrap().stalled = true;
            }
            47 => {
                faults += 1;
                model.refuse_next = rng.random_range(1..4);
            }
            48 => {
                faults += 1;
                let ch = channels[rng.random_range(0..channels.len())];
                let mc = model.channels.get_mut(ch).unwrap();
                mc.oldest = (mc.events.len() as u64 + 1).saturating_sub(rng.random_range(0..3));
                mc.oldest = mc.oldest.max(1);
                checker.injected.entry(ch.into()).or_default().insert("history_truncated");
            }
            49 => {
                faults += 1;
                let ch = channels[rng.random_range(0..channels.len())];
                model.epochs += 1;
                let mc = model.channels.get_mut(ch).unwrap();
                mc.epoch = format!("e{}", model.epochs);
                mc.events.clear();
                mc.oldest = 1;
                let head = mc.head().to_string();
                checker.injected.entry(ch.into()).or_default().insert("epoch_changed");
                if model.conn.as_ref().is_some_and(|c| c.subs.contains(ch)) {
                    let reason = WireResetReason::EpochChanged;
                    model.frame(&ServerFrame::Reset { channel: ch.into(), reason, head });
                }
            }
            50 if model.transport != Transport::LongPoll => {
                faults += 1;
                model.lose_next = true;
            }
            _ => {
                // Let time pass: deliver what is on the wire, answer a held
                // poll, heartbeats, timers.
                let step = Duration::from_millis(rng.random_range(1..700));
                let target = now + step;
                if model.live() {
                    model.wire.push_back(encode_server(&ServerFrame::Ping));
                }
                while let Some(t) = model.wire.pop_front() {
                    s.handle_input(Input::Received { conn: conn_id.unwrap(), text: t }, now);
                }
                if let Some((conn, body)) = model.answer_poll(&mut rng) {
                    for (ch, head) in model.live_starts.drain(..) {
                        checker.pos.insert(ch, head);
                    }
                    s.handle_input(Input::Opened { conn }, now);
                    s.handle_input(Input::Received { conn, text: body }, now);
                    s.handle_input(Input::Closed { conn, error: TransportError::Completed }, now);
                }
                match s.poll_timeout() {
                    Some(t) if t <= target => {
                        now = t;
                        s.handle_timeout(now);
                    }
                    _ => now = target,
                }
            }
        }
    }
    // Healed and quiet: everything published must have arrived.
    for ch in channels {
        let head = model.channels[ch].head();
        assert_eq!(checker.pos.get(ch), Some(&head), "seed {seed} ({transport}): {ch} ended short of the head");
    }
    (s.stats(), faults)
}

#[test]
fn randomized_fault_schedules_keep_the_delivery_promise() {
    // A browser has no environment, and runs the debug build slower: fewer there.
    let default = if cfg!(target_arch = "wasm32") { 5_000 } else { 10_000 };
    let schedules: u64 = std::env::var("RESUB_SCHEDULES").ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let base: u64 = std::env::var("RESUB_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let mut total = Stats::default();
    let mut faults = 0u64;
    for i in 0..schedules {
        // Each schedule runs on one transport, in turn.
        let transport = Transport::ALL[(i % 3) as usize];
        let (st, f) = run_schedule(base.wrapping_add(i), transport);
        total.delivered += st.delivered;
        total.duplicates += st.duplicates;
        total.resets += st.resets;
        total.connections += st.connections;
        faults += u64::from(f);
    }
    eprintln!(
        "{schedules} schedules over ws, sse and poll: {} delivered, {} duplicates dropped, {} resets, {} connections, {faults} faults",
        total.delivered, total.duplicates, total.resets, total.connections
    );
    assert!(total.duplicates > 0 && total.resets > 0 && faults > schedules, "the schedules exercised too little");
}

// ---------------------------------------------------------------------------
// Transports: fallback, long polling, re-upgrade, HTTP publishing.

fn batch(frames: &[ServerFrame]) -> String {
    let frames: Vec<serde_json::Value> = frames.iter().map(|f| serde_json::to_value(f).unwrap()).collect();
    serde_json::json!({ "frames": frames }).to_string()
}

fn sub_frame(channel: &str, outcome: Outcome, head: &str) -> ServerFrame {
    ServerFrame::Subscribed { channel: channel.into(), outcome, reason: None, head: head.into() }
}

fn ev_frame(channel: &str, id: &str) -> ServerFrame {
    ServerFrame::Event { channel: channel.into(), id: id.into(), event: None, data: id.into() }
}

fn with_transports(ts: &[Transport]) -> Rig {
    let mut cfg = config();
    cfg.transports = ts.to_vec();
    cfg.upgrade_probe = Some(Duration::from_secs(30));
    Rig::with(cfg)
}

#[test]
fn a_refused_websocket_falls_back_to_sse_at_once() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("ep-4".parse().unwrap()), r.now).unwrap();
    assert_eq!(r.urls[0], (Transport::WebSocket, "ws://example.test:80/ws".into()));
    let t0 = r.now;
    r.close(TransportError::Status { status: 403, retry_after: None });
    let ConnectionState::Disconnected { retry_at, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(retry_at, t0, "no backoff before trying the next transport");
    r.advance_to_timeout();
    assert_eq!(r.urls[1], (Transport::Sse, "http://example.test:80/sse?channel=c@ep-4".into()));
    r.open();
    let ConnectionState::Connected { transport, fallback, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(transport, Transport::Sse);
    let fallback = fallback.expect("the state says why");
    assert_eq!(fallback.from, Transport::WebSocket);
    assert_eq!(fallback.reason, DisconnectReason::Refused { status: 403 });
    assert!(r.sent.is_empty(), "nothing is sent on SSE: the subscriptions are in the URL");
}

#[test]
fn an_ordinary_drop_does_not_fall_back_and_what_worked_is_remembered() {
    let mut r = Rig::new();
    r.close(TransportError::Status { status: 426, retry_after: None });
    r.advance_to_timeout();
    r.open();
    r.close(TransportError::Lost("reset".into()));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().0, Transport::Sse);
    // A drop of a working WebSocket does not fall back either.
    let mut r = Rig::new();
    r.open();
    r.close(TransportError::Lost("reset".into()));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().0, Transport::WebSocket);
}

#[test]
fn a_server_that_is_down_is_retried_on_the_same_transport() {
    let mut r = Rig::new();
    for _ in 0..3 {
        r.close(TransportError::Connect("connection refused".into()));
        r.advance_to_timeout();
    }
    assert!(r.urls.iter().all(|(t, _)| *t == Transport::WebSocket));
}

#[test]
fn an_open_timeout_on_a_transport_that_never_worked_falls_back() {
    let mut r = Rig::new();
    r.advance_to_timeout();
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::OpenTimeout, .. }));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().0, Transport::Sse);
}

#[test]
fn every_transport_refused_starts_again_from_the_top_with_backoff() {
    let mut r = Rig::new();
    for _ in 0..3 {
        r.close(TransportError::Status { status: 403, retry_after: None });
        r.advance_to_timeout();
    }
    let kinds: Vec<Transport> = r.urls.iter().map(|(t, _)| *t).collect();
    assert_eq!(kinds, [Transport::WebSocket, Transport::Sse, Transport::LongPoll, Transport::WebSocket]);
}

#[test]
fn long_polling_polls_again_at_once_with_the_new_cursor() {
    let mut r = with_transports(&[Transport::LongPoll]);
    r.s.subscribe("c", None, r.now).unwrap();
    // A subscribe before the first answer reopens the poll with the channel in it.
    r.advance_to_timeout();
    assert_eq!(
        r.urls.last().unwrap().1,
        "http://example.test:80/poll?channel=c&timeout_ms=0",
        "the first poll of a link is answered at once"
    );
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.recv(batch(&[
        ServerFrame::Welcome { heartbeat_ms: 25_000 },
        sub_frame("c", Outcome::Live, "ep-0"),
        ev_frame("c", "ep-1"),
    ]));
    r.close(TransportError::Completed);
    assert_eq!(r.urls.last().unwrap().1, "http://example.test:80/poll?channel=c@ep-1&timeout_ms=25000");
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.recv(batch(&[
        ServerFrame::Welcome { heartbeat_ms: 25_000 },
        sub_frame("c", Outcome::Resumed, "ep-2"),
        ev_frame("c", "ep-2"),
    ]));
    r.close(TransportError::Completed);
    assert_eq!(r.events(), ["ep-1", "ep-2"]);
    let connected = r.states.iter().filter(|s| matches!(s, ConnectionState::Connected { .. })).count();
    assert_eq!(connected, 1, "one connected state for a run of polls: {:?}", r.states);
    assert!(!r.states.iter().any(|s| matches!(s, ConnectionState::Disconnected { .. })));
    assert!(!r.delivered.iter().any(|m| matches!(m, Message::Resumed { .. })), "a repeated poll is not news");
    // A failed poll backs off like any failure.
    r.close(TransportError::Status { status: 502, retry_after: None });
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { .. }));
}

#[test]
fn a_held_poll_that_never_answers_is_replaced() {
    let mut r = with_transports(&[Transport::LongPoll]);
    let t0 = r.now;
    r.advance_to_timeout();
    assert_eq!(r.now, t0 + Duration::from_secs(27), "hold time plus open timeout");
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::OpenTimeout, .. }));
}

#[test]
fn subscribing_on_sse_reopens_the_stream_once() {
    let mut r = with_transports(&[Transport::Sse]);
    r.open();
    r.s.subscribe("a", None, r.now).unwrap();
    r.s.subscribe("b", Some("ep-3".parse().unwrap()), r.now).unwrap();
    r.advance_to_timeout();
    assert_eq!(r.connects.len(), 2);
    assert_eq!(r.disconnects, [r.connects[0]]);
    assert_eq!(r.urls[1].1, "http://example.test:80/sse?channel=a&channel=b@ep-3");
    r.open();
    let connecting = r.states.iter().filter(|s| matches!(s, ConnectionState::Connecting { .. })).count();
    assert_eq!(connecting, 1, "a reopen is not a reconnect: {:?}", r.states);
}

#[test]
fn sse_comments_keep_the_connection_alive() {
    let mut r = with_transports(&[Transport::Sse]);
    r.open();
    r.now += Duration::from_millis(1900);
    let conn = r.conn();
    r.input(Input::Activity { conn });
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_millis(2000)));
}

#[test]
fn sse_204_stops_and_a_wrong_content_type_falls_back() {
    let mut r = with_transports(&[Transport::Sse]);
    r.close(TransportError::Status { status: 204, retry_after: None });
    assert!(matches!(r.last_state(), ConnectionState::Closed { error: Some(Error::BadRequest(_)) }));
    let mut r = with_transports(&[Transport::Sse, Transport::LongPoll]);
    r.close(TransportError::Unsupported("text/html".into()));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().0, Transport::LongPoll);
}

#[test]
fn publish_on_http_transports_posts_with_an_idempotency_key_until_it_lands() {
    let mut r = with_transports(&[Transport::Sse]);
    r.s.publish(1, "c", Some("chat msg".into()), "hi".into()).unwrap();
    assert!(r.posts.is_empty(), "not before the connection is up");
    r.open();
    let (key, url, data) = r.posts[0].clone();
    assert_eq!(url, "http://example.test:80/publish/c?event=chat%20msg");
    assert_eq!(data, "hi");
    r.input(Input::Posted { key: key.clone(), result: Err(PostError::Failed("reset".into())) });
    assert!(r.published.is_empty());
    r.advance_to_timeout();
    assert_eq!(r.posts.len(), 2);
    assert_eq!(r.posts[1].0, key, "the same key, so that the server applies it once");
    r.input(Input::Posted { key, result: Ok("ep-9".into()) });
    assert_eq!(r.published, [(1, Ok("ep-9".into()))]);
    // A refusal is final.
    r.s.publish(2, "c", None, "x".into()).unwrap();
    r.drain();
    let key = r.posts.last().unwrap().0.clone();
    r.input(Input::Posted { key, result: Err(PostError::Status { status: 413, message: "too large".into() }) });
    assert!(matches!(&r.published[1], (2, Err(Error::PublishRejected { code, .. })) if code == "413"));
    // A body shaped like an error frame gives the code and message.
    r.s.publish(3, "c", None, "x".into()).unwrap();
    r.drain();
    let key = r.posts.last().unwrap().0.clone();
    let body = r#"{"code":"forbidden","message":"not this channel"}"#.to_owned();
    r.input(Input::Posted { key, result: Err(PostError::Status { status: 403, message: body }) });
    #[cfg(feature = "json-decode")]
    assert!(matches!(&r.published[2], (3, Err(Error::PublishRejected { code, message }))
        if code == "forbidden" && message == "not this channel"));
}

/// Brings a rig to "connected via SSE after WebSocket was refused", with
/// events up to `ep-3` delivered on channel `c`.
fn on_sse_after_fallback() -> Rig {
    let mut r = with_transports(&Transport::ALL);
    r.s.subscribe("c", Some("ep-0".parse().unwrap()), r.now).unwrap();
    r.close(TransportError::Status { status: 403, retry_after: None });
    r.advance_to_timeout();
    r.open();
    r.recv(subscribed("c", Outcome::Resumed, None, "ep-3"));
    for i in 1..=3 {
        r.recv(event("c", &format!("ep-{i}"), &format!("ep-{i}")));
    }
    r.disconnects.clear();
    r
}

#[test]
fn a_probe_returns_to_websocket_without_loss_or_duplicates() {
    let mut r = on_sse_after_fallback();
    let sse = r.conn();
    let t = r.now;
    r.now = t + Duration::from_secs(30);
    r.recv(encode_server(&ServerFrame::Ping)); // keep SSE alive up to the probe
    r.advance_to_timeout();
    assert_eq!(r.now, t + Duration::from_secs(30));
    let probe = r.conn();
    assert_eq!(r.urls.last().unwrap().0, Transport::WebSocket);
    // The SSE stream keeps delivering while the probe opens.
    r.input(Input::Received { conn: sse, text: event("c", "ep-4", "ep-4") });
    r.input(Input::Opened { conn: probe });
    assert!(r.disconnects.is_empty(), "the working connection stays until the probe is greeted");
    r.input(Input::Received { conn: probe, text: welcome(1000) });
    assert_eq!(r.disconnects, [sse]);
    let ConnectionState::Connected { transport, fallback, .. } = r.last_state().clone() else { panic!() };
    assert_eq!((transport, fallback), (Transport::WebSocket, None));
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("ep-4"), "resubscribes from what was delivered");
    // Late frames from the closed SSE stream are ignored; the WebSocket replays.
    r.input(Input::Received { conn: sse, text: event("c", "ep-5", "ep-5") });
    r.input(Input::Received { conn: probe, text: subscribed("c", Outcome::Resumed, None, "ep-5") });
    r.input(Input::Received { conn: probe, text: event("c", "ep-5", "ep-5") });
    r.input(Input::Received { conn: probe, text: event("c", "ep-6", "ep-6") });
    assert_eq!(r.events(), ["ep-1", "ep-2", "ep-3", "ep-4", "ep-5", "ep-6"]);
}

#[test]
fn a_failed_probe_keeps_the_working_connection_and_tries_later() {
    let mut r = on_sse_after_fallback();
    let sse = r.conn();
    r.now += Duration::from_secs(30);
    r.recv(encode_server(&ServerFrame::Ping));
    r.advance_to_timeout();
    let probe = r.conn();
    r.input(Input::Closed { conn: probe, error: TransportError::Status { status: 403, retry_after: None } });
    assert_eq!(r.disconnects, [probe]);
    assert!(matches!(r.last_state(), ConnectionState::Connected { transport: Transport::Sse, .. }));
    r.input(Input::Received { conn: sse, text: event("c", "ep-4", "ep-4") });
    assert_eq!(r.events().last().unwrap(), "ep-4");
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_secs(2)), "heartbeat first");
}

// ---------------------------------------------------------------------------
// Host signals: network online/offline, wake.

#[test]
fn offline_holds_attempts_until_online_which_reconnects_at_once() {
    let mut r = Rig::new();
    r.input(Input::Offline);
    for _ in 0..3 {
        r.close(TransportError::Connect("unreachable".into()));
        if r.s.poll_timeout().is_some() {
            r.advance_to_timeout();
        }
    }
    assert_eq!(r.connects.len(), 1, "no attempt while offline");
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::Offline, .. }));
    assert_eq!(r.s.poll_timeout(), None);
    r.input(Input::Online);
    assert_eq!(r.connects.len(), 2, "online reconnects at once");
    assert!(matches!(r.last_state(), ConnectionState::Connecting { attempt: 0, .. }), "with the backoff reset");
}

#[test]
fn online_while_waiting_for_backoff_reconnects_now() {
    let mut r = Rig::new();
    for _ in 0..5 {
        r.close(TransportError::Connect("refused".into()));
        r.advance_to_timeout();
    }
    r.close(TransportError::Connect("refused".into()));
    let n = r.connects.len();
    r.input(Input::Online);
    assert_eq!(r.connects.len(), n + 1);
}

#[test]
fn wake_pings_and_replaces_a_dead_websocket_quickly() {
    let mut r = Rig::new();
    r.open();
    let t0 = r.now;
    r.input(Input::Wake);
    assert_eq!(r.sent.last().unwrap().1, ClientFrame::Ping);
    assert_eq!(r.s.poll_timeout(), Some(t0 + Duration::from_millis(2000)), "the heartbeat deadline was already sooner");
    // With a long heartbeat, the probe deadline is what counts.
    let mut r = Rig::new();
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.recv(welcome(60_000));
    r.input(Input::Wake);
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_secs(3)));
    r.advance_to_timeout();
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::HeartbeatTimeout, .. }));
    // A live connection answers, which pushes the deadline back out.
    let mut r = Rig::new();
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.recv(welcome(60_000));
    r.input(Input::Wake);
    r.now += Duration::from_millis(50);
    r.recv(encode_server(&ServerFrame::Ping));
    assert_eq!(r.s.poll_timeout(), Some(r.now + Duration::from_secs(120)));
}

#[test]
fn close_code_hints_parse_as_decimal_seconds() {
    assert_eq!(parse_seconds("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_seconds("2.5"), Some(Duration::from_millis(2500)));
    assert_eq!(parse_seconds("0.125"), Some(Duration::from_millis(125)));
    assert_eq!(parse_seconds("1.23456"), Some(Duration::from_millis(1234)));
    for bad in ["", ".5", "-1", "1e3", "NaN", "inf", "1.2.3", " 1"] {
        assert_eq!(parse_seconds(bad), None, "{bad:?}");
    }
    assert_eq!(parse_seconds("99999999999999999999"), Some(MAX_HINT), "too many to count: the longest");
    assert_eq!(parse_seconds("9999999999"), Some(MAX_HINT));
}

#[test]
fn a_browser_open_failure_falls_back_unless_the_transport_worked_then_after_three() {
    // Never worked: refused at once.
    let mut r = Rig::new();
    r.close(TransportError::OpenFailed("the WebSocket did not open".into()));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().0, Transport::Sse);
    // Worked before: retried on the same transport until three failures in a
    // row (the drop that started it counts), then given up.
    let mut r = Rig::new();
    r.open();
    r.close(TransportError::Lost("eof".into()));
    for _ in 0..2 {
        r.advance_to_timeout();
        r.close(TransportError::OpenFailed("the WebSocket did not open".into()));
    }
    r.advance_to_timeout();
    let kinds: Vec<Transport> = r.urls.iter().map(|(t, _)| *t).collect();
    assert_eq!(kinds, [Transport::WebSocket, Transport::WebSocket, Transport::WebSocket, Transport::Sse]);
}

// --- several servers ------------------------------------------------------

fn cluster_config() -> Config {
    Config { endpoints: vec!["http://b.test:81".into(), "http://c.test:82/".into()], ..config() }
}

fn endpoint_of(s: &ConnectionState) -> &str {
    match s {
        ConnectionState::Connecting { endpoint, .. } | ConnectionState::Connected { endpoint, .. } => endpoint,
        other => panic!("no endpoint in {other:?}"),
    }
}

#[test]
fn a_failed_server_is_left_for_the_next_with_backoff() {
    let mut r = Rig::with(cluster_config());
    assert_eq!(endpoint_of(r.last_state()), "http://example.test:80");
    r.close(TransportError::Connect("connection refused".into()));
    let ConnectionState::Disconnected { retry_in, .. } = r.last_state().clone() else { panic!() };
    assert!(retry_in <= Duration::from_millis(100), "the first retry waits within the base delay");
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().1, "ws://b.test:81/ws");
    assert_eq!(endpoint_of(r.last_state()), "http://b.test:81");
    r.close(TransportError::Status { status: 502, retry_after: None });
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().1, "ws://c.test:82/ws", "a trailing slash is dropped");
    r.close(TransportError::Connect("refused".into()));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().1, "ws://example.test:80/ws", "round the list again");
    let ConnectionState::Connecting { attempt, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(attempt, 3, "the failure count spans servers, so the backoff keeps growing");
}

#[test]
fn a_message_too_big_for_the_server_fails_the_largest_publish_and_keeps_the_rest() {
    let mut r = Rig::new();
    r.open();
    r.s.publish(1, "c", None, "small".into()).unwrap();
    r.s.publish(2, "c", None, "x".repeat(100_000)).unwrap();
    r.s.publish(3, "c", None, "also small".into()).unwrap();
    r.drain();
    r.close(TransportError::Closed { code: 1009, reason: "message too big".into() });
    assert!(
        matches!(&r.published[..], [(2, Err(Error::PublishRejected { code, .. }))] if code == "too_large"),
        "{:?}",
        r.published
    );
    // The others are sent again on the next connection.
    r.advance_to_timeout();
    r.open();
    let sent: Vec<String> = r
        .sent
        .iter()
        .filter_map(|(c, f)| match f {
            ClientFrame::Publish { data, .. } if *c == r.conn() => Some(data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sent, ["small", "also small"]);
}

/// Fails `n` connection attempts in a row, so that the backoff has grown.
fn fail_attempts(r: &mut Rig, n: usize) {
    for _ in 0..n {
        r.close(TransportError::Connect("refused".into()));
        r.advance_to_timeout();
    }
}

#[test]
fn a_server_going_away_is_left_at_once_for_the_next() {
    for restart in [
        TransportError::Closed { code: 1012, reason: "the server is shutting down".into() },
        TransportError::Closed { code: 1001, reason: String::new() },
    ] {
        let going_away = matches!(restart, TransportError::Closed { code: 1012, .. });
        let mut r = Rig::with(cluster_config());
        r.s.subscribe("c", None, r.now).unwrap();
        // Grown backoff: four failures, the ceiling at 1.6 s.
        fail_attempts(&mut r, 4);
        r.open();
        r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
        let before = r.urls.last().unwrap().1.clone();
        r.close(restart);
        let ConnectionState::Disconnected { retry_in, attempt, .. } = r.last_state().clone() else { panic!() };
        if going_away {
            assert_eq!(attempt, 1, "told to go, not failed");
            assert!(retry_in <= Duration::from_millis(100), "within one base delay: {retry_in:?}");
        } else {
            assert!(attempt > 1, "an ordinary close counts as a failure");
        }
        r.advance_to_timeout();
        assert_ne!(r.urls.last().unwrap().1, before, "the next server");
    }
}

#[test]
fn a_restarting_error_frame_reconnects_at_once_with_the_cursor() {
    let mut r = Rig::with(cluster_config());
    r.s.subscribe("c", None, r.now).unwrap();
    fail_attempts(&mut r, 4);
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
    r.recv(event("c", "ep-1", "a"));
    let restarting = ServerFrame::Error { code: "restarting".into(), channel: None, key: None, message: "bye".into() };
    r.recv(encode_server(&restarting));
    let ConnectionState::Disconnected { retry_in, attempt, .. } = r.last_state().clone() else { panic!() };
    assert_eq!(attempt, 1);
    assert!(retry_in <= Duration::from_millis(100), "{retry_in:?}");
    r.advance_to_timeout();
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.recv(welcome(1000));
    let resumed = r.sent.iter().rev().find_map(|(_, f)| match f {
        ClientFrame::Subscribe { channel, cursor } if channel == "c" => Some(cursor.clone()),
        _ => None,
    });
    assert_eq!(resumed, Some(Some("ep-1".into())), "resumes from its cursor on the next server");
}

#[test]
fn a_working_server_is_kept_and_a_cursor_resumes_on_the_next() {
    let mut r = Rig::with(cluster_config());
    r.s.subscribe("c", None, r.now).unwrap();
    r.open();
    assert_eq!(endpoint_of(r.last_state()), "http://example.test:80");
    r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
    r.recv(event("c", "ep-1", "1"));
    r.recv(event("c", "ep-2", "2"));
    // A healthy connection drops: the client moves on all the same (the
    // server may be gone), and resumes there from its cursor.
    r.now += Duration::from_secs(5);
    r.close(TransportError::Lost("reset by peer".into()));
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap().1, "ws://b.test:81/ws");
    r.open();
    assert_eq!(endpoint_of(r.last_state()), "http://b.test:81");
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("ep-2"));
    r.recv(subscribed("c", Outcome::Resumed, None, "ep-3"));
    r.recv(event("c", "ep-3", "3"));
    assert_eq!(r.events(), ["1", "2", "3"]);
    // Stays: a protocol-level event does not move it.
    let connects = r.connects.len();
    r.recv(event("c", "ep-4", "4"));
    assert_eq!(r.connects.len(), connects);
    assert_eq!(endpoint_of(r.last_state()), "http://b.test:81");
}

#[test]
fn transports_fall_back_on_one_server_before_the_next_is_tried() {
    let cfg = Config { transports: vec![Transport::WebSocket, Transport::Sse], ..cluster_config() };
    let mut r = Rig::with(cfg);
    r.close(TransportError::Status { status: 403, retry_after: None });
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap(), &(Transport::Sse, "http://example.test:80/sse".to_owned()));
    r.close(TransportError::Status { status: 403, retry_after: None });
    r.advance_to_timeout();
    assert_eq!(r.urls.last().unwrap(), &(Transport::WebSocket, "ws://b.test:81/ws".to_owned()));
}

#[test]
fn publishes_go_to_the_server_in_use() {
    let cfg = Config { transports: vec![Transport::Sse], ..cluster_config() };
    let mut r = Rig::with(cfg);
    r.close(TransportError::Connect("refused".into()));
    r.advance_to_timeout();
    r.open();
    r.s.publish(1, "c", None, "x".into()).unwrap();
    r.drain();
    assert_eq!(r.posts.last().unwrap().1, "http://b.test:81/publish/c");
}

#[test]
fn a_bad_endpoint_is_refused_at_creation() {
    let cfg = Config { endpoints: vec!["ftp://x".into()], ..config() };
    let err = Session::new(cfg, "http://a.test", seeds(1), Instant::now()).unwrap_err();
    assert_eq!(err.code(), "invalid_url");
}

// --- presence -------------------------------------------------------------

fn presence_config(id: &str, data: Option<&str>) -> Config {
    Config { client_id: Some(id.into()), presence_data: data.map(str::to_owned), ..config() }
}

#[test]
fn the_client_id_and_presence_data_travel_in_every_connection_url() {
    let cfg = Config {
        transports: vec![Transport::WebSocket, Transport::Sse, Transport::LongPoll],
        ..presence_config("alice", Some(r#"{"n":1}"#))
    };
    let mut r = Rig::with(cfg);
    assert_eq!(r.urls[0].1, "ws://example.test:80/ws?client_id=alice&presence=%7B%22n%22%3A1%7D");
    r.s.subscribe("c", None, r.now).unwrap();
    r.close(TransportError::Status { status: 403, retry_after: None });
    r.advance_to_timeout();
    assert_eq!(r.urls[1].1, "http://example.test:80/sse?client_id=alice&presence=%7B%22n%22%3A1%7D&channel=c");
    r.close(TransportError::Status { status: 403, retry_after: None });
    r.advance_to_timeout();
    assert!(r.urls[2].1.starts_with("http://example.test:80/poll?client_id=alice&presence="), "{}", r.urls[2].1);
}

#[test]
fn an_invalid_client_id_or_oversized_data_is_refused() {
    for cfg in [
        presence_config("", None),
        presence_config("has space", None),
        presence_config(&"x".repeat(129), None),
        presence_config("ok", Some(&"d".repeat(MAX_PRESENCE_DATA + 1))),
    ] {
        let err = Session::new(cfg, "http://a.test", seeds(1), Instant::now()).unwrap_err();
        assert_eq!(err.code(), "invalid_client_id");
    }
    let cfg = presence_config("ok", Some(&"d".repeat(MAX_PRESENCE_DATA)));
    assert!(Session::new(cfg, "http://a.test", seeds(1), Instant::now()).is_ok());
}

#[test]
fn presence_changes_reach_the_subscription_without_moving_its_cursor() {
    let mut r = Rig::with(presence_config("alice", None));
    r.s.subscribe("c", None, r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "ep-0"));
    let presence = |action, id: &str| {
        encode_server(&ServerFrame::Presence { channel: "c".into(), action, client_id: id.into(), data: "d".into() })
    };
    r.recv(presence(PresenceAction::Join, "bob"));
    r.recv(event("c", "ep-1", "1"));
    r.recv(presence(PresenceAction::Leave, "bob"));
    // For a channel not subscribed: dropped.
    r.recv(encode_server(&ServerFrame::Presence {
        channel: "other".into(),
        action: PresenceAction::Join,
        client_id: "x".into(),
        data: String::new(),
    }));
    let got: Vec<String> = r
        .delivered
        .iter()
        .map(|m| match m {
            Message::Presence(p) => format!("{:?} {} {}", p.action, p.member.client_id, p.member.data),
            Message::Event(e) => e.id.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ["Join bob d", "ep-1", "Leave bob d"]);
    // An action this version does not know is ignored, not a protocol error.
    r.recv(r#"{"type":"presence","channel":"c","action":"update","client_id":"bob"}"#.into());
    assert!(matches!(r.last_state(), ConnectionState::Connected { .. }));
    assert_eq!(r.delivered.len(), 3);
}

// --- resets to any head: the cursor is the reset's head ----------------------

/// The events the rig delivered, by id.
fn ids(r: &Rig) -> Vec<String> {
    r.delivered
        .iter()
        .filter_map(|m| match m {
            Message::Event(e) => Some(e.id.to_string()),
            _ => None,
        })
        .collect()
}

fn resets(r: &Rig) -> Vec<(ResetReason, String)> {
    r.delivered
        .iter()
        .filter_map(|m| match m {
            Message::Reset { reason, head, .. } => Some((reason.clone(), head.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cursor_ahead_of_the_head_resets_to_it_and_delivers_what_follows_on_websocket() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("E-999".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Reset, Some(WireResetReason::UnknownCursor), "E-5"));
    for i in 6..=8 {
        r.recv(event("c", &format!("E-{i}"), "x"));
    }
    assert_eq!(resets(&r), [(ResetReason::UnknownCursor, "E-5".to_owned())]);
    assert_eq!(ids(&r), ["E-6", "E-7", "E-8"], "the events after a lower head are new events");
    // And the next connection resumes from the last of them.
    r.close(TransportError::Lost("eof".into()));
    r.advance_to_timeout();
    r.open();
    let ClientFrame::Subscribe { cursor, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(cursor.as_deref(), Some("E-8"));
}

#[test]
fn a_cursor_ahead_of_the_head_resets_to_it_and_delivers_what_follows_on_sse() {
    let mut r = with_transports(&[Transport::Sse]);
    r.s.subscribe("c", Some("E-999".parse().unwrap()), r.now).unwrap();
    r.advance_to_timeout(); // the stream reopens with the subscription
    assert!(r.urls.last().unwrap().1.ends_with("channel=c@E-999"));
    r.open();
    r.recv(subscribed("c", Outcome::Reset, Some(WireResetReason::UnknownCursor), "E-5"));
    r.recv(event("c", "E-6", "x"));
    r.recv(event("c", "E-7", "x"));
    assert_eq!(ids(&r), ["E-6", "E-7"]);
    r.close(TransportError::Lost("eof".into()));
    r.advance_to_timeout();
    assert!(r.urls.last().unwrap().1.ends_with("channel=c@E-7"), "{:?}", r.urls.last());
}

#[test]
fn a_cursor_ahead_of_the_head_resets_once_on_long_polling_and_polls_from_the_head() {
    let mut r = with_transports(&[Transport::LongPoll]);
    r.s.subscribe("c", Some("E-999".parse().unwrap()), r.now).unwrap();
    r.advance_to_timeout();
    let conn = r.conn();
    assert!(r.urls.last().unwrap().1.contains("channel=c@E-999&"));
    let reset = ServerFrame::Subscribed {
        channel: "c".into(),
        outcome: Outcome::Reset,
        reason: Some(WireResetReason::UnknownCursor),
        head: "E-5".into(),
    };
    r.input(Input::Opened { conn });
    r.input(Input::Received { conn, text: batch(&[ServerFrame::Welcome { heartbeat_ms: 0 }, reset]) });
    r.input(Input::Closed { conn, error: TransportError::Completed });
    assert!(r.urls.last().unwrap().1.contains("channel=c@E-5&"), "the next poll asks after the head: {:?}", r.urls);
    let conn = r.conn();
    let frames = [
        ServerFrame::Welcome { heartbeat_ms: 2000 },
        sub_frame("c", Outcome::Resumed, "E-7"),
        ev_frame("c", "E-6"),
        ev_frame("c", "E-7"),
    ];
    r.input(Input::Opened { conn });
    r.input(Input::Received { conn, text: batch(&frames) });
    r.input(Input::Closed { conn, error: TransportError::Completed });
    assert_eq!(ids(&r), ["E-6", "E-7"]);
    assert_eq!(resets(&r).len(), 1, "the reset is reported once, not on every answer");
    assert!(r.urls.last().unwrap().1.contains("channel=c@E-7&"));
}

#[test]
fn a_live_reset_to_a_lower_head_in_the_same_epoch_delivers_what_follows() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("E-0".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Resumed, None, "E-4"));
    for i in 1..=4 {
        r.recv(event("c", &format!("E-{i}"), "old"));
    }
    // A failover lost E-3 and E-4: the new primary's head is E-2.
    let reset = ServerFrame::Reset {
        channel: "c".into(),
        reason: WireResetReason::Other("failover".into()),
        head: "E-2".into(),
    };
    r.recv(encode_server(&reset));
    r.recv(event("c", "E-3", "new"));
    r.recv(event("c", "E-4", "new"));
    assert_eq!(ids(&r), ["E-1", "E-2", "E-3", "E-4", "E-3", "E-4"]);
    assert_eq!(resets(&r), [(ResetReason::Other("failover".into()), "E-2".to_owned())]);
    // A reset to the very position the cursor holds is reported too.
    let same = ServerFrame::Reset { channel: "c".into(), reason: WireResetReason::UnknownCursor, head: "E-4".into() };
    r.recv(encode_server(&same));
    r.recv(event("c", "E-5", "new"));
    assert_eq!(resets(&r).len(), 2);
    assert_eq!(ids(&r).last().unwrap(), "E-5");
}

#[test]
fn a_resumed_answer_below_the_cursor_is_reported_as_a_reset_not_a_silent_loss() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("E-9".parse().unwrap()), r.now).unwrap();
    r.open();
    // A server that lost E-6..E-9 and answers `resumed` anyway.
    r.recv(subscribed("c", Outcome::Resumed, None, "E-5"));
    r.recv(event("c", "E-6", "x"));
    assert_eq!(resets(&r), [(ResetReason::UnknownCursor, "E-5".to_owned())]);
    assert_eq!(ids(&r), ["E-6"]);
}

#[test]
fn a_probe_answered_with_a_lower_head_delivers_what_follows() {
    let mut r = on_sse_after_fallback();
    r.now += Duration::from_secs(30);
    r.recv(encode_server(&ServerFrame::Ping));
    r.advance_to_timeout();
    let probe = r.conn();
    assert_eq!(r.urls.last().unwrap().0, Transport::WebSocket);
    r.input(Input::Opened { conn: probe });
    r.input(Input::Received { conn: probe, text: welcome(1000) });
    // The node behind the WebSocket lost ep-2 and ep-3.
    let text = subscribed("c", Outcome::Reset, Some(WireResetReason::UnknownCursor), "ep-1");
    r.input(Input::Received { conn: probe, text });
    r.input(Input::Received { conn: probe, text: event("c", "ep-2", "ep-2'") });
    assert_eq!(ids(&r), ["ep-1", "ep-2", "ep-3", "ep-2"]);
    assert_eq!(resets(&r), [(ResetReason::UnknownCursor, "ep-1".to_owned())]);
}

#[test]
fn another_endpoint_answering_with_a_lower_head_delivers_what_follows() {
    let mut r = Rig::with(cluster_config());
    r.s.subscribe("c", Some("E-0".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Resumed, None, "E-3"));
    for i in 1..=3 {
        r.recv(event("c", &format!("E-{i}"), "x"));
    }
    r.close(TransportError::Lost("reset".into()));
    r.advance_to_timeout();
    assert_eq!(endpoint_of(r.last_state()), "http://b.test:81");
    r.open();
    r.recv(subscribed("c", Outcome::Reset, Some(WireResetReason::UnknownCursor), "E-1"));
    r.recv(event("c", "E-2", "y"));
    assert_eq!(ids(&r), ["E-1", "E-2", "E-3", "E-2"]);
}

#[test]
fn answers_to_a_replaced_websocket_subscribe_are_ignored() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("E-2".parse().unwrap()), r.now).unwrap();
    r.open();
    // Unsubscribed and subscribed again from another cursor before any answer.
    r.s.unsubscribe("c", r.now);
    r.s.subscribe("c", Some("E-5".parse().unwrap()), r.now).unwrap();
    r.drain();
    // The server answers both subscribes in order: the first (E-2 is no
    // longer retained) with a reset, the second (E-5 is) resumed; events of
    // the first come between.
    r.recv(subscribed("c", Outcome::Reset, Some(WireResetReason::HistoryTruncated), "E-6"));
    r.recv(event("c", "E-3", "x"));
    r.recv(subscribed("c", Outcome::Resumed, None, "E-6"));
    r.recv(event("c", "E-6", "x"));
    assert_eq!(ids(&r), ["E-6"], "the new subscription's replay, not lost to the old one's reset");
    assert!(resets(&r).is_empty(), "the reset was about the replaced subscribe");
    let resumed: Vec<_> = r.delivered.iter().filter(|m| matches!(m, Message::Resumed { .. })).collect();
    assert_eq!(resumed, [&Message::Resumed { channel: "c".into(), after: "E-5".into() }]);
    assert!(r.disconnects.is_empty(), "no reconnect: nothing broke the protocol");
}

#[test]
fn event_types_are_checked_at_publish_and_an_empty_one_is_none() {
    let mut r = Rig::new();
    r.open();
    for bad in ["a\nb", &"t".repeat(129)] {
        let err = r.s.publish(1, "c", Some(bad.to_owned()), "x".into()).unwrap_err();
        assert_eq!(err.code(), "invalid_argument", "{bad:?}");
    }
    r.s.publish(2, "c", Some(String::new()), "x".into()).unwrap();
    r.drain();
    let ClientFrame::Publish { event, .. } = &r.sent.last().unwrap().1 else { panic!() };
    assert_eq!(*event, None);
}

#[test]
fn an_event_with_a_malformed_id_is_a_protocol_error() {
    let mut r = Rig::new();
    r.s.subscribe("c", Some("E-1".parse().unwrap()), r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Resumed, None, "E-3"));
    r.recv(event("c", "E-002", "leading zero"));
    assert!(r.events().is_empty());
    assert!(matches!(r.last_state(), ConnectionState::Disconnected { reason: DisconnectReason::Protocol(_), .. }));
}

#[test]
fn an_error_naming_a_publish_and_its_channel_fails_the_publish_only() {
    let mut r = Rig::new();
    r.s.subscribe("c", None, r.now).unwrap();
    r.open();
    r.recv(subscribed("c", Outcome::Live, None, "E-0"));
    r.s.publish(7, "c", None, "x".into()).unwrap();
    r.drain();
    let ClientFrame::Publish { key, .. } = &r.sent.last().unwrap().1 else { panic!() };
    let error = ServerFrame::Error {
        code: "bad_request".into(),
        channel: Some("c".into()),
        key: Some(key.clone()),
        message: "no".into(),
    };
    r.recv(encode_server(&error));
    assert!(matches!(&r.published[..], [(7, Err(Error::PublishRejected { code, .. }))] if code == "bad_request"));
    assert!(r.ended.is_empty(), "the subscription goes on");
    r.recv(event("c", "E-1", "still here"));
    assert_eq!(r.events(), ["still here"]);
}

// --- limits at their edges ----------------------------------------------------

/// A ping frame of exactly `len` bytes.
fn ping_of(len: usize) -> String {
    let pad = len - r#"{"type":"ping","pad":""}"#.len();
    format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(pad))
}

#[test]
fn a_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
    let mut cfg = config();
    cfg.max_frame_bytes = 64;
    let mut r = Rig::with(cfg.clone());
    r.open();
    r.recv(ping_of(64));
    assert!(matches!(r.last_state(), ConnectionState::Connected { .. }), "{:?}", r.last_state());
    r.recv(ping_of(65));
    assert_eq!(*r.last_state(), ConnectionState::Closed { error: Some(Error::FrameTooLarge { limit: 64 }) });
}

#[test]
fn a_poll_answer_of_exactly_its_bound_is_accepted_and_one_byte_more_is_not() {
    let mut cfg = config();
    cfg.max_frame_bytes = 64;
    cfg.transports = vec![Transport::LongPoll];
    let bound = 64 * POLL_BATCH_FACTOR;
    let answer = |len: usize| {
        let head = r#"{"frames":[{"type":"welcome","heartbeat_ms":0}],"pad":""#;
        format!("{head}{}\"}}", "x".repeat(len - head.len() - 2))
    };
    let mut r = Rig::with(cfg);
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.input(Input::Received { conn, text: answer(bound) });
    assert!(matches!(r.last_state(), ConnectionState::Connected { .. }), "{:?}", r.last_state());
    r.input(Input::Closed { conn, error: TransportError::Completed });
    let conn = r.conn();
    r.input(Input::Opened { conn });
    r.input(Input::Received { conn, text: answer(bound + 1) });
    assert_eq!(*r.last_state(), ConnectionState::Closed { error: Some(Error::FrameTooLarge { limit: bound }) });
}

#[test]
fn jitter_still_spreads_clients_told_the_same_retry_after() {
    let mut retry_at = std::collections::BTreeSet::new();
    let now = Instant::now();
    for seed in 0..20 {
        let mut s = Session::new(config(), "http://example.test:80", seeds(seed), now).unwrap();
        while s.poll_output().is_some() {}
        let error = TransportError::Status { status: 503, retry_after: Some(Duration::from_secs(3)) };
        s.handle_input(Input::Closed { conn: ConnId(0), error }, now);
        let at = std::iter::from_fn(|| s.poll_output())
            .find_map(|o| match o {
                Output::State(ConnectionState::Disconnected { retry_at, .. }) => Some(retry_at),
                _ => None,
            })
            .unwrap();
        assert!(at >= now + Duration::from_secs(3), "never before the hint");
        retry_at.insert(at);
    }
    assert!(retry_at.len() >= 18, "sessions with different seeds return at different instants: {retry_at:?}");
}

#[test]
fn a_huge_retry_after_is_clamped_to_an_hour() {
    for error in [
        TransportError::Status { status: 503, retry_after: Some(Duration::from_secs(u64::MAX / 4)) },
        TransportError::Closed { code: 4503, reason: "99999999999999999999".into() },
    ] {
        let mut r = Rig::new();
        let t0 = r.now;
        r.close(error.clone());
        let ConnectionState::Disconnected { retry_at, .. } = r.last_state().clone() else { panic!() };
        assert!(retry_at >= t0 + Duration::from_secs(3600), "{error:?}");
        assert!(retry_at <= t0 + Duration::from_secs(3600) + Duration::from_millis(100), "{error:?}: clamped");
    }
}

#[test]
fn an_http_publish_answered_429_or_503_is_posted_again_with_the_same_key() {
    let mut r = with_transports(&[Transport::Sse]);
    r.open();
    r.s.publish(1, "c", None, "x".into()).unwrap();
    r.drain();
    for status in [429, 503, 408, 500] {
        let (key, ..) = r.posts.last().unwrap().clone();
        let posts = r.posts.len();
        r.input(Input::Posted { key: key.clone(), result: Err(PostError::Status { status, message: "later".into() }) });
        assert!(r.published.is_empty(), "HTTP {status} does not fail the publish");
        r.advance_to_timeout();
        assert_eq!(r.posts.len(), posts + 1, "posted again after HTTP {status}");
        assert_eq!(r.posts.last().unwrap().0, key, "with the same key");
    }
    let (key, ..) = r.posts.last().unwrap().clone();
    r.input(Input::Posted { key, result: Ok("E-1".into()) });
    assert_eq!(r.published, [(1, Ok("E-1".to_owned()))]);
}
