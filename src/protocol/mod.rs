//! The wire format: event ids and cursors, channel names, and the JSON frames
//! carried by every transport. Pure values and parsers, no I/O.
//!
//! PROTOCOL.md at the repository root is the normative description; this module
//! is one implementation of it, shared by the client and the reference fixture.

mod frame;
#[cfg(not(target_arch = "wasm32"))]
pub mod http1;
pub mod sse;

pub use frame::{ClientFrame, Outcome, PresenceAction, ServerFrame, WireResetReason, push_json_string};
#[cfg_attr(not(target_arch = "wasm32"), allow(unused_imports))]
pub(crate) use frame::{FIELD_NAMES, FrameKind, RawServerFrame};

use std::fmt;
use std::str::FromStr;

/// The longest channel name the protocol allows, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
/// The longest epoch the protocol allows, in bytes.
pub const MAX_EPOCH_LEN: usize = 32;
/// The largest `seq` an event id may have: 2^63 − 1, so that every
/// language's signed 64-bit integer holds it.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Why a string is not a valid channel name or event id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// A channel name is empty, too long, or has a character outside `[A-Za-z0-9_.:-]`.
    #[error("invalid channel name '{0}': 1-128 characters from A-Z a-z 0-9 _ . : -")]
    Channel(String),
    /// An event id is not `<epoch>-<seq>`.
    #[error(
        "invalid event id '{0}': expected <epoch>-<seq>, epoch 1-32 of [A-Za-z0-9], seq a decimal without leading zeros up to 2^63-1"
    )]
    EventId(String),
    /// An event type is empty, over 128 bytes, or has a control character.
    #[error("invalid event type '{0}': 1-128 bytes without control characters")]
    EventType(String),
}

/// Checks a channel name against the protocol's grammar: 1 to 128 bytes of
/// `A-Z a-z 0-9 _ . : -`. The grammar keeps names safe in URL paths and query
/// strings without escaping.
pub fn validate_channel(name: &str) -> Result<(), ParseError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok { Ok(()) } else { Err(ParseError::Channel(name.to_owned())) }
}

/// The longest event type the protocol allows, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Checks an event type: 1 to 128 bytes of UTF-8 without control characters
/// (PROTOCOL.md §7.4).
pub fn validate_event_type(event: &str) -> Result<(), ParseError> {
    let ok = !event.is_empty() && event.len() <= MAX_EVENT_TYPE_LEN && !event.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(ParseError::EventType(event.chars().take(140).collect())) }
}

/// Reads an HTTP `Retry-After` value given in seconds (the form servers use
/// for 429 and 503). The HTTP-date form is not honoured: `None`, and the
/// client's own backoff applies.
pub fn parse_retry_after(value: &str) -> Option<std::time::Duration> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many seconds to count is "a very long time", not "no hint".
    Some(std::time::Duration::from_secs(v.parse::<u64>().unwrap_or(u64::MAX)))
}

/// The id of one event in one channel: a stream epoch and a sequence number.
///
/// Within an epoch, the first event has `seq` 1 and every next event has the
/// next number, so a client can tell a duplicate (`seq` not above its cursor)
/// from a gap (`seq` more than one above). A server that loses or resets a
/// channel's history starts a new epoch. The text form is `<epoch>-<seq>`;
/// `<epoch>-0` names the position before the epoch's first event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    epoch: String,
    seq: u64,
}

impl EventId {
    /// Builds an id; fails when the epoch is not 1-32 ASCII letters or
    /// digits, or `seq` is above [`MAX_SEQ`].
    pub fn new(epoch: impl Into<String>, seq: u64) -> Result<Self, ParseError> {
        let epoch = epoch.into();
        if valid_epoch(&epoch) && seq <= MAX_SEQ {
            Ok(Self { epoch, seq })
        } else {
            Err(ParseError::EventId(format!("{epoch}-{seq}")))
        }
    }

    /// The stream epoch this id belongs to.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The position within the epoch (1 for the first event, 0 before it).
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

fn valid_epoch(epoch: &str) -> bool {
    !epoch.is_empty() && epoch.len() <= MAX_EPOCH_LEN && epoch.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The epoch and seq of a well-formed id, without allocating.
pub(crate) fn split_event_id(s: &str) -> Option<(&str, u64)> {
    // By hand: byte search and checked arithmetic are much less code in the
    // browser build than `rsplit_once` and `parse` (ids are parsed per event).
    let dash = s.bytes().rposition(|b| b == b'-')?;
    let (epoch, rest) = s.split_at_checked(dash)?;
    let digits = rest.get(1..)?;
    if !valid_epoch(epoch) || digits.is_empty() {
        return None;
    }
    // No leading zeros (`0` itself excepted): one text per id.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    let mut seq: u64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        seq = seq.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (seq <= MAX_SEQ).then_some((epoch, seq))
}

impl EventId {
    /// Moves this id to `seq` within its epoch.
    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }
}

impl FromStr for EventId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = split_event_id(s).ok_or_else(|| ParseError::EventId(s.chars().take(80).collect()))?;
        Ok(Self { epoch: epoch.to_owned(), seq })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(parse_retry_after(" 3 "), Some(std::time::Duration::from_secs(3)));
        for bad in ["", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after("99999999999999999999"), Some(std::time::Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn event_id_round_trips_through_text() {
        let id: EventId = "k3f9a-42".parse().unwrap();
        assert_eq!(id.epoch(), "k3f9a");
        assert_eq!(id.seq(), 42);
        assert_eq!(id.to_string(), "k3f9a-42");
        assert_eq!("e-0".parse::<EventId>().unwrap().seq(), 0);
        assert_eq!("e-9223372036854775807".parse::<EventId>().unwrap().seq(), MAX_SEQ);
    }

    #[test]
    fn event_ids_have_one_text_and_fit_a_signed_64_bit_integer() {
        for bad in ["e-007", "e-00", "e-01", "e-9223372036854775808", "e-18446744073709551615"] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} parsed");
        }
        assert!(EventId::new("e", MAX_SEQ + 1).is_err());
    }

    #[test]
    fn event_types_are_short_printable_text() {
        for good in ["message", "trade.filled", "é", &"t".repeat(128)] {
            assert!(validate_event_type(good).is_ok(), "{good:?} rejected");
        }
        for bad in ["", "a\nb", "tab\t", "nul\0", "del\u{7f}", &"t".repeat(129)] {
            assert!(validate_event_type(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn event_id_rejects_malformed_text() {
        for bad in [
            "",
            "-1",
            "abc",
            "abc-",
            "abc-x",
            "a b-1",
            "abc--1",
            "abc-+1",
            "abc-18446744073709551616",
            "abc-１",
            "abc-1é",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-1",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn channel_grammar_accepts_safe_names_only() {
        for good in ["trades", "a", "room:42", "x.y_z-1", &"c".repeat(128)] {
            assert!(validate_channel(good).is_ok(), "{good:?} rejected");
        }
        for bad in ["", "a/b", "a b", "a@b", "é", "a,b", &"c".repeat(129)] {
            assert!(validate_channel(bad).is_err(), "{bad:?} accepted");
        }
    }
}
