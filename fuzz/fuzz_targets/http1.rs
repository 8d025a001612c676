//! The HTTP/1.1 answer reader on arbitrary bytes: no panic, a body never
//! longer than its input, and the same body and outcome whatever the split
//! point, for every framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use resub::protocol::http1::{BodyDecoder, Decoded, Http1Error, parse_head};

/// The body `pieces` decode to, and how it ended.
fn decode(mut decoder: BodyDecoder, pieces: &[&[u8]]) -> (Vec<u8>, Result<(), Http1Error>) {
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut next = pieces.iter();
    loop {
        match decoder.decode(&pending) {
            Err(e) => return (out, Err(e)),
            Ok((used, Decoded::Data(r))) => {
                assert!(r.end <= used && used <= pending.len());
                assert!(!r.is_empty(), "empty data");
                out.extend_from_slice(&pending[r]);
                pending.drain(..used);
            }
            Ok((_, Decoded::End)) => return (out, Ok(())),
            Ok((used, Decoded::NeedMore)) => {
                assert!(used <= pending.len());
                pending.drain(..used);
                match next.next() {
                    Some(piece) => pending.extend_from_slice(piece),
                    None => return (out, decoder.end_of_input()),
                }
            }
        }
    }
}

fuzz_target!(|input: (u16, u8, &[u8])| {
    let (cut, which, bytes) = input;
    let cut = usize::from(cut) % (bytes.len() + 1);
    if let Ok(Some((head, used))) = parse_head(bytes) {
        assert!(used <= bytes.len());
        let _ = head.body();
        let _ = head.keep_alive();
    }
    // Heads are parsed the same however much of them has arrived.
    if let Ok(Some((head, used))) = parse_head(&bytes[..cut]) {
        assert_eq!(parse_head(bytes).ok().flatten(), Some((head, used)));
    }
    let decoder = match which % 3 {
        0 => BodyDecoder::chunked(),
        1 => BodyDecoder::length(u64::from(which)),
        _ => BodyDecoder::until_close(),
    };
    let whole = decode(decoder.clone(), &[bytes]);
    let split = decode(decoder, &[&bytes[..cut], &bytes[cut..]]);
    assert!(whole.0.len() <= bytes.len());
    // The same body and outcome (an error's wording may differ: a line found
    // too long before it is found malformed).
    assert_eq!((whole.0, whole.1.is_ok()), (split.0, split.1.is_ok()), "split at {cut}");
});
