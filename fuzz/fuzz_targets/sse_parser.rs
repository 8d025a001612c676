//! The SSE parser on arbitrary bytes: no panic, bounded output, the same
//! items whatever the split point, and a strict parser that agrees with the
//! standard one on valid UTF-8 and refuses only invalid UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resub::protocol::sse::{SseError, SseItem, SseParser};

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, bytes) = input;
    let mut whole = Vec::new();
    let whole_ok = SseParser::new(4096).feed(bytes, &mut whole).is_ok();
    let cut = usize::from(cut) % (bytes.len() + 1);
    let mut parser = SseParser::new(4096);
    let mut split = Vec::new();
    let split_ok = parser.feed(&bytes[..cut], &mut split).is_ok() && parser.feed(&bytes[cut..], &mut split).is_ok();
    if whole_ok && split_ok {
        assert_eq!(whole, split, "split at {cut} changed the items");
    }
    let mut strict = Vec::new();
    let strict_result = SseParser::new(4096).strict_utf8().feed(bytes, &mut strict);
    match strict_result {
        Err(SseError::InvalidUtf8) => assert!(std::str::from_utf8(bytes).is_err(), "valid UTF-8 refused"),
        _ if std::str::from_utf8(bytes).is_ok() => {
            assert_eq!(strict_result.is_ok(), whole_ok);
            assert_eq!(strict, whole, "strict and standard parsers disagree on valid UTF-8");
        }
        _ => {}
    }
    for item in whole {
        if let SseItem::Event(ev) = item {
            assert!(ev.data.len() <= bytes.len() * 3);
            assert!(!ev.last_event_id.contains('\0'));
        }
    }
});
