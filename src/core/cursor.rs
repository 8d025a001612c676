//! A subscription's cursor: what every frame about a channel does to it.
//!
//! The cursor is the id of the last event handed to the application (or the
//! position a reset or a `live` start put it at). Every transport and every
//! path (a WebSocket `subscribed`, an SSE stream's or a poll answer's, a live
//! `reset`, a probe connection, another endpoint) goes through the two
//! functions below, which are this table (PROTOCOL.md §1 and §4):
//!
//! | frame | current cursor `C` | new cursor | the application gets |
//! |---|---|---|---|
//! | `subscribed` `live` | none | `head` | nothing |
//! | `subscribed` `live` | `C` | `head` | `Reset(unknown_cursor)`: the server ignored `C` |
//! | `subscribed` `resumed` | none | `head` | nothing (as `live`) |
//! | `subscribed` `resumed` | `C`, `head` in `C`'s epoch, `head ≥ C` | `C` | `Resumed { after: C }` |
//! | `subscribed` `resumed` | `C`, `head` in `C`'s epoch, `head < C` | `head` | `Reset(unknown_cursor)`: the server no longer has `C` |
//! | `subscribed` `resumed` | `C`, `head` in another epoch | `C` | nothing: protocol error, reconnect |
//! | `subscribed` `reset` | any | `head`, below, equal to or above `C` | `Reset(reason)` |
//! | `reset` | any | `head`, below, equal to or above `C` | `Reset(reason)` |
//! | `event` `E-n` | `E-m`, `n = m + 1` | `E-n` | the event |
//! | `event` `E-n` | `E-m`, `n ≤ m` | `C` | nothing: a duplicate, dropped |
//! | `event` `E-n` | `E-m`, `n > m + 1` | `C` | nothing: a gap, reconnect and resume from `C` |
//! | `event` `F-n` | `E-m`, `F ≠ E` | `C` | nothing: a gap, reconnect and resume from `C` |
//!
//! After a reset the cursor is the reset's `head` whatever it was before: a
//! head below the cursor in the same epoch means the server lost events the
//! application has seen (a failover that lost writes), and the events it
//! sends after `head` are new events, not duplicates. A `live` answer or a
//! `resumed` one whose head is below the cursor is the server not honouring
//! the cursor; the application is told so rather than losing what follows.

use super::ResetReason;
use crate::protocol::{EventId, Outcome};

/// What a `subscribed` or `reset` frame means for the subscription.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// Starts (or goes on) with nothing to tell the application.
    Quiet,
    /// Resumed after the cursor: nothing was lost.
    Resumed,
    /// The cursor was not honoured: the application must be told.
    Reset(ResetReason),
    /// The frame contradicts the protocol; the cursor is unchanged.
    Violation(String),
}

/// `subscribed` with `outcome` (and `reset`'s `reason`) and `head`: the
/// first six rows of the table. `reset` frames are the `Outcome::Reset` row.
pub(crate) fn start(cursor: &mut Option<EventId>, outcome: Outcome, reason: ResetReason, head: EventId) -> Start {
    match (outcome, cursor.as_ref()) {
        (Outcome::Live | Outcome::Resumed, None) => {
            *cursor = Some(head);
            Start::Quiet
        }
        (Outcome::Live, Some(_)) => {
            *cursor = Some(head);
            Start::Reset(ResetReason::UnknownCursor)
        }
        (Outcome::Resumed, Some(c)) if c.epoch() != head.epoch() => {
            Start::Violation(format!("resumed with head {head} of another epoch than the cursor {c}"))
        }
        (Outcome::Resumed, Some(c)) if head.seq() < c.seq() => {
            *cursor = Some(head);
            Start::Reset(ResetReason::UnknownCursor)
        }
        (Outcome::Resumed, Some(_)) => Start::Resumed,
        (Outcome::Reset, _) => {
            *cursor = Some(head);
            Start::Reset(reason)
        }
    }
}

/// What to do with an event, by its id against the cursor: the last four
/// rows of the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// The cursor's successor: deliver it (the caller moves the cursor).
    Deliver,
    /// At or before the cursor: already delivered.
    Duplicate,
    /// After a hole, or in another epoch: never delivered.
    Gap,
}

/// Classifies event `epoch-seq` against `cursor`.
pub(crate) fn next(cursor: &EventId, epoch: &str, seq: u64) -> Next {
    if cursor.epoch() != epoch {
        Next::Gap
    } else if seq <= cursor.seq() {
        Next::Duplicate
    } else if seq - cursor.seq() == 1 {
        Next::Deliver
    } else {
        Next::Gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn id(s: &str) -> EventId {
        s.parse().unwrap()
    }

    fn run(cursor: Option<&str>, outcome: Outcome, head: &str) -> (Option<String>, Start) {
        let mut c = cursor.map(id);
        let r = start(&mut c, outcome, ResetReason::HistoryTruncated, id(head));
        (c.map(|c| c.to_string()), r)
    }

    #[test]
    fn every_reset_moves_the_cursor_to_its_head_lower_equal_or_higher() {
        for head in ["e-3", "e-7", "e-9", "f-0", "f-12"] {
            assert_eq!(
                run(Some("e-7"), Outcome::Reset, head),
                (Some(head.to_owned()), Start::Reset(ResetReason::HistoryTruncated)),
                "reset to {head}"
            );
        }
        assert_eq!(run(None, Outcome::Reset, "e-2"), (Some("e-2".into()), Start::Reset(ResetReason::HistoryTruncated)));
    }

    #[test]
    fn live_starts_at_the_head_and_reports_an_ignored_cursor() {
        assert_eq!(run(None, Outcome::Live, "e-4"), (Some("e-4".into()), Start::Quiet));
        assert_eq!(run(None, Outcome::Resumed, "e-4"), (Some("e-4".into()), Start::Quiet));
        assert_eq!(
            run(Some("e-9"), Outcome::Live, "e-4"),
            (Some("e-4".into()), Start::Reset(ResetReason::UnknownCursor))
        );
    }

    #[test]
    fn resumed_keeps_the_cursor_unless_the_head_is_below_it() {
        assert_eq!(run(Some("e-4"), Outcome::Resumed, "e-4"), (Some("e-4".into()), Start::Resumed));
        assert_eq!(run(Some("e-4"), Outcome::Resumed, "e-9"), (Some("e-4".into()), Start::Resumed));
        assert_eq!(
            run(Some("e-9"), Outcome::Resumed, "e-4"),
            (Some("e-4".into()), Start::Reset(ResetReason::UnknownCursor))
        );
        assert!(matches!(run(Some("e-4"), Outcome::Resumed, "f-9"), (Some(c), Start::Violation(_)) if c == "e-4"));
    }

    #[test]
    fn events_are_delivered_only_as_the_cursors_successor() {
        let c = id("e-5");
        assert_eq!(next(&c, "e", 6), Next::Deliver);
        assert_eq!(next(&c, "e", 5), Next::Duplicate);
        assert_eq!(next(&c, "e", 1), Next::Duplicate);
        assert_eq!(next(&c, "e", 7), Next::Gap);
        assert_eq!(next(&c, "f", 6), Next::Gap);
        assert_eq!(next(&id("e-9223372036854775807"), "e", 0), Next::Duplicate);
    }
}
