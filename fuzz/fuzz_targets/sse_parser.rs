//! The SSE parser on arbitrary bytes: no panic, bounded output, and the same
//! items whatever the split point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resub::protocol::sse::{SseItem, SseParser};

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
    for item in whole {
        if let SseItem::Event(ev) = item {
            assert!(ev.data.len() <= bytes.len() * 3);
            assert!(!ev.last_event_id.contains('\0'));
        }
    }
});
