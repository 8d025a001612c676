//! An incremental parser for `text/event-stream`, following the WHATWG HTML
//! "event stream interpretation" rules.
//!
//! Feed it bytes split anywhere (even inside a UTF-8 character); it yields
//! the same events as for the whole stream at once. Lines end in CR, LF or
//! CRLF, in any mix. Line ends are found with `memchr`; complete lines are
//! read straight from the input, and only a trailing partial line is copied.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field given in this event, if any (`Some("")` for an empty
    /// `id:` line, which clears the last event id).
    pub id: Option<String>,
    /// The stream's last event id when this event was dispatched (what a
    /// client sends as `Last-Event-ID` on reconnect).
    pub last_event_id: String,
    /// The event type; `message` when the event had no `event` field.
    pub event: String,
    /// The `data` lines joined with LF.
    pub data: String,
}

/// What the parser saw, besides events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(SseEvent),
    /// A `retry` field with a valid value: the reconnection time, in ms.
    Retry(u64),
    /// A comment line (often a keep-alive).
    Comment,
}

/// An item as the parser holds it, borrowing the parser's buffers: reading
/// one costs no allocation (see [`SseParser::feed_each`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseRef<'a> {
    /// A dispatched event; fields as in [`SseEvent`].
    Event {
        /// The `id` field given in this event, if any.
        id: Option<&'a str>,
        /// The stream's last event id when this event was dispatched.
        last_event_id: &'a str,
        /// The event type; `message` when the event had no `event` field.
        event: &'a str,
        /// The `data` lines joined with LF.
        data: &'a str,
    },
    /// A `retry` field with a valid value, in ms.
    Retry(u64),
    /// A comment line.
    Comment,
}

impl SseRef<'_> {
    /// The owned item.
    pub fn to_item(self) -> SseItem {
        match self {
            SseRef::Event { id, last_event_id, event, data } => SseItem::Event(SseEvent {
                id: id.map(str::to_owned),
                last_event_id: last_event_id.to_owned(),
                event: event.to_owned(),
                data: data.to_owned(),
            }),
            SseRef::Retry(ms) => SseItem::Retry(ms),
            SseRef::Comment => SseItem::Comment,
        }
    }
}

/// Capacity above which the event buffers are let go after a dispatch
/// rather than kept for the next event: one large event does not leave an
/// idle stream holding its size.
const KEEP_CAPACITY: usize = 4096;

/// The parser rejected the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line or an event grew past the configured limit.
    #[error("SSE event larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A field was not valid UTF-8 (only with [`SseParser::strict_utf8`]).
    #[error("SSE field is not valid UTF-8")]
    InvalidUtf8,
}

/// Incremental `text/event-stream` parser.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting the next one belongs to it.
    after_cr: bool,
    /// Still at the start of the stream (a BOM may come).
    at_start: bool,
    data: String,
    /// Whether any `data` field was seen since the last dispatch.
    has_data: bool,
    event: String,
    /// Whether an `id` field was seen since the last dispatch (its value is
    /// `last_event_id`).
    id_field: bool,
    last_event_id: String,
    limit: usize,
    strict: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(1 << 20)
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser that rejects lines and events larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            partial: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id_field: false,
            last_event_id: String::new(),
            limit,
            strict: false,
        }
    }

    /// Rejects fields that are not valid UTF-8 with [`SseError::InvalidUtf8`]
    /// instead of replacing the bad bytes with U+FFFD as the standard says:
    /// for streams whose producer is known to send UTF-8, where a replaced
    /// byte would silently change the data.
    #[must_use]
    pub fn strict_utf8(mut self) -> Self {
        self.strict = true;
        self
    }

    fn text<'a>(&self, value: &'a [u8]) -> Result<std::borrow::Cow<'a, str>, SseError> {
        if self.strict {
            std::str::from_utf8(value).map(std::borrow::Cow::Borrowed).map_err(|_| SseError::InvalidUtf8)
        } else {
            Ok(String::from_utf8_lossy(value))
        }
    }

    /// The last event id seen so far (sent as `Last-Event-ID` on reconnect).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Parses `chunk`, appending what it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseItem>) -> Result<(), SseError> {
        self.feed_each(chunk, |item| out.push(item.to_item()))
    }

    /// Parses `chunk`, handing each item it completes to `each` as it is
    /// completed, borrowed from the parser: nothing is allocated per event.
    pub fn feed_each(&mut self, mut chunk: &[u8], mut each: impl FnMut(SseRef<'_>)) -> Result<(), SseError> {
        if self.at_start {
            // The BOM may itself arrive split: hold back a prefix of it.
            let mut probe = std::mem::take(&mut self.partial);
            probe.extend_from_slice(chunk);
            if probe.len() < BOM.len() && BOM.starts_with(&probe) {
                self.partial = probe;
                return Ok(());
            }
            self.at_start = false;
            let start = if probe.starts_with(BOM) { BOM.len() } else { 0 };
            return self.feed_lines(&probe[start..], &mut each);
        }
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        self.feed_lines(chunk, &mut each)
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut impl FnMut(SseRef<'_>)) -> Result<(), SseError> {
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) {
            let line_end = chunk[pos];
            if self.partial.is_empty() {
                self.line(&chunk[..pos], out)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..pos]);
                self.line(&line, out)?;
                line.clear();
                self.partial = line; // keep the allocation
            }
            chunk = &chunk[pos + 1..];
            if line_end == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        if self.partial.len() + chunk.len() > self.limit {
            return Err(SseError::TooLarge { limit: self.limit });
        }
        self.partial.extend_from_slice(chunk);
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut impl FnMut(SseRef<'_>)) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            out(SseRef::Comment);
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.limit {
                    return Err(SseError::TooLarge { limit: self.limit });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                let text = self.text(value)?;
                self.data.push_str(&text);
                self.has_data = true;
            }
            b"event" => {
                let text = self.text(value)?;
                self.event.clear();
                self.event.push_str(&text);
            }
            // An id containing NUL is ignored.
            b"id" if memchr::memchr(0, value).is_none() => {
                let text = self.text(value)?;
                self.last_event_id.clear();
                self.last_event_id.push_str(&text);
                self.id_field = true;
            }
            // Only all-ASCII-digit values count; too large for u64 saturates.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let ms = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
                out(SseRef::Retry(ms));
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut impl FnMut(SseRef<'_>)) {
        let id = std::mem::take(&mut self.id_field);
        if self.has_data {
            self.has_data = false;
            out(SseRef::Event {
                id: id.then_some(self.last_event_id.as_str()),
                last_event_id: &self.last_event_id,
                event: if self.event.is_empty() { "message" } else { &self.event },
                data: &self.data,
            });
        }
        for buf in [&mut self.data, &mut self.event] {
            if buf.capacity() > KEEP_CAPACITY {
                *buf = String::new();
            } else {
                buf.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(bytes: &[u8]) -> Vec<SseItem> {
        let mut p = SseParser::default();
        let mut out = vec![];
        p.feed(bytes, &mut out).unwrap();
        out
    }

    fn events(bytes: &[u8]) -> Vec<SseEvent> {
        parse(bytes)
            .into_iter()
            .filter_map(|i| match i {
                SseItem::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn ev(id: Option<&str>, last: &str, event: &str, data: &str) -> SseEvent {
        SseEvent { id: id.map(Into::into), last_event_id: last.into(), event: event.into(), data: data.into() }
    }

    #[test]
    fn invalid_utf8_is_replaced_by_default_and_refused_when_strict() {
        let bytes = b"data: a\xFFb\n\n";
        assert_eq!(events(bytes)[0].data, "a\u{FFFD}b");
        let mut strict = SseParser::new(1024).strict_utf8();
        let mut out = Vec::new();
        assert_eq!(strict.feed(bytes, &mut out), Err(SseError::InvalidUtf8));
        assert!(out.is_empty(), "nothing dispatched");
        // Valid multi-byte characters split across chunks still pass.
        let mut strict = SseParser::new(1024).strict_utf8();
        let text = "data: é€\n\n".as_bytes();
        for (i, b) in text.iter().enumerate() {
            strict.feed(std::slice::from_ref(b), &mut out).unwrap_or_else(|e| panic!("byte {i}: {e}"));
        }
        assert!(matches!(&out[..], [SseItem::Event(e)] if e.data == "é€"));
    }

    #[test]
    fn data_lines_join_with_lf_and_type_defaults_to_message() {
        assert_eq!(events(b"data: a\ndata: b\n\n"), [ev(None, "", "message", "a\nb")]);
        assert_eq!(events(b"event: t\ndata\n\n"), [ev(None, "", "t", "")]);
    }

    #[test]
    fn cr_lf_and_crlf_line_ends_mix() {
        assert_eq!(events(b"data: a\rdata: b\r\ndata: c\n\r\n"), [ev(None, "", "message", "a\nb\nc")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(events(b"data:  two\n\ndata:none\n\n")[0].data, " two");
        assert_eq!(events(b"data:none\n\n")[0].data, "none");
    }

    #[test]
    fn a_line_without_colon_is_a_field_with_an_empty_value() {
        assert_eq!(events(b"data\ndata\n\n")[0].data, "\n");
    }

    #[test]
    fn id_with_nul_is_ignored_and_ids_persist() {
        let e = events(b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\ndata: c\n\nid\ndata: d\n\n");
        assert_eq!(e[0], ev(Some("1"), "1", "message", "a"));
        assert_eq!(e[1], ev(None, "1", "message", "b"));
        assert_eq!(e[2], ev(None, "1", "message", "c"));
        assert_eq!(e[3], ev(Some(""), "", "message", "d"));
    }

    #[test]
    fn retry_needs_all_ascii_digits() {
        let items = parse(b"retry: 1500\nretry: 15x\nretry: -1\nretry:\nretry: 99999999999999999999999\n");
        assert_eq!(items, [SseItem::Retry(1500), SseItem::Retry(u64::MAX)]);
    }

    #[test]
    fn comments_are_reported_and_do_not_dispatch() {
        assert_eq!(parse(b": ping\n\n"), [SseItem::Comment]);
    }

    #[test]
    fn event_type_resets_after_each_dispatch() {
        let e = events(b"event: a\ndata: 1\n\ndata: 2\n\n");
        assert_eq!((e[0].event.as_str(), e[1].event.as_str()), ("a", "message"));
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_and_its_type_is_dropped() {
        assert_eq!(events(b"event: a\n\ndata: x\n\n"), [ev(None, "", "message", "x")]);
    }

    #[test]
    fn a_leading_bom_is_stripped_once() {
        assert_eq!(events(b"\xEF\xBB\xBFdata: a\n\n")[0].data, "a");
        // A second BOM is part of the field name, so the line is ignored.
        assert_eq!(events(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n"), []);
    }

    #[test]
    fn an_incomplete_event_at_the_end_is_discarded() {
        assert_eq!(events(b"data: a\n\ndata: b\n"), [ev(None, "", "message", "a")]);
        assert_eq!(events(b"data: a"), []);
    }

    #[test]
    fn unknown_fields_are_ignored_and_invalid_utf8_is_replaced() {
        assert_eq!(events(b"foo: bar\ndata: \xFFok\n\n")[0].data, "\u{FFFD}ok");
    }

    #[test]
    fn oversized_lines_and_events_are_rejected() {
        let mut p = SseParser::new(16);
        let mut out = vec![];
        assert!(p.feed(&[b'x'; 17], &mut out).is_err());
        let mut p = SseParser::new(16);
        assert!(p.feed(b"data: 0123456789\ndata: 0123456789\n", &mut out).is_err());
    }

    const SAMPLE: &[u8] = "\u{FEFF}retry: 10\r\n: hi\r\nid: 1\r\nevent: é\r\ndata: h\u{e9}llo 🌍\r\ndata\r\n\r\nid: 2\rdata: x\r\rdata: y\ndata:  z\n\nid: a\0b\ndata: q\n\n\n\ndata: incomplete"
        .as_bytes();

    #[test]
    fn every_split_point_gives_the_same_items() {
        let whole = parse(SAMPLE);
        assert_eq!(whole.iter().filter(|i| matches!(i, SseItem::Event(_))).count(), 4);
        for cut in 0..=SAMPLE.len() {
            let mut p = SseParser::default();
            let mut out = vec![];
            p.feed(&SAMPLE[..cut], &mut out).unwrap();
            p.feed(&SAMPLE[cut..], &mut out).unwrap();
            assert_eq!(out, whole, "split at {cut}");
        }
        // And byte by byte.
        let mut p = SseParser::default();
        let mut out = vec![];
        for b in SAMPLE {
            p.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn borrowed_items_are_the_owned_ones() {
        let stream = b"id: 7\nevent: tick\ndata: a\ndata: b\n\n: hi\nretry: 5\ndata: c\n\nid\ndata: d\n\n";
        let mut seen = Vec::new();
        SseParser::default().feed_each(stream, |item| seen.push(item.to_item())).unwrap();
        assert_eq!(seen, parse(stream));
        let SseItem::Event(last) = &seen[seen.len() - 1] else { panic!("{seen:?}") };
        assert_eq!((last.id.as_deref(), last.last_event_id.as_str(), last.event.as_str()), (Some(""), "", "message"));
    }

    #[test]
    fn a_large_event_does_not_leave_its_buffer_held() {
        let mut p = SseParser::new(1 << 20);
        let big = format!("event: {}\ndata: {}\n\n", "e".repeat(10_000), "x".repeat(100_000));
        let mut n = 0;
        p.feed_each(big.as_bytes(), |item| {
            n += usize::from(matches!(item, SseRef::Event { data, .. } if data.len() == 100_000))
        })
        .unwrap();
        assert_eq!(n, 1);
        assert!(p.data.capacity() <= KEEP_CAPACITY && p.event.capacity() <= KEEP_CAPACITY);
    }
}
