//! JSON frames. WebSocket text messages carry one frame each; SSE `data` lines
//! and long-poll response arrays carry the same frames, so one decoder serves
//! every transport.

use serde::{Deserialize, Serialize};

/// A frame the server sends.
///
/// Unknown `type` values decode to [`ServerFrame::Unknown`] so that servers can
/// add frame types without breaking older clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// First frame on every connection: the server's heartbeat interval.
    Welcome {
        /// The server sends some frame at least this often (milliseconds).
        heartbeat_ms: u64,
    },
    /// The answer to a subscribe: how the subscription starts.
    Subscribed {
        /// The channel subscribed to.
        channel: String,
        /// Whether the cursor was honoured.
        outcome: Outcome,
        /// Why the cursor could not be honoured, with [`Outcome::Reset`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<WireResetReason>,
        /// The id of the channel's newest event at the moment of subscribing
        /// (`<epoch>-0` when the epoch has none). Events up to it that follow
        /// are replays; the client's cursor becomes at least this id.
        head: String,
    },
    /// One event of a channel.
    Event {
        /// The channel the event belongs to.
        channel: String,
        /// Its id, `<epoch>-<seq>`.
        id: String,
        /// The event type; absent means `message`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        /// The payload, exactly as published.
        data: String,
    },
    /// A live subscription cannot continue from its position (the channel
    /// started a new epoch); the stream continues after `head`.
    Reset {
        /// The channel concerned.
        channel: String,
        /// Why continuity is broken.
        reason: WireResetReason,
        /// The position the stream continues after.
        head: String,
    },
    /// A heartbeat: the connection is alive.
    Ping,
    /// A publish was applied (or had been applied before, for a repeated key).
    Ack {
        /// The idempotency key of the publish.
        key: String,
        /// The id the event was given.
        id: String,
    },
    /// A request was refused.
    Error {
        /// Machine-readable code: `bad_request`, `forbidden`, `not_found`,
        /// `too_large`, `unavailable`.
        code: String,
        /// The channel concerned, for subscription errors.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// The idempotency key concerned, for publish errors.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Human-readable detail.
        #[serde(default)]
        message: String,
    },
    /// A frame type this version does not know; ignored.
    #[serde(other)]
    Unknown,
}

/// How a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// No cursor was given: the subscription starts live after `head`.
    Live,
    /// Everything after the cursor follows, then live events.
    Resumed,
    /// The cursor cannot be honoured; the subscription starts live after `head`.
    Reset,
}

/// Why a cursor cannot be honoured, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireResetReason {
    /// Events after the cursor are no longer retained.
    HistoryTruncated,
    /// The channel's history was lost or reset; the cursor's epoch is gone.
    EpochChanged,
    /// The cursor does not name a position the server knows (for example one
    /// ahead of its newest event).
    UnknownCursor,
    /// A reason this version does not know.
    #[serde(untagged)]
    Other(String),
}

/// A frame the client sends (on WebSocket; the HTTP transports carry the same
/// information in their URLs and request bodies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientFrame {
    /// Start (or restart) a subscription.
    Subscribe {
        /// The channel.
        channel: String,
        /// Replay everything after this id; absent means start live.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    /// Stop a subscription.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// A liveness probe: the server answers with a `ping` at once.
    Ping,
    /// Publish an event; answered by `ack` or `error` with the same key.
    Publish {
        /// The channel.
        channel: String,
        /// Idempotency key: the server applies a publish with a key it has
        /// seen before only once and answers with the first id.
        key: String,
        /// Optional event type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
        /// The payload.
        data: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn event_frame_decodes_with_and_without_type() {
        let f: ServerFrame = serde_json::from_str(r#"{"type":"event","channel":"c","id":"e-1","data":"x"}"#).unwrap();
        assert_eq!(f, ServerFrame::Event { channel: "c".into(), id: "e-1".into(), event: None, data: "x".into() });
        let f: ServerFrame =
            serde_json::from_str(r#"{"type":"event","channel":"c","id":"e-1","event":"t","data":"x"}"#).unwrap();
        assert!(matches!(f, ServerFrame::Event { event: Some(t), .. } if t == "t"));
    }

    #[test]
    fn unknown_frame_types_and_reasons_are_tolerated() {
        let f: ServerFrame = serde_json::from_str(r#"{"type":"shiny","x":1}"#).unwrap();
        assert_eq!(f, ServerFrame::Unknown);
        let f: ServerFrame =
            serde_json::from_str(r#"{"type":"reset","channel":"c","reason":"moon_phase","head":"e-3"}"#).unwrap();
        assert!(matches!(f, ServerFrame::Reset { reason: WireResetReason::Other(r), .. } if r == "moon_phase"));
    }

    #[test]
    fn client_frames_encode_without_empty_fields() {
        let s = serde_json::to_string(&ClientFrame::Subscribe { channel: "c".into(), cursor: None }).unwrap();
        assert_eq!(s, r#"{"type":"subscribe","channel":"c"}"#);
        let back: ClientFrame = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ClientFrame::Subscribe { channel: "c".into(), cursor: None });
    }

    #[test]
    fn reset_reasons_use_snake_case_on_the_wire() {
        let s = serde_json::to_string(&WireResetReason::HistoryTruncated).unwrap();
        assert_eq!(s, r#""history_truncated""#);
    }
}
