// Kotlin idioms over the generated bindings (uniffi.resub_ffi): a Flow per
// subscription, a StateFlow of the connection state, a listener base class
// whose methods all default to nothing but onEvent, a `code` on every
// exception, and a JVM shutdown hook that stops every client before the VM
// exits. Ship it beside the generated resub_ffi.kt.
package resub

import kotlin.time.Duration
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Job
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.callbackFlow
import uniffi.resub_ffi.Client
import uniffi.resub_ffi.ClientConfig
import uniffi.resub_ffi.EventMessage
import uniffi.resub_ffi.ResubException
import uniffi.resub_ffi.State
import uniffi.resub_ffi.StateListener
import uniffi.resub_ffi.SubscriptionListener
import uniffi.resub_ffi.shutdownAll

/** What a subscription yields; `type` is the same discriminator as in JS and Python. */
sealed interface Message {
    val channel: String
    val type: String

    /** The next event after the cursor. */
    data class Event(override val channel: String, val id: String, val event: String, val data: String) : Message {
        override val type get() = "event"
    }

    /** A (re)subscription resumed after [after]: nothing was lost. */
    data class Resumed(override val channel: String, val after: String) : Message {
        override val type get() = "resumed"
    }

    /** The subscription could not continue from its cursor; it continues after [head]. Re-sync. */
    data class Reset(override val channel: String, val reason: String, val head: String) : Message {
        override val type get() = "reset"
    }

    /** [clientId] joined or left the channel's presence. */
    data class Presence(override val channel: String, val action: String, val clientId: String, val data: String) :
        Message {
        override val type get() = "presence"
    }
}

/** A listener for `Client.subscribe`: override [onEvent]; every other method does nothing by default. */
abstract class SubscriptionAdapter : SubscriptionListener {
    override fun onResumed(channel: String, after: String) {}
    override fun onReset(channel: String, reason: String, head: String) {}
    override fun onPresence(channel: String, action: String, clientId: String, data: String) {}
    override fun onError(code: String, message: String) {}
    override fun onEnd() {}
}

/** The stable code of the error (`unauthorized`, `closed`, …), the same on every surface. */
val ResubException.code: String
    get() = when (this) {
        is ResubException.Unauthorized -> "unauthorized"
        is ResubException.Forbidden -> "forbidden"
        is ResubException.BadRequest -> "bad_request"
        is ResubException.Tls -> "tls"
        is ResubException.RetriesExhausted -> "retries_exhausted"
        is ResubException.Closed -> "closed"
        is ResubException.AlreadySubscribed -> "already_subscribed"
        is ResubException.InvalidArgument -> "invalid_argument"
        is ResubException.InvalidUrl -> "invalid_url"
        is ResubException.PublishRejected -> "publish_rejected"
        is ResubException.PublishQueueFull -> "publish_queue_full"
        is ResubException.FrameTooLarge -> "frame_too_large"
        is ResubException.InvalidClientId -> "invalid_client_id"
        is ResubException.Unavailable -> "unavailable"
        is ResubException.CursorStore -> "cursor_store"
        is ResubException.NoRandomness -> "no_randomness"
        is ResubException.Other -> "other"
    }

/** The exception of a stable [code], as a subscription's `onError` names it. */
fun resubException(code: String, message: String): ResubException = when (code) {
    "unauthorized" -> ResubException.Unauthorized(message)
    "forbidden" -> ResubException.Forbidden(message)
    "bad_request" -> ResubException.BadRequest(message)
    "tls" -> ResubException.Tls(message)
    "retries_exhausted" -> ResubException.RetriesExhausted(message)
    "closed" -> ResubException.Closed(message)
    "already_subscribed" -> ResubException.AlreadySubscribed(message)
    "invalid_argument" -> ResubException.InvalidArgument(message)
    "invalid_url" -> ResubException.InvalidUrl(message)
    "publish_rejected" -> ResubException.PublishRejected(message)
    "publish_queue_full" -> ResubException.PublishQueueFull(message)
    "frame_too_large" -> ResubException.FrameTooLarge(message)
    "invalid_client_id" -> ResubException.InvalidClientId(message)
    "unavailable" -> ResubException.Unavailable(message)
    "cursor_store" -> ResubException.CursorStore(message)
    "no_randomness" -> ResubException.NoRandomness(message)
    else -> ResubException.Other(message)
}

/** Entry points that also stop every client when the JVM exits (no library thread then calls into a VM going away). */
object Resub {
    init {
        Runtime.getRuntime().addShutdownHook(Thread({ shutdownAll() }, "resub-exit"))
    }

    /** A client for [url]; [configure] sets options on the (all-defaults) configuration. */
    fun client(url: String, configure: ClientConfig.() -> Unit = {}): Client =
        Client(ClientConfig(url = url).apply(configure))
}

/** A duration as the configuration's milliseconds. */
val Duration.ms: Long get() = inWholeMilliseconds

/**
 * The messages of [channel], after [from] (or the cursor store's, or live), as a cold Flow: collecting
 * subscribes, cancelling the collector unsubscribes. The flow fails with the subscription's error
 * ([ResubException], see [code]). A collector that falls behind slows only this subscription.
 */
fun Client.messages(channel: String, from: String? = null): Flow<Message> = callbackFlow {
    val handle = subscribe(channel, from, object : SubscriptionListener {
        override fun onEvent(event: EventMessage) {
            trySendBlocking(Message.Event(event.channel, event.id, event.event, event.data))
        }

        override fun onResumed(channel: String, after: String) {
            trySendBlocking(Message.Resumed(channel, after))
        }

        override fun onReset(channel: String, reason: String, head: String) {
            trySendBlocking(Message.Reset(channel, reason, head))
        }

        override fun onPresence(channel: String, action: String, clientId: String, data: String) {
            trySendBlocking(Message.Presence(channel, action, clientId, data))
        }

        override fun onError(code: String, message: String) {
            close(resubException(code, message))
        }

        override fun onEnd() {
            close()
        }
    })
    awaitClose {
        handle.cancel()
        handle.close()
    }
}

/**
 * The connection state as a StateFlow, kept up to date for as long as [scope] is active (the current
 * state first; `State.Closed` last).
 */
fun Client.stateFlow(scope: CoroutineScope): StateFlow<State> {
    val flow = MutableStateFlow(state())
    val handle = onState(object : StateListener {
        override fun onState(state: State) {
            flow.value = state
        }
    })
    scope.coroutineContext[Job]?.invokeOnCompletion {
        handle.cancel()
        handle.close()
    }
    return flow.asStateFlow()
}
