use super::*;
use resub::ConnectionState;

#[test]
fn every_error_keeps_its_code_and_message_across_the_border() {
    let errors = [
        resub::Error::Unauthorized,
        resub::Error::Forbidden { channel: "c".into(), message: "no".into() },
        resub::Error::BadRequest("x".into()),
        resub::Error::Tls("bad certificate".into()),
        resub::Error::RetriesExhausted { attempts: 3, last: resub::DisconnectReason::HeartbeatTimeout },
        resub::Error::Closed,
        resub::Error::AlreadySubscribed("c".into()),
        resub::Error::InvalidUrl { url: "x".into(), why: "no scheme" },
        resub::Error::PublishRejected { code: "413".into(), message: "too large".into() },
        resub::Error::PublishQueueFull { waiting: 3, bytes: 30 },
        resub::Error::EndOfStream,
        resub::Error::HttpStatus { status: 500 },
        resub::Error::UnexpectedContentType("text/html".into()),
        resub::Error::FrameTooLarge { limit: 10 },
        resub::Error::InvalidClientId("a b".into()),
        resub::Error::Unavailable("HTTP 503".into()),
        resub::Error::NoRandomness("no entropy".into()),
        resub::Error::InvalidArgument("transports: empty".into()),
        "bad channel!".parse::<resub::protocol::EventId>().map(|_| ()).unwrap_err().into(),
    ];
    let mut codes = std::collections::BTreeSet::new();
    let (mut other, mut total) = (0, 0);
    for e in errors {
        let ffi = ResubError::from(e.clone());
        assert_eq!(ffi.to_string(), e.to_string(), "the message");
        total += 1;
        if ffi.code() == "other" {
            // The plain-SSE reader's errors, which these bindings do not offer.
            assert!(matches!(e.code(), "end_of_stream" | "http_status" | "unexpected_content_type"), "{e:?}");
            other += 1;
            continue;
        }
        assert_eq!(ffi.code(), e.code());
        codes.insert(ffi.code());
    }
    assert_eq!(other, 3);
    // Malformed input (`Parse`) and an unusable option share invalid_argument.
    assert_eq!(codes.len(), total - other - 1, "every other error has a variant of its own");
}

#[test]
fn states_convert_with_their_codes_and_details() {
    let fallback =
        resub::Fallback { from: Transport::WebSocket, reason: resub::DisconnectReason::Refused { status: 403 } };
    let endpoint = "http://b.example:8080".to_owned();
    let s: State =
        ConnectionState::Connected { transport: Transport::Sse, fallback: Some(fallback), endpoint: endpoint.clone() }
            .into();
    assert_eq!(
        s,
        State::Connected {
            transport: TransportKind::Sse,
            fallback_from: Some(TransportKind::Ws),
            fallback_reason: Some(DisconnectCode::Refused),
            endpoint,
        }
    );
    let s: State = ConnectionState::Closed { error: Some(resub::Error::Unauthorized) }.into();
    assert!(matches!(s, State::Closed { error: Some(ErrorInfo { code, .. }) } if code == "unauthorized"));
    let reason = resub::DisconnectReason::NoCredentials("the token provider failed: boom".into());
    let s: State = ConnectionState::Disconnected {
        reason,
        attempt: 1,
        retry_at: resub::Instant::now(),
        retry_in: Duration::from_millis(250),
    }
    .into();
    assert!(matches!(
        s,
        State::Disconnected { reason: DisconnectCode::NoCredentials, ref detail, attempt: 1, retry_in_ms: 250 }
            if detail.contains("boom")
    ));
}

#[test]
fn every_disconnect_reason_has_a_code_on_this_surface() {
    use resub::DisconnectReason as R;
    let reasons = [
        R::ConnectFailed("x".into()),
        R::Refused { status: 500 },
        R::Unsupported("x".into()),
        R::Unavailable { retry_after: None },
        R::Lost("x".into()),
        R::ServerClosed { code: 1000, reason: String::new() },
        R::HeartbeatTimeout,
        R::OpenTimeout,
        R::Protocol("x".into()),
        R::Tls("x".into()),
        R::Offline,
        R::NoCredentials("x".into()),
    ];
    let codes: std::collections::BTreeSet<_> = reasons.iter().map(|r| format!("{:?}", types_code(r))).collect();
    assert_eq!(codes.len(), reasons.len(), "each reason maps to its own code");
}

fn types_code(r: &resub::DisconnectReason) -> DisconnectCode {
    let s: State = ConnectionState::Disconnected {
        reason: r.clone(),
        attempt: 0,
        retry_at: resub::Instant::now(),
        retry_in: Duration::ZERO,
    }
    .into();
    match s {
        State::Disconnected { reason, .. } => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn options_left_out_take_the_core_defaults() {
    let _guard = runtime().enter();
    let cfg = default_config("http://127.0.0.1:9".into());
    let bad = |f: fn(&mut ClientConfig)| {
        let mut c = cfg.clone();
        f(&mut c);
        match Client::new(c) {
            Err(e) => e.code().to_owned(),
            Ok(_) => "ok".to_owned(),
        }
    };
    assert_eq!(bad(|_| {}), "ok");
    assert_eq!(bad(|c| c.transports = Some(vec![])), "invalid_argument");
    assert_eq!(bad(|c| c.open_timeout_ms = Some(-1)), "invalid_argument");
    assert_eq!(bad(|c| c.url = "https://[::1".into()), "invalid_url");
    shutdown_all();
}
