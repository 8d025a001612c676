//! Server frames from arbitrary text: no panic; whatever decodes re-encodes
//! to something that decodes to the same frame; the quick reading of event
//! frames (`ServerFrame::read_event`) reads nothing the general decoder does
//! not read the same way, on arbitrary text and on the text placed inside an
//! event's `data` string (where it meets escapes); the same for long-poll
//! answers (`ServerFrame::read_events`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use resub::protocol::{EventId, ServerFrame};

fn agree(text: &str) {
    let general = serde_json::from_str::<ServerFrame>(text);
    if let Some(quick) = ServerFrame::read_event(text) {
        assert_eq!(general.ok(), Some(quick), "{text:?}");
    }
}

fn agree_batch(text: &str) {
    if let Some(quick) = ServerFrame::read_events(text) {
        let v: serde_json::Value = serde_json::from_str(text).expect("an answer read quickly is JSON");
        let general: Vec<ServerFrame> = serde_json::from_value(v["frames"].clone()).expect("its frames decode");
        assert_eq!(general, quick, "{text:?}");
    }
}

fuzz_target!(|text: &str| {
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
        let again = serde_json::to_string(&frame).expect("encodes");
        let back: ServerFrame = serde_json::from_str(&again).expect("decodes what it encoded");
        assert_eq!(back, frame);
        agree(&again);
    }
    agree(text);
    let event = format!(r#"{{"type":"event","channel":"c","id":"1-2","data":"{text}"}}"#);
    agree(&event);
    agree_batch(text);
    agree_batch(&format!(r#"{{"frames":[{event},{text}]}}"#));
    agree_batch(&format!(r#"{{"frames":[{event}]}}"#));
    agree_batch(&format!(r#"{{"frames":[{{"type":"welcome","heartbeat_ms":{text}}},{event}]}}"#));
    agree_batch(&format!(r#"{{"frames":[{{"type":"subscribed","channel":"c","outcome":"{text}","head":"1-0"}}]}}"#));
    agree_batch(&format!(r#"{{"frames":[{{"type":"subscribed","channel":"{text}","outcome":"reset","reason":"{text}","head":"1-0"}}]}}"#));
    if let Ok(id) = text.parse::<EventId>() {
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
    }
});
