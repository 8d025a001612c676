//! The core session fed arbitrary inputs at arbitrary times: no panic, and
//! what it delivers per channel never goes backwards or repeats within an
//! epoch.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use resub::core::{Config, ConnId, Input, Output, Seeds, Session, TransportError};
use resub::protocol::EventId;
use resub::{Instant, Message};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    // An odd first byte: tokens come from the application (`Input::Token`).
    let mut config = Config::default();
    config.await_token = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(mut s) = Session::new(config, "http://fuzz", Seeds { jitter: 1, keys: 1 }, now) else { return };
    let _ = s.subscribe("a", None, now);
    let _ = s.subscribe("b", Some("e-0".parse().unwrap()), now);
    let mut last: HashMap<String, EventId> = HashMap::new();
    let mut conn = ConnId(0);
    let mut chunks = data.split(|b| *b == 0xff);
    while let Some(chunk) = chunks.next() {
        let Some((&op, rest)) = chunk.split_first() else { continue };
        match op % 8 {
            0 => s.handle_input(Input::Opened { conn }, now),
            1 => s.handle_input(Input::Received { conn, text: String::from_utf8_lossy(rest).into_owned() }, now),
            2 => s.handle_input(Input::Closed { conn, error: TransportError::Lost("x".into()) }, now),
            3 => {
                let status = u16::from_le_bytes([rest.first().copied().unwrap_or(0), rest.get(1).copied().unwrap_or(0)]);
                let retry_after = rest.get(2).map(|s| Duration::from_secs(u64::from(*s) << 20));
                s.handle_input(Input::Closed { conn, error: TransportError::Status { status, retry_after } }, now);
            }
            4 => {
                now += Duration::from_millis(u64::from(rest.first().copied().unwrap_or(1)) * 37);
                s.handle_timeout(now);
            }
            5 => s.handle_input(Input::Activity { conn }, now),
            6 => {
                let token = (!rest.is_empty()).then(|| String::from_utf8_lossy(rest).into_owned());
                s.handle_input(Input::Token(token), now);
            }
            _ => {
                let limit = usize::from(rest.first().copied().unwrap_or(0)) << 10;
                s.handle_input(Input::Closed { conn, error: TransportError::TooLarge { limit } }, now);
            }
        }
        while let Some(out) = s.poll_output() {
            match out {
                Output::Connect { conn: c, .. } => conn = c,
                Output::Deliver { message: Message::Event(e) } => {
                    let channel = e.channel.to_string();
                    let id: EventId = e.id.parse().expect("delivered ids are well formed");
                    if let Some(prev) = last.get(&channel)
                        && prev.epoch() == id.epoch()
                    {
                        assert_eq!(id.seq(), prev.seq() + 1, "out of order or repeated on {channel}");
                    }
                    last.insert(channel, id);
                }
                Output::Deliver { message: Message::Reset { channel, .. } } => {
                    last.remove(&channel);
                }
                _ => {}
            }
        }
        if let Some(t) = s.poll_timeout() {
            assert!(t >= start, "deadline in the past of the start");
        }
    }
});
