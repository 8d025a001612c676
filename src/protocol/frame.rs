//! JSON frames. WebSocket text messages carry one frame each; SSE `data` lines
//! and long-poll response arrays carry the same frames, so one decoder serves
//! every transport.

use std::borrow::Cow;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A frame the server sends.
///
/// Unknown `type` values decode to [`ServerFrame::Unknown`] so that servers can
/// add frame types without breaking older clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
        /// The channel the event belongs to (held inline up to 24 bytes).
        channel: CompactString,
        /// Its id, `<epoch>-<seq>` (held inline up to 24 bytes).
        id: CompactString,
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
    /// Someone joined or left a channel's presence. Sent to the channel's
    /// subscribers whose connection gave a `client_id` (on the streaming
    /// transports).
    Presence {
        /// The channel.
        channel: String,
        /// Joined or left.
        action: PresenceAction,
        /// The member's client id.
        client_id: String,
        /// The member's presence data (free text, often JSON), `""` if none.
        #[serde(default)]
        data: String,
    },
    /// A frame type this version does not know; ignored.
    Unknown,
}

/// What happened to a member of a channel's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAction {
    /// The client id is now present (its first subscription to the channel).
    Join,
    /// The client id is gone (its last subscription ended, or its server
    /// stopped refreshing it).
    Leave,
}

/// Every field any server frame has, flat: decoding into it needs no
/// buffering of the input (as a `type`-tagged enum would), which keeps the
/// decoder fast and small (it ships in the browser build).
/// Other decoders (the browser's `JSON.parse`) fill it in too, so that every
/// decoder applies the same rules.
#[derive(Default)]
pub(crate) struct RawServerFrame {
    pub kind: FrameKind,
    pub heartbeat_ms: Option<u64>,
    pub channel: Option<CompactString>,
    pub outcome: Option<Outcome>,
    pub reason: Option<WireResetReason>,
    pub head: Option<String>,
    pub id: Option<CompactString>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub key: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub action: Option<String>,
    pub client_id: Option<String>,
}

/// A frame's `type`, decoded without copying it; a type this version does
/// not know is [`FrameKind::Unknown`].
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FrameKind {
    Welcome,
    Subscribed,
    Event,
    Reset,
    Ping,
    Ack,
    Error,
    Presence,
    #[default]
    #[serde(other)]
    Unknown,
}

impl FrameKind {
    /// The kind named `s` on the wire.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn from_wire(s: &str) -> FrameKind {
        match s {
            "welcome" => FrameKind::Welcome,
            "subscribed" => FrameKind::Subscribed,
            "event" => FrameKind::Event,
            "reset" => FrameKind::Reset,
            "ping" => FrameKind::Ping,
            "ack" => FrameKind::Ack,
            "error" => FrameKind::Error,
            "presence" => FrameKind::Presence,
            _ => FrameKind::Unknown,
        }
    }

    /// The wire name (`unknown` for a type this version does not know).
    fn as_str(self) -> &'static str {
        match self {
            FrameKind::Welcome => "welcome",
            FrameKind::Subscribed => "subscribed",
            FrameKind::Event => "event",
            FrameKind::Reset => "reset",
            FrameKind::Ping => "ping",
            FrameKind::Ack => "ack",
            FrameKind::Error => "error",
            FrameKind::Presence => "presence",
            FrameKind::Unknown => "unknown",
        }
    }
}

impl TryFrom<RawServerFrame> for ServerFrame {
    type Error = String;

    fn try_from(r: RawServerFrame) -> Result<Self, String> {
        // Every required field is checked before any is taken, so that an
        // error returns with the frame whole (one drop, not one per field);
        // the message is made out of line. Both keep the browser build small.
        #[inline(never)]
        #[cold]
        fn missing(kind: &str, field: &str) -> String {
            let mut s = String::with_capacity(kind.len() + field.len() + 15);
            s.push_str(kind);
            s.push_str(" frame without ");
            s.push_str(field);
            s
        }
        macro_rules! need {
            ($($field:ident),*) => {
                $(if r.$field.is_none() {
                    return Err(missing(r.kind.as_str(), stringify!($field)));
                })*
            };
        }
        // After `need!`, these are `Some`: the defaults are never used.
        let text = |v: Option<String>| v.unwrap_or_default();
        // Fields an event keeps inline; other frames (rare) take a `String`.
        let short = |v: Option<CompactString>| v.unwrap_or_default();
        let long = |v: Option<CompactString>| v.map(CompactString::into_string).unwrap_or_default();
        Ok(match r.kind {
            FrameKind::Welcome => {
                need!(heartbeat_ms);
                ServerFrame::Welcome { heartbeat_ms: r.heartbeat_ms.unwrap_or_default() }
            }
            FrameKind::Subscribed => {
                need!(channel, outcome, head);
                ServerFrame::Subscribed {
                    channel: long(r.channel),
                    outcome: r.outcome.unwrap_or(Outcome::Reset),
                    reason: r.reason,
                    head: text(r.head),
                }
            }
            FrameKind::Event => {
                need!(channel, id, data);
                ServerFrame::Event { channel: short(r.channel), id: short(r.id), event: r.event, data: text(r.data) }
            }
            FrameKind::Reset => {
                need!(channel, reason, head);
                ServerFrame::Reset {
                    channel: long(r.channel),
                    reason: r.reason.unwrap_or(WireResetReason::UnknownCursor),
                    head: text(r.head),
                }
            }
            FrameKind::Ping => ServerFrame::Ping,
            FrameKind::Ack => {
                need!(key, id);
                ServerFrame::Ack { key: text(r.key), id: long(r.id) }
            }
            FrameKind::Error => {
                need!(code);
                ServerFrame::Error {
                    code: text(r.code),
                    channel: r.channel.map(CompactString::into_string),
                    key: r.key,
                    message: text(r.message),
                }
            }
            FrameKind::Presence => {
                need!(channel, action, client_id);
                let action = match r.action.as_deref() {
                    Some("join") => PresenceAction::Join,
                    Some("leave") => PresenceAction::Leave,
                    // An action this version does not know: ignore the frame.
                    _ => return Ok(ServerFrame::Unknown),
                };
                ServerFrame::Presence {
                    channel: long(r.channel),
                    action,
                    client_id: text(r.client_id),
                    data: text(r.data),
                }
            }
            FrameKind::Unknown => ServerFrame::Unknown,
        })
    }
}

/// Every field a server frame may have, in [`Field`]'s order.
pub(crate) const FIELD_NAMES: [&str; 14] = [
    "type",
    "channel",
    "id",
    "data",
    "event",
    "heartbeat_ms",
    "outcome",
    "reason",
    "head",
    "key",
    "code",
    "message",
    "action",
    "client_id",
];

/// The names a frame's fields go by; anything else is ignored.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    #[serde(rename = "type")]
    Kind,
    Channel,
    Id,
    Data,
    Event,
    HeartbeatMs,
    Outcome,
    Reason,
    Head,
    Key,
    Code,
    Message,
    Action,
    ClientId,
    #[serde(other)]
    Other,
}

impl Field {
    fn name(self) -> &'static str {
        FIELD_NAMES.get(self as usize).copied().unwrap_or("?")
    }
}

/// Decodes a frame straight from its fields: the flat [`RawServerFrame`]
/// is filled in place and checked once, rather than built and moved whole
/// through each layer of a derived decoder (it is over 300 bytes; an event
/// is ~100). A field given twice is an error, as with a derived decoder.
impl ServerFrame {
    /// The common frame, an event, read from JSON without the general
    /// decoder: `Some` only for an object whose keys are among `type`,
    /// `channel`, `id`, `event` and `data` (each once, without escapes),
    /// whose values are all strings, with `type` `"event"` and `channel`,
    /// `id` and `data` present. Anything else, valid or not, is `None` and
    /// left to the full decoder (`serde_json::from_str::<ServerFrame>`),
    /// which reads every frame this reads to the same frame (fuzzed).
    ///
    /// The data is unescaped straight into a string of its final size: one
    /// allocation, where the general decoder grows a scratch buffer first.
    ///
    /// ```
    /// use resub::protocol::ServerFrame;
    /// let text = r#"{"type":"event","channel":"c","id":"1-2","data":"{\"n\":1}"}"#;
    /// let frame = ServerFrame::read_event(text).unwrap();
    /// assert_eq!(Some(frame), serde_json::from_str(text).ok());
    /// assert_eq!(ServerFrame::read_event(r#"{"type":"ping"}"#), None);
    /// ```
    pub fn read_event(text: &str) -> Option<ServerFrame> {
        let (frame, end) = event_at(text, skip_ws(text.as_bytes(), 0))?;
        (skip_ws(text.as_bytes(), end) == text.len()).then_some(frame)
    }

    /// A long poll's answer, `{"frames":[...]}`, read the same way when
    /// every frame in it is such an event, a `welcome` with nothing but its
    /// `heartbeat_ms`, or a `subscribed` with string fields of its own (an
    /// answer starts with those), an empty list too: `None` for anything
    /// else, which the general decoder reads.
    ///
    /// ```
    /// use resub::protocol::ServerFrame;
    /// let text = r#"{"frames":[{"type":"event","channel":"c","id":"1-1","data":"a"}]}"#;
    /// assert_eq!(ServerFrame::read_events(text).map(|f| f.len()), Some(1));
    /// assert_eq!(ServerFrame::read_events(r#"{"frames":[{"type":"ping"}]}"#), None);
    /// ```
    pub fn read_events(text: &str) -> Option<Vec<ServerFrame>> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        for token in [&b"{"[..], b"\"frames\"", b":", b"["] {
            if !b.get(i..)?.starts_with(token) {
                return None;
            }
            i = skip_ws(b, i + token.len());
        }
        let mut frames = Vec::new();
        if b.get(i) == Some(&b']') {
            i += 1;
        } else {
            loop {
                let (frame, end) =
                    event_at(text, i).or_else(|| subscribed_at(text, i)).or_else(|| welcome_at(text, i))?;
                frames.push(frame);
                i = skip_ws(b, end);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b']') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        i = skip_ws(b, i);
        (b.get(i) == Some(&b'}') && skip_ws(b, i + 1) == b.len()).then_some(frames)
    }
}

/// A `welcome` frame with its `type` and `heartbeat_ms` alone, starting at
/// `text[i]`, and the index after its closing brace; `None` for anything the
/// general decoder might read otherwise (a number that is not a plain
/// decimal `u64`, another key, a repeat).
fn welcome_at(text: &str, i: usize) -> Option<(ServerFrame, usize)> {
    let b = text.as_bytes();
    let (mut kind, mut heartbeat_ms) = (false, None);
    let end = object_at(text, i, |key, i| match key {
        b"type" if !kind => {
            let (value, next) = json_string(text, i)?;
            kind = value == "welcome";
            kind.then_some(next)
        }
        b"heartbeat_ms" if heartbeat_ms.is_none() => {
            let digits = b.get(i..)?.iter().take_while(|c| c.is_ascii_digit()).count();
            let number = text.get(i..i + digits)?;
            // JSON has no leading zeros; what follows must end the number.
            if digits == 0 || (digits > 1 && number.starts_with('0')) {
                return None;
            }
            if matches!(b.get(i + digits), Some(b'.' | b'e' | b'E')) {
                return None;
            }
            heartbeat_ms = Some(number.parse::<u64>().ok()?);
            Some(i + digits)
        }
        _ => None,
    })?;
    kind.then_some((ServerFrame::Welcome { heartbeat_ms: heartbeat_ms? }, end))
}

/// The event object starting at `text[i]` and the index after its closing
/// brace (see [`ServerFrame::read_event`]).
fn event_at(text: &str, i: usize) -> Option<(ServerFrame, usize)> {
    let ([kind, channel, id, event, data], end) =
        string_fields(text, i, [b"type", b"channel", b"id", b"event", b"data"])?;
    if kind? != "event" {
        return None;
    }
    let (channel, id) = (CompactString::from(channel?.as_ref()), CompactString::from(id?.as_ref()));
    Some((ServerFrame::Event { channel, id, event: event.map(Cow::into_owned), data: data?.into_owned() }, end))
}

/// A `subscribed` frame whose fields are all strings among its own,
/// starting at `text[i]`, and the index after its closing brace (a long
/// poll's answer has one for each channel).
fn subscribed_at(text: &str, i: usize) -> Option<(ServerFrame, usize)> {
    let ([kind, channel, outcome, reason, head], end) =
        string_fields(text, i, [b"type", b"channel", b"outcome", b"reason", b"head"])?;
    if kind? != "subscribed" {
        return None;
    }
    let frame = ServerFrame::Subscribed {
        channel: channel?.into_owned(),
        outcome: Outcome::from_wire(&outcome?)?,
        reason: reason.map(|r| WireResetReason::from(r.into_owned())),
        head: head?.into_owned(),
    };
    Some((frame, end))
}

/// The object starting at `text[i]` when its keys are among `keys` (each
/// once, without escapes) and its values all strings: the values by key,
/// and the index after the closing brace.
fn string_fields<'a, const N: usize>(
    text: &'a str,
    i: usize,
    keys: [&[u8]; N],
) -> Option<([Option<Cow<'a, str>>; N], usize)> {
    let mut values = [const { None }; N];
    let end = object_at(text, i, |key, i| {
        let (value, next) = json_string(text, i)?;
        let slot = &mut values[keys.iter().position(|k| *k == key)?];
        slot.replace(value).is_none().then_some(next)
    })?;
    Some((values, end))
}

/// Walks the object starting at `text[i]`: for each key (read without
/// escapes) `field` reads the value starting at the index it is given and
/// returns the index after it, or `None` to give up. The index after the
/// closing brace.
fn object_at(text: &str, mut i: usize, mut field: impl FnMut(&[u8], usize) -> Option<usize>) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = i + 1 + memchr::memchr2(b'"', b'\\', b.get(i + 1..)?)?;
        let key = &b[i + 1..end];
        i = skip_ws(b, end + 1);
        if b[end] != b'"' || b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, field(key, skip_ws(b, i + 1))?);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The index of the closing quote of a JSON string, searched from `j` (inside
/// it), stepping over escapes.
fn string_end(b: &[u8], mut j: usize) -> Option<usize> {
    loop {
        let at = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[at] == b'"' {
            return Some(at);
        }
        j = at + 2;
    }
}

/// The JSON string starting at `text[i]` (its opening quote), unescaped,
/// and the index after its closing quote; `None` for anything that is not a
/// string or that the general decoder might judge otherwise (a control
/// character, an unknown escape, a lone surrogate).
fn json_string(text: &str, i: usize) -> Option<(std::borrow::Cow<'_, str>, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut start = i + 1;
    let mut out: Option<String> = None;
    loop {
        let at = start + memchr::memchr2(b'"', b'\\', b.get(start..)?)?;
        let piece = text.get(start..at)?;
        if piece.bytes().any(|c| c < 0x20) {
            return None;
        }
        if b[at] == b'"' {
            return Some(match out {
                None => (std::borrow::Cow::Borrowed(piece), at + 1),
                Some(mut s) => {
                    s.push_str(piece);
                    (std::borrow::Cow::Owned(s), at + 1)
                }
            });
        }
        // An escape: the string is built, at most as long as its escaped
        // form (an escape never lengthens what it stands for).
        let s = match &mut out {
            Some(s) => s,
            None => out.insert(String::with_capacity(string_end(b, at)? - i)),
        };
        s.push_str(piece);
        let (c, len) = match *b.get(at + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let unit = |at: usize| u16::from_str_radix(text.get(at..at + 4)?, 16).ok();
                let hex_ok = |at: usize| text.get(at..at + 4).is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
                if !hex_ok(at + 2) {
                    return None;
                }
                let first = unit(at + 2)?;
                match first {
                    0xD800..=0xDBFF => {
                        if b.get(at + 6..at + 8)? != b"\\u" || !hex_ok(at + 8) {
                            return None;
                        }
                        let second = unit(at + 8)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return None;
                        }
                        let c = 0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00);
                        (char::from_u32(c)?, 12)
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => (char::from_u32(u32::from(first))?, 6),
                }
            }
            _ => return None,
        };
        s.push(c);
        start = at + len;
    }
}

impl<'de> Deserialize<'de> for ServerFrame {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FrameVisitor;

        impl<'de> serde::de::Visitor<'de> for FrameVisitor {
            type Value = ServerFrame;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a frame object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ServerFrame, A::Error> {
                use serde::de::Error;
                let mut r = RawServerFrame::default();
                let mut kind = None;
                let mut seen = 0u16;
                while let Some(field) = map.next_key::<Field>()? {
                    if !matches!(field, Field::Other) {
                        let bit = 1u16 << (field as u16);
                        if seen & bit != 0 {
                            return Err(A::Error::duplicate_field(field.name()));
                        }
                        seen |= bit;
                    }
                    match field {
                        Field::Kind => kind = Some(map.next_value()?),
                        Field::Channel => r.channel = map.next_value()?,
                        Field::Id => r.id = map.next_value()?,
                        Field::Data => r.data = map.next_value()?,
                        Field::Event => r.event = map.next_value()?,
                        Field::HeartbeatMs => r.heartbeat_ms = map.next_value()?,
                        Field::Outcome => r.outcome = map.next_value()?,
                        Field::Reason => r.reason = map.next_value()?,
                        Field::Head => r.head = map.next_value()?,
                        Field::Key => r.key = map.next_value()?,
                        Field::Code => r.code = map.next_value()?,
                        Field::Message => r.message = map.next_value()?,
                        Field::Action => r.action = map.next_value()?,
                        Field::ClientId => r.client_id = map.next_value()?,
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                r.kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
                ServerFrame::try_from(r).map_err(A::Error::custom)
            }
        }

        deserializer.deserialize_map(FrameVisitor)
    }
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

impl Outcome {
    /// The outcome named `s` on the wire.
    pub fn from_wire(s: &str) -> Option<Outcome> {
        match s {
            "live" => Some(Outcome::Live),
            "resumed" => Some(Outcome::Resumed),
            "reset" => Some(Outcome::Reset),
            _ => None,
        }
    }
}

/// Why a cursor cannot be honoured, as sent on the wire (a snake_case string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireResetReason {
    /// Events after the cursor are no longer retained.
    HistoryTruncated,
    /// The channel's history was lost or reset; the cursor's epoch is gone.
    EpochChanged,
    /// The cursor does not name a position the server knows (for example one
    /// ahead of its newest event).
    UnknownCursor,
    /// A reason this version does not know.
    Other(String),
}

impl WireResetReason {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            WireResetReason::HistoryTruncated => "history_truncated",
            WireResetReason::EpochChanged => "epoch_changed",
            WireResetReason::UnknownCursor => "unknown_cursor",
            WireResetReason::Other(s) => s,
        }
    }
}

impl From<String> for WireResetReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "history_truncated" => WireResetReason::HistoryTruncated,
            "epoch_changed" => WireResetReason::EpochChanged,
            "unknown_cursor" => WireResetReason::UnknownCursor,
            _ => WireResetReason::Other(s),
        }
    }
}

impl Serialize for WireResetReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WireResetReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
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

impl ClientFrame {
    /// The frame as JSON text. Written directly rather than through
    /// serde_json, which would be the only part of it left in the browser
    /// build; the tests check it against serde_json's decoder.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(64);
        let field = |out: &mut String, key: &str, value: &str| {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            push_json_string(out, value);
        };
        match self {
            ClientFrame::Subscribe { channel, cursor } => {
                out.push_str("{\"type\":\"subscribe\"");
                field(&mut out, "channel", channel);
                if let Some(c) = cursor {
                    field(&mut out, "cursor", c);
                }
            }
            ClientFrame::Unsubscribe { channel } => {
                out.push_str("{\"type\":\"unsubscribe\"");
                field(&mut out, "channel", channel);
            }
            ClientFrame::Ping => out.push_str("{\"type\":\"ping\""),
            ClientFrame::Publish { channel, key, event, data } => {
                out.push_str("{\"type\":\"publish\"");
                field(&mut out, "channel", channel);
                field(&mut out, "key", key);
                if let Some(e) = event {
                    field(&mut out, "event", e);
                }
                field(&mut out, "data", data);
            }
        }
        out.push('}');
        out
    }
}

/// Appends `s` as a JSON string (RFC 8259 §7): quote, reverse solidus and
/// control characters escaped, everything else as is.
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Both ends sit next to an ASCII byte: `get` always succeeds (and,
        // unlike indexing, brings no panic message into small builds).
        out.push_str(s.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
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

    /// Events the quick reading takes, each read as the general decoder
    /// reads it: escapes of every kind, surrogate pairs, whitespace, any
    /// key order, an event type.
    #[test]
    fn read_event_reads_events_as_the_general_decoder_does() {
        let texts = [
            r#"{"type":"event","channel":"c","id":"1-2","data":"plain"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"{\"px\":101.25,\"side\":\"buy\"}"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\\ \/ \b \f \n \r \t \" end"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\u00e9\u0000\u20AC \ud83d\ude00 é"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":""}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\"\""}"#,
            " {\r\n\t\"data\" : \"d\" ,\"id\":\"1-2\", \"channel\":\"a-much-longer-channel-name-than-24\",\"type\":\"event\" } \n",
            r#"{"type":"event","channel":"c\"q","id":"1-2","event":"tick\n","data":"d"}"#,
        ];
        for text in texts {
            let general: ServerFrame = serde_json::from_str(text).unwrap();
            assert_eq!(ServerFrame::read_event(text), Some(general), "{text}");
        }
    }

    /// Whatever is not a plain event goes to the general decoder, whether
    /// it accepts it or not.
    #[test]
    fn read_event_leaves_everything_else_to_the_general_decoder() {
        let texts = [
            r#"{"type":"ping"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":5}"#,
            r#"{"type":"event","channel":"c","id":"1-2","event":null,"data":"d"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d","extra":"x"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d","data":"e"}"#,
            r#"{"type":"event","chan\u006eel":"c","id":"1-2","data":"d"}"#,
            "{\"type\":\"event\",\"channel\":\"c\",\"id\":\"1-2\",\"data\":\"a\u{1}b\"}",
            r#"{"type":"event","channel":"c","id":"1-2","data":"\ud83d"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\ude00"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\ud83d\u0041"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\x"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\u+123"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"\u12"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d"} x"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d",}"#,
            r#"{"type":"event","channel":"c","id":"1-2"}"#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d""#,
            r#"{"type":"event","channel":"c","id":"1-2","data":"d\"#,
            r#"["type","event"]"#,
            "",
        ];
        for text in texts {
            assert_eq!(ServerFrame::read_event(text), None, "{text}");
        }
    }

    /// Long-poll answers of plain events are read quickly, as serde reads
    /// them; any other frame or key sends the whole answer to serde.
    #[test]
    fn read_events_reads_answers_of_events_and_leaves_the_rest() {
        #[derive(serde::Deserialize)]
        struct Batch {
            frames: Vec<ServerFrame>,
        }
        let e = r#"{"type":"event","channel":"c","id":"1-1","data":"a\"b"}"#;
        let w = r#"{"type":"welcome","heartbeat_ms":25000}"#;
        for text in [
            r#"{"frames":[]}"#.to_owned(),
            format!(r#"{{"frames":[{e}]}}"#),
            format!(" {{ \"frames\" : [ {e} , {e},{e} ] }} \n"),
            format!(r#"{{"frames":[{w},{e}]}}"#),
            format!(r#"{{"frames":[{w},{{"type":"subscribed","channel":"c","outcome":"resumed","head":"1-0"}},{e}]}}"#),
            r#"{"frames":[{"head":"1-0","reason":"moon","type":"subscribed","outcome":"reset","channel":"c"}]}"#
                .to_owned(),
            r#"{"frames":[{ "heartbeat_ms" : 0 , "type":"welcome" }]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":18446744073709551615}]}"#.to_owned(),
        ] {
            let general: Batch = serde_json::from_str(&text).unwrap();
            assert_eq!(ServerFrame::read_events(&text), Some(general.frames), "{text}");
        }
        for text in [
            format!(r#"{{"frames":[{e},{{"type":"ping"}}]}}"#),
            format!(r#"{{"frames":[{e}],"more":1}}"#),
            format!(r#"{{"frames":[{e},]}}"#),
            format!(r#"{{"frames":[{e}]}} x"#),
            format!(r#"{{"frames":{e}}}"#),
            r#"{"fr\u0061mes":[]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":025}]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":2.5}]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":1e3}]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":-1}]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":18446744073709551616}]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome"}]}"#.to_owned(),
            r#"{"frames":[{"heartbeat_ms":5}]}"#.to_owned(),
            r#"{"frames":[{"type":"subscribed","channel":"c","outcome":"later","head":"1-0"}]}"#.to_owned(),
            r#"{"frames":[{"type":"subscribed","channel":"c","outcome":"live"}]}"#.to_owned(),
            r#"{"frames":[{"type":"subscribed","channel":"c","outcome":"live","head":"1-0","id":"x"}]}"#.to_owned(),
            r#"{"frames":[{"type":"welcome","heartbeat_ms":5,"heartbeat_ms":6}]}"#.to_owned(),
        ] {
            assert_eq!(ServerFrame::read_events(&text), None, "{text}");
        }
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
    fn fields_decode_in_any_order_and_unknown_ones_of_any_shape_are_skipped() {
        let f: ServerFrame =
            serde_json::from_str(r#"{"data":"x","x":{"a":[1,{"b":null}]},"id":"e-1","channel":"c","type":"event"}"#)
                .unwrap();
        assert_eq!(f, ServerFrame::Event { channel: "c".into(), id: "e-1".into(), event: None, data: "x".into() });
        let f: ServerFrame =
            serde_json::from_str(r#"{"type":"event","channel":"c","id":"e-1","event":null,"data":"x"}"#).unwrap();
        assert!(matches!(f, ServerFrame::Event { event: None, .. }), "null is absent");
    }

    #[test]
    fn malformed_frames_are_refused() {
        for bad in [
            r#"{"channel":"c","id":"e-1","data":"x"}"#,
            r#"{"type":"event","channel":"c","id":"e-1","id":"e-2","data":"x"}"#,
            r#"{"type":"event","type":"ping"}"#,
            r#"{"type":"event","channel":"c","id":"e-1"}"#,
            r#"{"type":"event","channel":7,"id":"e-1","data":"x"}"#,
            r#"{"type":"welcome","heartbeat_ms":-1}"#,
            r#"["event"]"#,
            r#""event""#,
        ] {
            assert!(serde_json::from_str::<ServerFrame>(bad).is_err(), "{bad}");
        }
        let e = serde_json::from_str::<ServerFrame>(r#"{"type":"ack","key":"k","key":"k","id":"e-1"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `key`"), "{e}");
        let e = serde_json::from_str::<ServerFrame>(r#"{"channel":"c"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `type`"), "{e}");
    }

    #[test]
    fn client_frames_encode_without_empty_fields() {
        let s = serde_json::to_string(&ClientFrame::Subscribe { channel: "c".into(), cursor: None }).unwrap();
        assert_eq!(s, r#"{"type":"subscribe","channel":"c"}"#);
        let back: ClientFrame = serde_json::from_str(&s).unwrap();
        assert_eq!(back, ClientFrame::Subscribe { channel: "c".into(), cursor: None });
    }

    #[test]
    fn client_frames_encode_to_json_that_decodes_to_the_same_frame() {
        let nasty = [
            "",
            "plain",
            "quote \" and backslash \\",
            "line\nbreak\r\ttab",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
            "é 🌍 \u{2028}\u{2029}",
            "</script>",
            "{\"json\":[1,2]}",
        ];
        for s in nasty {
            let frames = [
                ClientFrame::Subscribe { channel: "c".into(), cursor: Some(s.into()) },
                ClientFrame::Subscribe { channel: "c".into(), cursor: None },
                ClientFrame::Unsubscribe { channel: s.into() },
                ClientFrame::Ping,
                ClientFrame::Publish { channel: "c".into(), key: s.into(), event: Some(s.into()), data: s.into() },
                ClientFrame::Publish { channel: "c".into(), key: "k".into(), event: None, data: s.into() },
            ];
            for f in frames {
                let json = f.to_json();
                let back: ClientFrame = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
                assert_eq!(back, f, "{json}");
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&json).unwrap(),
                    serde_json::to_value(&f).unwrap()
                );
            }
        }
    }

    #[test]
    fn every_char_survives_the_json_encoder() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let f = ClientFrame::Publish { channel: "c".into(), key: "k".into(), event: None, data: all };
        assert_eq!(serde_json::from_str::<ClientFrame>(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn reset_reasons_use_snake_case_on_the_wire() {
        let s = serde_json::to_string(&WireResetReason::HistoryTruncated).unwrap();
        assert_eq!(s, r#""history_truncated""#);
    }
}
