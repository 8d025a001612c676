#![cfg(not(target_arch = "wasm32"))]
//! The README's "One contract, three surfaces" table, checked on the Rust
//! surface: every error and disconnect reason code it lists is the one the
//! core gives, and the core gives no other.

use std::collections::BTreeSet;
use std::time::Duration;

use resub::{DisconnectReason, Error};

/// The codes listed in the README between `<!-- contract:NAME -->` and
/// `<!-- /contract -->`, as backquoted words.
fn listed(name: &str) -> BTreeSet<String> {
    let readme = include_str!("../README.md");
    let start = readme.find(&format!("<!-- contract:{name} -->")).expect("the table's section");
    let section = &readme[start..];
    let section = &section[..section.find("<!-- /contract -->").expect("its end")];
    // After the colon: the list itself.
    let list = &section[section.find("):").expect("a list after the names") + 2..];
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn every_disconnect_reason_code_is_the_tables() {
    let reasons = [
        DisconnectReason::ConnectFailed("x".into()),
        DisconnectReason::Refused { status: 500 },
        DisconnectReason::Unsupported("x".into()),
        DisconnectReason::Unavailable { retry_after: Some(Duration::from_secs(1)) },
        DisconnectReason::Lost("x".into()),
        DisconnectReason::ServerClosed { code: 1000, reason: String::new() },
        DisconnectReason::HeartbeatTimeout,
        DisconnectReason::OpenTimeout,
        DisconnectReason::Protocol("x".into()),
        DisconnectReason::Tls("x".into()),
        DisconnectReason::Offline,
        DisconnectReason::NoCredentials("x".into()),
    ];
    let codes: BTreeSet<String> = reasons.iter().map(|r| r.code().to_owned()).collect();
    assert_eq!(codes.len(), reasons.len(), "one code per reason");
    assert_eq!(codes, listed("disconnect-codes"));
}

#[test]
fn every_error_code_is_the_tables_or_a_native_only_one() {
    let errors = [
        Error::Unauthorized,
        Error::Forbidden { channel: "c".into(), message: "no".into() },
        Error::BadRequest("x".into()),
        Error::Tls("x".into()),
        Error::RetriesExhausted { attempts: 1, last: DisconnectReason::Offline },
        Error::Closed,
        Error::AlreadySubscribed("c".into()),
        Error::InvalidArgument("x".into()),
        Error::InvalidUrl { url: "x".into(), why: "x" },
        Error::PublishRejected { code: "400".into(), message: "x".into() },
        Error::PublishQueueFull { waiting: 1, bytes: 1 },
        Error::FrameTooLarge { limit: 1 },
        Error::InvalidClientId("x".into()),
        Error::Unavailable("x".into()),
        Error::Store(resub::StoreError::Io("x".into())),
        Error::NoRandomness("x".into()),
        Error::EndOfStream,
        Error::HttpStatus { status: 500 },
        Error::UnexpectedContentType("x".into()),
    ];
    let codes: BTreeSet<String> = errors.iter().map(|e| e.code().to_owned()).collect();
    let native_only: BTreeSet<String> =
        ["end_of_stream", "http_status", "unexpected_content_type"].map(str::to_owned).into();
    assert_eq!(codes.difference(&native_only).cloned().collect::<BTreeSet<_>>(), listed("error-codes"));
}
