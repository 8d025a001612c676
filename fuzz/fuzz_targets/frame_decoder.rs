//! Server frames from arbitrary text: no panic; whatever decodes re-encodes
//! to something that decodes to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resub::protocol::{EventId, ServerFrame};

fuzz_target!(|text: &str| {
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
        let again = serde_json::to_string(&frame).expect("encodes");
        let back: ServerFrame = serde_json::from_str(&again).expect("decodes what it encoded");
        assert_eq!(back, frame);
    }
    if let Ok(id) = text.parse::<EventId>() {
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
    }
});
