// One JVM that creates a client, subscribes, publishes and then ends the way
// its argument says (wait: shutdownAndWait; shutdown: shutdown; drop:
// neither), then lets the JVM exit normally. Run by FfiTest's exit test;
// exits 0 unless the process aborts.

import kotlin.random.Random
import kotlinx.coroutines.runBlocking
import resub.Resub
import resub.SubscriptionAdapter
import uniffi.resub_ffi.EventMessage

fun main(args: Array<String>) {
    val (url, mode) = args
    val client = Resub.client(url)
    val ch = "exit-${Random.nextInt(1_000_000_000)}"
    val handle = client.subscribe(ch, null, object : SubscriptionAdapter() {
        override fun onEvent(event: EventMessage) {}
    })
    runBlocking { client.publish(ch, "x") }
    when (mode) {
        "wait" -> runBlocking { client.shutdownAndWait() }
        "shutdown" -> client.shutdown()
        else -> {}
    }
    if (mode != "drop") handle.close()
}
