// End-to-end test of the Kotlin bindings of resub_ffi against the fixture
// server binary: the same scenarios as ffi/tests/test_ffi.py, from the JVM.
// Run it with ffi/kotlin/run.sh; it prints one `ok - ` / `not ok - ` line per
// test and ends on `N passed, M failed`.

import java.io.File
import java.net.HttpURLConnection
import java.net.InetAddress
import java.net.ServerSocket
import java.net.URI
import java.util.concurrent.Callable
import java.util.concurrent.ExecutionException
import java.util.concurrent.Executors
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.ThreadFactory
import java.util.concurrent.TimeUnit
import java.util.concurrent.TimeoutException
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.atomic.AtomicInteger
import java.util.concurrent.atomic.AtomicReference
import kotlin.random.Random
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import uniffi.resub_ffi.Client
import uniffi.resub_ffi.ClientConfig
import uniffi.resub_ffi.CursorStore
import uniffi.resub_ffi.EventMessage
import uniffi.resub_ffi.Handle
import uniffi.resub_ffi.ResubException
import uniffi.resub_ffi.State
import uniffi.resub_ffi.StateListener
import uniffi.resub_ffi.SubscriptionListener
import uniffi.resub_ffi.TokenProvider
import uniffi.resub_ffi.TransportKind
import uniffi.resub_ffi.defaultConfig
import uniffi.resub_ffi.DisconnectCode
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.flow.filter
import kotlinx.coroutines.flow.takeWhile
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancel
import resub.Message
import resub.Resub
import resub.SubscriptionAdapter
import resub.code
import resub.messages
import resub.stateFlow

/** How long one wait (a queue poll, an HTTP call, a publish) may take. */
const val WAIT_SECONDS = 20L

/** How long one whole test may take. */
const val TEST_SECONDS = 90L

class Failure(message: String) : Exception(message)

fun ensure(condition: Boolean, message: () -> String) {
    if (!condition) throw Failure(message())
}

// ---------------------------------------------------------------- fixture

/** The fixture server process, on a free loopback port. */
class Fixture(binary: String) : AutoCloseable {
    private val process: Process
    val url: String

    init {
        ensure(File(binary).canExecute()) { "fixture binary not found: $binary (set RESUB_FIXTURE_BIN)" }
        val port = ServerSocket(0, 1, InetAddress.getLoopbackAddress()).use { it.localPort }
        url = "http://127.0.0.1:$port"
        process = ProcessBuilder(binary, "--addr", "127.0.0.1:$port", "--heartbeat-ms", "300")
            .redirectError(ProcessBuilder.Redirect.DISCARD)
            .redirectInput(ProcessBuilder.Redirect.PIPE)
            .start()
        process.outputStream.close()
        val first = LinkedBlockingQueue<String>()
        val reader = Thread {
            // Reads the first line, then drains the rest so the pipe never fills.
            process.inputStream.bufferedReader().useLines { lines ->
                var sent = false
                for (line in lines) {
                    if (!sent) {
                        first.put(line.trim())
                        sent = true
                    }
                }
                if (!sent) first.put("<no output: the fixture exited>")
            }
        }
        reader.isDaemon = true
        reader.start()
        val line = first.poll(WAIT_SECONDS, TimeUnit.SECONDS)
        if (line != "listening on $url") {
            close()
            throw Failure("fixture did not start: first line was ${line ?: "<none within ${WAIT_SECONDS}s>"}")
        }
    }

    override fun close() {
        if (!process.isAlive) return
        process.destroy()
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            process.destroyForcibly()
            process.waitFor(10, TimeUnit.SECONDS)
        }
    }
}

fun post(url: String, body: String = ""): String {
    val conn = URI(url).toURL().openConnection() as HttpURLConnection
    try {
        conn.requestMethod = "POST"
        conn.connectTimeout = (WAIT_SECONDS * 1000).toInt()
        conn.readTimeout = (WAIT_SECONDS * 1000).toInt()
        conn.doOutput = true
        conn.outputStream.use { it.write(body.toByteArray()) }
        val status = conn.responseCode
        val text = (if (status < 400) conn.inputStream else conn.errorStream)?.use { it.readBytes().decodeToString() } ?: ""
        ensure(status in 200..299) { "POST $url: HTTP $status $text" }
        return text
    } finally {
        conn.disconnect()
    }
}

private val ID = Regex("\"id\"\\s*:\\s*\"([^\"]*)\"")

/** Publishes through the fixture's HTTP endpoint; returns the event id. */
fun publish(server: String, channel: String, data: String): String {
    val reply = post("$server/publish/$channel", data)
    return ID.find(reply)?.groupValues?.get(1) ?: throw Failure("no id in publish reply: $reply")
}

fun resetFaults(server: String) {
    for (t in listOf("websocket", "sse", "poll")) post("$server/control/$t?enabled=true")
    post("$server/control/auth?reject=false")
}

fun channel(name: String) = "$name-${Random.nextInt(1_000_000_000)}"

fun config(server: String, transports: List<TransportKind>? = null): ClientConfig {
    val base = defaultConfig(server).copy(
        backoffBaseMs = 20L,
        backoffCapMs = 300L,
        healthyAfterMs = 200L,
        openTimeoutMs = 3000L,
        pollHoldMs = 2000L,
    )
    return if (transports == null) base else base.copy(transports = transports)
}

/**
 * Stops the resub client without waiting (`Client::shutdown`; every generated
 * object also has AutoCloseable's `close()`, which only frees it).
 *
 * A [Handle] needs no such call: its `close()` frees it, and dropping the
 * Rust handle ends the subscription or state listener.
 */
fun shutdown(client: Client) = client.shutdown()

/** Stops the client, then frees the Kotlin object. */
fun finish(client: Client) {
    shutdown(client)
    client.close()
}

// -------------------------------------------------------------- listeners

sealed class Item {
    data class Event(val event: EventMessage) : Item()
    data class Reset(val reason: String) : Item()
    data class Resumed(val after: String) : Item()
    data class Presence(val action: String, val clientId: String, val data: String) : Item()
    data class Error(val code: String) : Item()
    object End : Item() {
        override fun toString() = "End"
    }
}

/** Puts what arrives on a queue, in order. */
open class Collector : SubscriptionListener {
    val items = LinkedBlockingQueue<Item>()

    override fun onEvent(event: EventMessage) {
        items.put(Item.Event(event))
    }

    override fun onResumed(channel: String, after: String) {
        items.put(Item.Resumed(after))
    }

    override fun onReset(channel: String, reason: String, head: String) {
        items.put(Item.Reset(reason))
    }

    override fun onPresence(channel: String, action: String, clientId: String, data: String) {
        items.put(Item.Presence(action, clientId, data))
    }

    override fun onError(code: String, message: String) {
        items.put(Item.Error(code))
    }

    override fun onEnd() {
        items.put(Item.End)
    }

    /** The next item, `Resumed` notices skipped. */
    fun next(): Item {
        while (true) {
            val item = items.poll(WAIT_SECONDS, TimeUnit.SECONDS)
                ?: throw Failure("nothing arrived within ${WAIT_SECONDS}s")
            if (item !is Item.Resumed) return item
        }
    }

    fun datas(n: Int): List<String> {
        val out = mutableListOf<String>()
        while (out.size < n) {
            val item = next()
            ensure(item is Item.Event) { "expected an event after ${out}, got $item" }
            out.add((item as Item.Event).event.data)
        }
        return out
    }
}

class States : StateListener {
    val items = LinkedBlockingQueue<State>()

    override fun onState(state: State) {
        items.put(state)
    }

    fun until(what: String, pred: (State) -> Boolean): State {
        val seen = mutableListOf<State>()
        val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS)
        while (true) {
            val left = deadline - System.nanoTime()
            val s = items.poll(maxOf(left, 0L), TimeUnit.NANOSECONDS)
                ?: throw Failure("no $what state within ${WAIT_SECONDS}s; saw $seen")
            if (pred(s)) return s
            seen.add(s)
        }
    }
}

/** Polls `condition` until it holds. */
fun eventually(what: String, condition: () -> Boolean) {
    val deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(WAIT_SECONDS)
    while (!condition()) {
        if (System.nanoTime() > deadline) throw Failure("not $what within ${WAIT_SECONDS}s")
        Thread.sleep(20)
    }
}

inline fun expectCode(code: String, block: () -> Unit) {
    try {
        block()
    } catch (e: ResubException) {
        ensure(e.code == code) { "expected code $code, got ${e.code} (${e.message})" }
        return
    }
    throw Failure("expected ResubException with code $code, nothing was thrown")
}

// ------------------------------------------------------------------ tests

fun resumesAfterAnAbruptDrop(server: String, transport: TransportKind) {
    resetFaults(server)
    val ch = channel(transport.name.lowercase())
    val start = publish(server, ch, "0")
    val client = Client(config(server, listOf(transport)))
    try {
        val got = Collector()
        val handle = client.subscribe(ch, start, got)
        for (i in 1..5) publish(server, ch, "$i")
        val first = got.datas(5)
        ensure(first == listOf("1", "2", "3", "4", "5")) { "before the drop: $first" }
        post("$server/control/drop")
        for (i in 6..10) publish(server, ch, "$i")
        val second = got.datas(5)
        ensure(second == listOf("6", "7", "8", "9", "10")) { "after the drop: $second" }
        publish(server, ch, "end")
        val marker = got.datas(1)
        ensure(marker == listOf("end")) { "nothing repeated before the marker: $marker" }
        handle.close()
        val last = got.next()
        ensure(last == Item.End) { "expected the end after closing the handle, got $last" }
    } finally {
        finish(client)
    }
}

fun stateChangesArrive(server: String) {
    resetFaults(server)
    val client = Client(config(server, listOf(TransportKind.WS)))
    try {
        val states = States()
        val watch = client.onState(states)
        // Held until the end: closing it would end the subscription.
        val sub = client.subscribe(channel("state"), null, Collector())
        // A listener gets the changes after it is registered, and the client
        // starts connecting in its constructor: the first Connected may come
        // before the listener. Wait for it through state(), then make the
        // listener see a disconnection and a new Connected.
        eventually("Connected") { client.state() is State.Connected }
        post("$server/control/drop")
        states.until("Disconnected") { it is State.Disconnected }
        val connected = states.until("Connected") { it is State.Connected } as State.Connected
        ensure(connected.transport == TransportKind.WS) { "connected over ${connected.transport}" }
        sub.close()
        watch.close()
    } finally {
        finish(client)
    }
}

fun errorsMapToCodes(server: String) {
    resetFaults(server)
    expectCode("invalid_url") { Client(defaultConfig("not a url")).close() }
    expectCode("invalid_url") { Client(ClientConfig(url = "https://[::1")).close() }
    expectCode("invalid_argument") { Client(ClientConfig(url = server, transports = listOf())).close() }
    val client = Client(config(server))
    try {
        expectCode("invalid_argument") { client.subscribe("bad channel!", null, Collector()).close() }
        expectCode("invalid_argument") { client.subscribe("ok", "not-a-cursor!", Collector()).close() }
        expectCode("invalid_argument") {
            runBlocking { withTimeout(TimeUnit.SECONDS.toMillis(WAIT_SECONDS)) { client.publish("bad channel!", "x") } }
        }
        // After a shutdown, subscribe fails as publish does.
        shutdown(client)
        expectCode("closed") { client.subscribe("ok", null, Collector()).close() }
    } finally {
        finish(client)
    }
    // A refused token stops the client: the subscription ends with the code.
    // The token is refused only once the subscription is up, on the
    // reconnection after a drop (a client refused while connecting in its
    // constructor may stop before a subscribe reaches it, which then ends
    // with `closed` instead).
    val ch = channel("auth")
    val start = publish(server, ch, "0")
    val refused = Client(config(server, listOf(TransportKind.WS)))
    try {
        val got = Collector()
        val sub = refused.subscribe(ch, start, got)
        publish(server, ch, "1")
        val first = got.datas(1)
        ensure(first == listOf("1")) { "before the refusal: $first" }
        post("$server/control/auth?reject=true")
        post("$server/control/drop")
        val error = got.next()
        ensure(error == Item.Error("unauthorized")) { "expected error unauthorized, got $error" }
        val end = got.next()
        ensure(end == Item.End) { "expected the end, got $end" }
        sub.close()
        eventually("Closed") { refused.state() is State.Closed }
        val state = refused.state()
        ensure(state is State.Closed && state.error?.code == "unauthorized") { "state: $state" }
    } finally {
        post("$server/control/auth?reject=false")
        finish(refused)
    }
}

fun publishFromACoroutine(server: String) {
    resetFaults(server)
    val ch = channel("pub")
    val start = publish(server, ch, "0")
    val client = Client(config(server))
    try {
        val got = Collector()
        val sub = client.subscribe(ch, start, got)
        val id = runBlocking {
            withTimeout(TimeUnit.SECONDS.toMillis(WAIT_SECONDS)) { client.publish(ch, "from kotlin") }
        }
        val item = got.next()
        ensure(item is Item.Event) { "expected an event, got $item" }
        val event = (item as Item.Event).event
        ensure(event.id == id && event.data == "from kotlin") { "publish returned $id, the listener saw $event" }
        sub.close()
    } finally {
        finish(client)
    }
}

fun aThrowingListenerDoesNotStopDelivery(server: String) {
    resetFaults(server)
    val ch = channel("raise")
    val start = publish(server, ch, "0")
    val client = Client(config(server))
    try {
        val got = object : Collector() {
            override fun onEvent(event: EventMessage) {
                super.onEvent(event)
                throw IllegalStateException("the application's own bug")
            }
        }
        val sub = client.subscribe(ch, start, got)
        for (i in 1..3) publish(server, ch, "$i")
        val datas = got.datas(3)
        ensure(datas == listOf("1", "2", "3")) { "delivery goes on after each throw: $datas" }
        sub.close()
    } finally {
        finish(client)
    }
}

fun closingFromInsideTheListenerIsSafe(server: String) {
    resetFaults(server)
    val ch = channel("close")
    val start = publish(server, ch, "0")
    val client = Client(config(server))
    try {
        val states = States()
        val watch = client.onState(states)
        val handle = AtomicReference<Handle>()
        val got = object : Collector() {
            override fun onEvent(event: EventMessage) {
                super.onEvent(event)
                handle.get().close()
                shutdown(client)
            }
        }
        // Set before the first event can arrive: nothing is published yet.
        handle.set(client.subscribe(ch, start, got))
        publish(server, ch, "1")
        publish(server, ch, "2")
        val first = got.next()
        ensure(first is Item.Event) { "expected an event, got $first" }
        val end = got.next()
        ensure(end == Item.End) { "the subscription ended, nothing after: got $end" }
        val closed = states.until("Closed") { it is State.Closed } as State.Closed
        ensure(closed.error == null) { "closed by the application, not by an error: ${closed.error}" }
        watch.close()
    } finally {
        finish(client)
    }
}

fun aSecondEndpointTakesOverAndPresenceIsReported(server: String) {
    resetFaults(server)
    // Nothing listens on this port: the client must move on to `server`.
    val dead = ServerSocket(0, 1, InetAddress.getLoopbackAddress()).use { "http://127.0.0.1:${it.localPort}" }
    val cfg = config(dead, listOf(TransportKind.WS)).copy(
        endpoints = listOf(server),
        clientId = "kt",
        presenceData = "{\"lang\":\"kotlin\"}",
    )
    val client = Client(cfg)
    try {
        val states = States()
        val watch = client.onState(states)
        val ch = channel("presence")
        val got = Collector()
        val sub = client.subscribe(ch, null, got)
        val connected = states.until("Connected") { it is State.Connected } as State.Connected
        ensure(connected.endpoint == server) { "connected to ${connected.endpoint}, not $server" }
        val joined = got.next()
        ensure(joined == Item.Presence("join", "kt", "{\"lang\":\"kotlin\"}")) { "expected its own join, got $joined" }
        val members = runBlocking { withTimeout(TimeUnit.SECONDS.toMillis(WAIT_SECONDS)) { client.presence(ch) } }
        ensure(members.map { it.clientId to it.data } == listOf("kt" to "{\"lang\":\"kotlin\"}")) { "members: $members" }
        sub.close()
        watch.close()
    } finally {
        finish(client)
    }
}

/** An app's cursor store: a map, as a database or preferences would be. */
class MapStore : CursorStore {
    val cursors = ConcurrentHashMap<String, String>()
    override fun load(channel: String): String? = cursors[channel]
    override fun save(channel: String, cursor: String) {
        cursors[channel] = cursor
    }
}

fun anAppCursorStoreResumesANewClientWhereTheLastStopped(server: String) {
    resetFaults(server)
    val ch = channel("store")
    val store = MapStore()
    store.cursors[ch] = publish(server, ch, "0")
    val ids = (1..3).map { publish(server, ch, "$it") }
    val client = Client.withCallbacks(config(server), store, null)
    try {
        val got = Collector()
        val sub = client.subscribe(ch, null, got) // no `from`: the store decides
        val first = got.datas(3)
        ensure(first == listOf("1", "2", "3")) { "got $first" }
        ensure(store.cursors[ch] == ids.last()) { "saved ${store.cursors[ch]}, last id ${ids.last()}" }
        sub.close()
    } finally {
        finish(client)
    }
    publish(server, ch, "4")
    val again = Client.withCallbacks(config(server), store, null)
    try {
        val got = Collector()
        val sub = again.subscribe(ch, null, got)
        val next = got.datas(1)
        ensure(next == listOf("4")) { "a new client starts after what the last one took, got $next" }
        sub.close()
    } finally {
        finish(again)
    }
}

/** Hands out queued tokens, then keeps the last one. */
class QueueTokens(vararg tokens: String) : TokenProvider {
    val queue = LinkedBlockingQueue(tokens.toList())
    @Volatile var last: String? = null
    val calls = AtomicInteger()
    override fun token(): String {
        calls.incrementAndGet()
        queue.poll()?.let { last = it }
        return last ?: error("no token yet")
    }
}

fun aTokenProviderIsAskedAgainAfterARefusal(server: String) {
    resetFaults(server)
    post("$server/control/tokens?accept=t1")
    try {
        val ch = channel("tokens")
        val start = publish(server, ch, "0")
        val tokens = QueueTokens("t1")
        val client = Client.withCallbacks(config(server, listOf(TransportKind.WS)), null, tokens)
        try {
            val got = Collector()
            val sub = client.subscribe(ch, start, got)
            publish(server, ch, "1")
            ensure(got.datas(1) == listOf("1")) { "the first event" }
            // The provider's next token is stale, then t2; the server moves to t2.
            tokens.queue.addAll(listOf("t1", "t2"))
            post("$server/control/tokens?accept=t2")
            post("$server/control/drop")
            publish(server, ch, "2")
            val after = got.datas(1)
            ensure(after == listOf("2")) { "nothing lost across the refresh, got $after" }
            ensure(tokens.calls.get() >= 3) { "asked ${tokens.calls.get()} times" }
            sub.close()
        } finally {
            finish(client)
        }
    } finally {
        post("$server/control/tokens")
    }
}

fun aFailingTokenProviderIsReportedAsSuchThenStopsTheClient(server: String) {
    resetFaults(server)
    val calls = AtomicInteger()
    val failing = object : TokenProvider {
        override fun token(): String {
            calls.incrementAndGet()
            throw IllegalStateException("the identity provider is down")
        }
    }
    val cfg = config(server, listOf(TransportKind.WS)).copy(backoffBaseMs = 20L, backoffCapMs = 50L)
    val client = Client.withCallbacks(cfg, null, failing)
    try {
        val states = States()
        val watch = client.onState(states)
        val failed = states.until("Disconnected") { it is State.Disconnected } as State.Disconnected
        ensure(failed.reason == DisconnectCode.NO_CREDENTIALS) { "reason: $failed" }
        ensure("the identity provider is down" in failed.detail) { "detail: ${failed.detail}" }
        watch.close()
        eventually("Closed") { client.state() is State.Closed }
        val closed = client.state()
        ensure(closed is State.Closed && closed.error?.code == "unauthorized") { "state: $closed" }
        ensure(calls.get() == 3) { "three failures in a row stop it, asked ${calls.get()} times" }
    } finally {
        finish(client)
    }
}

fun aFlowAndAStateFlow(server: String) {
    resetFaults(server)
    val ch = channel("flow")
    val start = publish(server, ch, "0")
    val client = Resub.client(server) { transports = listOf(TransportKind.SSE); backoffBaseMs = 20L }
    val scope = CoroutineScope(Dispatchers.Default)
    try {
        val state = client.stateFlow(scope)
        runBlocking {
            withTimeout(TimeUnit.SECONDS.toMillis(WAIT_SECONDS)) {
                for (i in 1..3) publish(server, ch, "$i")
                val events = client.messages(ch, start).filter { it is Message.Event }.take(3).toList()
                ensure(events.map { (it as Message.Event).data } == listOf("1", "2", "3")) { "flow: $events" }
                ensure(events.all { it.type == "event" }) { "types: $events" }
                val connected = state.first { it is State.Connected } as State.Connected
                ensure(connected.transport == TransportKind.SSE) { "state: $connected" }
            }
        }
        // A listener overriding only onEvent.
        val seen = LinkedBlockingQueue<String>()
        val handle = client.subscribe(ch, start, object : SubscriptionAdapter() {
            override fun onEvent(event: EventMessage) {
                seen.put(event.data)
            }
        })
        ensure(seen.poll(WAIT_SECONDS, TimeUnit.SECONDS) == "1") { "the adapter's listener" }
        handle.close()
    } finally {
        scope.cancel()
        finish(client)
    }
}

fun aSlowListenerDelaysNothingElse(server: String) {
    resetFaults(server)
    val slowCh = channel("slow")
    val quickCh = channel("quick")
    val slowStart = publish(server, slowCh, "0")
    val quickStart = publish(server, quickCh, "0")
    val client = Client(config(server, listOf(TransportKind.WS)))
    try {
        val states = States()
        val watch = client.onState(states)
        eventually("Connected") { client.state() is State.Connected }
        val threads = ConcurrentHashMap.newKeySet<String>()
        val slow = object : Collector() {
            override fun onEvent(event: EventMessage) {
                threads.add(Thread.currentThread().name)
                Thread.sleep(1000)
                super.onEvent(event)
            }
        }
        val quick = Collector()
        val h1 = client.subscribe(slowCh, slowStart, slow)
        val h2 = client.subscribe(quickCh, quickStart, quick)
        for (i in 0..3) publish(server, slowCh, "s$i")
        val t0 = System.nanoTime()
        for (i in 0..3) publish(server, quickCh, "q$i")
        ensure(quick.datas(4) == listOf("q0", "q1", "q2", "q3")) { "the quick subscription" }
        val took = (System.nanoTime() - t0) / 1_000_000
        ensure(took < 2000) { "the quick subscription waited ${took} ms for the slow listener" }
        ensure(slow.datas(4) == listOf("s0", "s1", "s2", "s3")) { "the slow subscription" }
        ensure(states.items.none { it is State.Disconnected }) { "the connection dropped: ${states.items}" }
        ensure(threads.all { it != "resub-io" }) { "called on an I/O thread: $threads" }
        h1.close()
        h2.close()
        watch.close()
    } finally {
        finish(client)
    }
}

/** Runs [ExitCheckKt] in fresh JVMs: create, subscribe, publish, then each way of ending, then exit. */
fun jvmsExitCleanly(server: String) {
    val runs = System.getenv("RESUB_EXIT_RUNS")?.toIntOrNull() ?: 3
    val java = File(System.getProperty("java.home"), "bin/java").path
    val classpath = System.getProperty("java.class.path")
    val libPath = System.getProperty("jna.library.path") ?: ""
    val failures = mutableListOf<String>()
    for (mode in listOf("wait", "shutdown", "drop")) {
        repeat(runs) {
            val p = ProcessBuilder(java, "-Djna.library.path=$libPath", "-cp", classpath, "ExitCheckKt", server, mode)
                .redirectErrorStream(true)
                .start()
            val out = p.inputStream.bufferedReader().readText()
            ensure(p.waitFor(60, TimeUnit.SECONDS)) { "$mode: the JVM did not exit" }
            if (p.exitValue() != 0) failures.add("$mode exit ${p.exitValue()}: ${out.takeLast(300)}")
        }
    }
    ensure(failures.isEmpty()) { "${failures.size} of ${3 * runs} JVMs failed: ${failures.first()}" }
}

// ------------------------------------------------------------------- main

fun main() {
    val binary = System.getenv("RESUB_FIXTURE_BIN")?.takeIf { it.isNotEmpty() } ?: "target/debug/resub-fixture"
    val tests = listOf<Pair<String, (String) -> Unit>>(
        "resumes after an abrupt drop without loss or duplicates (ws)" to { s -> resumesAfterAnAbruptDrop(s, TransportKind.WS) },
        "resumes after an abrupt drop without loss or duplicates (sse)" to { s -> resumesAfterAnAbruptDrop(s, TransportKind.SSE) },
        "resumes after an abrupt drop without loss or duplicates (poll)" to { s -> resumesAfterAnAbruptDrop(s, TransportKind.POLL) },
        "state changes arrive" to ::stateChangesArrive,
        "errors map to codes" to ::errorsMapToCodes,
        "publish from a coroutine returns the id the listener sees" to ::publishFromACoroutine,
        "a listener that throws does not stop delivery" to ::aThrowingListenerDoesNotStopDelivery,
        "closing from inside the listener is safe" to ::closingFromInsideTheListenerIsSafe,
        "a second endpoint takes over and presence is reported" to ::aSecondEndpointTakesOverAndPresenceIsReported,
        "an app cursor store resumes a new client where the last stopped" to ::anAppCursorStoreResumesANewClientWhereTheLastStopped,
        "a token provider is asked again after a refusal" to ::aTokenProviderIsAskedAgainAfterARefusal,
        "a failing token provider is reported as such, then stops the client" to ::aFailingTokenProviderIsReportedAsSuchThenStopsTheClient,
        "a subscription as a Flow, the state as a StateFlow" to ::aFlowAndAStateFlow,
        "a slow listener delays neither heartbeats nor other subscriptions" to ::aSlowListenerDelaysNothingElse,
        "JVMs exit cleanly after shutdownAndWait, shutdown or neither" to ::jvmsExitCleanly,
    )
    var passed = 0
    var failed = 0
    // Each test runs on its own daemon thread, so one that hangs is reported
    // and abandoned instead of stopping the run.
    val pool = Executors.newCachedThreadPool(ThreadFactory { r -> Thread(r).apply { isDaemon = true } })
    var fixture: Fixture? = null
    val hook = Thread { fixture?.close() }
    Runtime.getRuntime().addShutdownHook(hook)
    try {
        fixture = Fixture(binary)
        val server = fixture.url
        for ((name, body) in tests) {
            val future = pool.submit(Callable { body(server) })
            val reason: String? = try {
                future.get(TEST_SECONDS, TimeUnit.SECONDS)
                null
            } catch (e: TimeoutException) {
                future.cancel(true)
                "did not finish within ${TEST_SECONDS}s"
            } catch (e: ExecutionException) {
                val cause = e.cause ?: e
                if (cause is Failure) cause.message else cause.toString()
            }
            if (reason == null) {
                passed++
                println("ok - $name")
            } else {
                failed++
                println("not ok - $name: ${reason.replace('\n', ' ')}")
            }
        }
    } catch (e: Exception) {
        failed++
        println("not ok - fixture: ${(if (e is Failure) e.message else e.toString())?.replace('\n', ' ')}")
    } finally {
        fixture?.close()
    }
    println("$passed passed, $failed failed")
    System.out.flush()
    // Exits at once: client threads that a failed test left behind must not
    // keep the JVM up.
    Runtime.getRuntime().halt(if (failed > 0) 1 else 0)
}
