// Swift idioms over the generated bindings (resub_ffi.swift): an
// AsyncThrowingStream per subscription, an AsyncStream of connection states,
// a listener base class whose methods all default to nothing but onEvent,
// and a stable `code` on every error. Add it to the app target beside the
// generated resub_ffi.swift.
//
// Not compiled on the machines this project is built on (no Swift
// toolchain there): the test tier checks that every generated name it uses
// exists in the generated file. Compile it in Xcode with the bindings.

import Foundation

/// What a subscription yields; `type` is the same discriminator as in JS, Kotlin and Python.
public enum ResubMessage: Equatable {
    /// The next event after the cursor.
    case event(channel: String, id: String, event: String, data: String)
    /// A (re)subscription resumed after `after`: nothing was lost.
    case resumed(channel: String, after: String)
    /// The subscription could not continue from its cursor; it continues after `head`. Re-sync.
    case reset(channel: String, reason: String, head: String)
    /// `clientId` joined or left the channel's presence.
    case presence(channel: String, action: String, clientId: String, data: String)

    public var type: String {
        switch self {
        case .event: return "event"
        case .resumed: return "resumed"
        case .reset: return "reset"
        case .presence: return "presence"
        }
    }
}

/// A listener for `Client.subscribe`: override `onEvent`; every other method does nothing by default.
open class SubscriptionAdapter: SubscriptionListener {
    public init() {}
    open func onEvent(event: EventMessage) throws {}
    open func onResumed(channel: String, after: String) throws {}
    open func onReset(channel: String, reason: String, head: String) throws {}
    open func onPresence(channel: String, action: String, clientId: String, data: String) throws {}
    open func onError(code: String, message: String) throws {}
    open func onEnd() throws {}
}

extension ResubError {
    /// The stable code of the error (`unauthorized`, `closed`, …), the same on every surface.
    public var code: String {
        switch self {
        case .Unauthorized: return "unauthorized"
        case .Forbidden: return "forbidden"
        case .BadRequest: return "bad_request"
        case .Tls: return "tls"
        case .RetriesExhausted: return "retries_exhausted"
        case .Closed: return "closed"
        case .AlreadySubscribed: return "already_subscribed"
        case .InvalidArgument: return "invalid_argument"
        case .InvalidUrl: return "invalid_url"
        case .PublishRejected: return "publish_rejected"
        case .PublishQueueFull: return "publish_queue_full"
        case .FrameTooLarge: return "frame_too_large"
        case .InvalidClientId: return "invalid_client_id"
        case .Unavailable: return "unavailable"
        case .CursorStore: return "cursor_store"
        case .NoRandomness: return "no_randomness"
        case .Other: return "other"
        }
    }

    /// The error of a stable `code`, as a subscription's `onError` names it.
    public static func of(code: String, message: String) -> ResubError {
        switch code {
        case "unauthorized": return .Unauthorized(message: message)
        case "forbidden": return .Forbidden(message: message)
        case "bad_request": return .BadRequest(message: message)
        case "tls": return .Tls(message: message)
        case "retries_exhausted": return .RetriesExhausted(message: message)
        case "closed": return .Closed(message: message)
        case "already_subscribed": return .AlreadySubscribed(message: message)
        case "invalid_argument": return .InvalidArgument(message: message)
        case "invalid_url": return .InvalidUrl(message: message)
        case "publish_rejected": return .PublishRejected(message: message)
        case "publish_queue_full": return .PublishQueueFull(message: message)
        case "frame_too_large": return .FrameTooLarge(message: message)
        case "invalid_client_id": return .InvalidClientId(message: message)
        case "unavailable": return .Unavailable(message: message)
        case "cursor_store": return .CursorStore(message: message)
        case "no_randomness": return .NoRandomness(message: message)
        default: return .Other(message: message)
        }
    }
}

/// Hands a subscription's callbacks (on the library's delivery thread) to a stream.
private final class StreamListener: SubscriptionListener {
    let continuation: AsyncThrowingStream<ResubMessage, Error>.Continuation

    init(_ continuation: AsyncThrowingStream<ResubMessage, Error>.Continuation) {
        self.continuation = continuation
    }

    func onEvent(event: EventMessage) throws {
        continuation.yield(.event(channel: event.channel, id: event.id, event: event.event, data: event.data))
    }

    func onResumed(channel: String, after: String) throws {
        continuation.yield(.resumed(channel: channel, after: after))
    }

    func onReset(channel: String, reason: String, head: String) throws {
        continuation.yield(.reset(channel: channel, reason: reason, head: head))
    }

    func onPresence(channel: String, action: String, clientId: String, data: String) throws {
        continuation.yield(.presence(channel: channel, action: action, clientId: clientId, data: data))
    }

    func onError(code: String, message: String) throws {
        continuation.finish(throwing: ResubError.of(code: code, message: message))
    }

    func onEnd() throws {
        continuation.finish()
    }
}

private final class StateStreamListener: StateListener {
    let continuation: AsyncStream<State>.Continuation

    init(_ continuation: AsyncStream<State>.Continuation) {
        self.continuation = continuation
    }

    func onState(state: State) throws {
        continuation.yield(state)
        if case .closed = state {
            continuation.finish()
        }
    }
}

extension Client {
    /// Starts a client for `url` with the defaults, after `configure` changed what it wants.
    public convenience init(url: String, configure: (inout ClientConfig) -> Void = { _ in }) throws {
        var config = ClientConfig(url: url)
        configure(&config)
        try self.init(config: config)
    }

    /// The messages of `channel`, after `from` (or the cursor store's, or live). Iterating subscribes;
    /// ending the iteration (or dropping the stream) unsubscribes. Throws the subscription's error.
    public func messages(channel: String, from: String? = nil) -> AsyncThrowingStream<ResubMessage, Error> {
        AsyncThrowingStream { continuation in
            do {
                let handle = try self.subscribe(channel: channel, from: from, listener: StreamListener(continuation))
                continuation.onTermination = { _ in handle.cancel() }
            } catch {
                continuation.finish(throwing: error)
            }
        }
    }

    /// The connection states, the current one first; the stream ends after `.closed`.
    public func states() -> AsyncStream<State> {
        AsyncStream { continuation in
            let handle = self.onState(listener: StateStreamListener(continuation))
            continuation.onTermination = { _ in handle.cancel() }
        }
    }
}
