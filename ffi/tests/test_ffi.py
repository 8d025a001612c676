"""The FFI end to end through the Python bindings: the same library Kotlin and
Swift apps load, against the fixture server binary. The generated module
(`resub_ffi`) is driven as Kotlin and Swift apps drive theirs; the shipped
wrapper (`resub`) is tested for its Python idioms at the end."""

import asyncio
import dataclasses
import json
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import resub
from resub_ffi import (
    Client,
    ClientConfig,
    CursorStore,
    DisconnectCode,
    LogLevel,
    ResubError,
    State,
    StateListener,
    SubscriptionListener,
    TokenProvider,
    TransportKind,
    default_config,
)

TIMEOUT = 20


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("RESUB_FIXTURE_BIN", "target/debug/resub-fixture")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--addr", f"127.0.0.1:{port}", "--heartbeat-ms", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first = proc.stdout.readline().strip()
    assert first == f"listening on http://127.0.0.1:{port}", first
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def post(url, body=b""):
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=TIMEOUT) as r:
        return r.read().decode()


def publish(server, channel, data):
    return json.loads(post(f"{server}/publish/{channel}", data.encode()))["id"]


def reset_faults(server):
    for t in ("websocket", "sse", "poll"):
        post(f"{server}/control/{t}?enabled=true")
    post(f"{server}/control/auth?reject=false")
    post(f"{server}/control/tokens")


def channel(name):
    return f"{name}-{random.randrange(10**9)}"


def config(server, transports=None):
    cfg = default_config(server)
    cfg.backoff_base_ms = 20
    cfg.backoff_cap_ms = 300
    cfg.healthy_after_ms = 200
    cfg.open_timeout_ms = 3000
    cfg.poll_hold_ms = 2000
    if transports is not None:
        cfg.transports = transports
    return cfg


class Collector(SubscriptionListener):
    """Puts what arrives on a queue, in order."""

    def __init__(self):
        self.items = queue.Queue()

    def on_event(self, event):
        self.items.put(("event", event))

    def on_resumed(self, channel, after):
        self.items.put(("resumed", after))

    def on_reset(self, channel, reason, head):
        self.items.put(("reset", reason))

    def on_presence(self, channel, action, client_id, data):
        self.items.put(("presence", (action, client_id, data)))

    def on_error(self, code, message):
        self.items.put(("error", code))

    def on_end(self):
        self.items.put(("end", None))

    def next(self):
        return self.items.get(timeout=TIMEOUT)

    def datas(self, n):
        """The data of the next `n` events, skipping `resumed` notices."""
        out = []
        while len(out) < n:
            kind, value = self.next()
            if kind == "resumed":
                continue
            assert kind == "event", (kind, value)
            out.append(value.data)
        return out


class States(StateListener):
    def __init__(self):
        self.items = queue.Queue()

    def on_state(self, state):
        self.items.put(state)

    def until(self, pred):
        while True:
            s = self.items.get(timeout=TIMEOUT)
            if pred(s):
                return s


TRANSPORTS = {"ws": TransportKind.WS, "sse": TransportKind.SSE, "poll": TransportKind.POLL}


@pytest.mark.parametrize("name", ["ws", "sse", "poll"])
def test_resumes_after_an_abrupt_drop_without_loss_or_duplicates(server, name):
    reset_faults(server)
    ch = channel(name)
    start = publish(server, ch, "0")
    client = Client(config(server, [TRANSPORTS[name]]))
    got = Collector()
    handle = client.subscribe(ch, start, got)
    for i in range(1, 6):
        publish(server, ch, str(i))
    assert got.datas(5) == ["1", "2", "3", "4", "5"]
    post(f"{server}/control/drop")
    for i in range(6, 11):
        publish(server, ch, str(i))
    assert got.datas(5) == ["6", "7", "8", "9", "10"]
    publish(server, ch, "end")
    assert got.datas(1) == ["end"], "nothing repeated before the marker"
    handle.cancel()
    assert got.next() == ("end", None)
    client.shutdown()


@pytest.mark.parametrize("name", ["ws", "sse", "poll"])
def test_a_cursor_ahead_of_the_head_resets_to_it_and_every_later_event_arrives(server, name):
    reset_faults(server)
    ch = channel(f"ahead-{name}")
    head = publish(server, ch, "0")
    epoch = head.rsplit("-", 1)[0]
    client = Client(config(server, [TRANSPORTS[name]]))
    got = Collector()
    handle = client.subscribe(ch, f"{epoch}-99", got)
    kind, value = got.next()
    while kind == "resumed":
        kind, value = got.next()
    assert (kind, value) == ("reset", "unknown_cursor")
    for i in range(1, 30):
        publish(server, ch, str(i))
    assert got.datas(29) == [str(i) for i in range(1, 30)]
    handle.cancel()
    client.shutdown()


def test_state_changes_arrive(server):
    reset_faults(server)
    client = Client(config(server, [TransportKind.WS]))
    states = States()
    handle = client.on_state(states)
    sub = client.subscribe(channel("state"), None, Collector())  # held: dropping it would end it
    connected = states.until(lambda s: isinstance(s, State.CONNECTED))
    assert connected.transport == TransportKind.WS
    post(f"{server}/control/drop")
    states.until(lambda s: isinstance(s, State.DISCONNECTED))
    states.until(lambda s: isinstance(s, State.CONNECTED))
    handle.cancel()
    client.shutdown()


def test_errors_map_to_codes(server):
    reset_faults(server)
    with pytest.raises(ResubError.InvalidUrl) as e:
        Client(default_config("not a url"))
    assert e.value.code == "invalid_url"
    with pytest.raises(ResubError.InvalidUrl):
        Client(ClientConfig(url="https://[::1"))
    with pytest.raises(ResubError.InvalidArgument):
        Client(ClientConfig(url=server, transports=[]))
    with pytest.raises(ResubError.InvalidArgument):
        Client(ClientConfig(url=server, open_timeout_ms=-1))
    client = Client(config(server))
    with pytest.raises(ResubError) as e:
        client.subscribe("bad channel!", None, Collector())
    assert e.value.code == "invalid_argument"
    with pytest.raises(ResubError) as e:
        client.subscribe("ok", "not-a-cursor!", Collector())
    assert e.value.code == "invalid_argument"
    with pytest.raises(ResubError) as e:
        asyncio.run(client.publish("bad channel!", "x"))
    assert e.value.code == "invalid_argument"
    client.shutdown()
    # After a shutdown, subscribe fails as publish does.
    with pytest.raises(ResubError.Closed):
        client.subscribe("ok", None, Collector())
    with pytest.raises(ResubError.Closed):
        asyncio.run(client.publish("ok", "x"))
    # A refused token stops the client: the subscription ends with the code.
    post(f"{server}/control/auth?reject=true")
    try:
        refused = Client(config(server, [TransportKind.WS]))
        got = Collector()
        sub = refused.subscribe(channel("auth"), None, got)
        assert got.next() == ("error", "unauthorized")
        assert got.next() == ("end", None)
        del sub
        state = refused.state()
        assert isinstance(state, State.CLOSED) and state.error.code == "unauthorized"
    finally:
        post(f"{server}/control/auth?reject=false")


def test_publish_resolves_to_the_event_id_subscribers_see(server):
    reset_faults(server)
    ch = channel("pub")
    start = publish(server, ch, "0")
    client = Client(config(server))
    got = Collector()
    sub = client.subscribe(ch, start, got)
    event_id = asyncio.run(client.publish(ch, "from python"))
    kind, event = got.next()
    if kind == "resumed":
        assert event == start, "resumed after the cursor given"
        kind, event = got.next()
    assert (kind, event.id, event.data) == ("event", event_id, "from python")
    client.shutdown()


class Raising(Collector):
    """A listener with a bug: it raises on every event, after recording it."""

    def on_event(self, event):
        super().on_event(event)
        raise RuntimeError("the application's own bug 42")


def test_a_listener_that_raises_does_not_crash_the_client(server):
    reset_faults(server)
    ch = channel("raise")
    start = publish(server, ch, "0")
    client = Client(config(server))
    got = Raising()
    sub = client.subscribe(ch, start, got)
    for i in range(1, 4):
        publish(server, ch, str(i))
    assert got.datas(3) == ["1", "2", "3"], "delivery goes on after each raise"
    sub.cancel()
    client.shutdown()


def test_dropping_the_handle_ends_the_subscription(server):
    reset_faults(server)
    client = Client(config(server))
    got = Collector()
    client.subscribe(channel("dropped"), None, got)  # the handle is dropped at once
    assert got.next() == ("end", None)
    client.shutdown()


def test_closing_from_inside_the_listener_is_safe(server):
    reset_faults(server)
    holder = {}

    class Closing(Collector):
        def on_event(self, event):
            super().on_event(event)
            holder["handle"].cancel()
            holder["client"].shutdown()

    ch = channel("close")
    start = publish(server, ch, "0")
    client = Client(config(server))
    states = States()
    watch = client.on_state(states)
    got = Closing()
    holder["client"] = client
    holder["handle"] = client.subscribe(ch, start, got)
    publish(server, ch, "1")
    publish(server, ch, "2")
    kind = got.next()[0]
    while kind == "resumed":
        kind = got.next()[0]
    assert kind == "event"
    assert got.next() == ("end", None), "the subscription ended, nothing after"
    closed = states.until(lambda s: isinstance(s, State.CLOSED))
    assert closed.error is None, "closed by the application, not by an error"
    watch.cancel()


def free_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_second_endpoint_takes_over_and_presence_is_reported(server):
    reset_faults(server)
    dead = free_url()  # nothing listens there
    cfg = config(dead, [TransportKind.WS])
    cfg.endpoints = [server]
    cfg.client_id = "py"
    cfg.presence_data = '{"lang":"python"}'
    client = Client(cfg)
    states = States()
    watch = client.on_state(states)
    ch = channel("presence")
    got = Collector()
    sub = client.subscribe(ch, None, got)
    connected = states.until(lambda s: isinstance(s, State.CONNECTED))
    assert connected.endpoint == server, "moved on from the endpoint that refused"
    assert got.next() == ("presence", ("join", "py", '{"lang":"python"}'))
    members = asyncio.run(client.presence(ch))
    assert [(m.client_id, m.data) for m in members] == [("py", '{"lang":"python"}')]
    watch.cancel()
    sub.cancel()
    client.shutdown()


class DictStore(CursorStore):
    def __init__(self):
        self.cursors = {}

    def load(self, channel):
        return self.cursors.get(channel)

    def save(self, channel, cursor):
        self.cursors[channel] = cursor


def test_an_app_cursor_store_resumes_a_new_client_where_the_last_stopped(server):
    reset_faults(server)
    ch = channel("store")
    store = DictStore()
    store.cursors[ch] = publish(server, ch, "0")
    ids = [publish(server, ch, str(i)) for i in range(1, 4)]
    client = Client.with_callbacks(config(server), store, None)
    got = Collector()
    sub = client.subscribe(ch, None, got)  # no `from`: the store decides
    assert got.datas(3) == ["1", "2", "3"]
    assert store.cursors[ch] == ids[-1], "saved as each event was handed over"
    sub.cancel()
    client.shutdown()
    publish(server, ch, "4")
    again = Client.with_callbacks(config(server), store, None)
    got = Collector()
    sub = again.subscribe(ch, None, got)
    assert got.datas(1) == ["4"], "a new client starts after what the last one took"
    sub.cancel()
    again.shutdown()


def test_a_cursor_dir_keeps_cursors_in_files(server, tmp_path):
    reset_faults(server)
    ch = channel("dir")
    start = publish(server, ch, "0")
    (tmp_path / f"{ch}.cursor").write_text(start)
    publish(server, ch, "1")
    cfg = config(server)
    cfg.cursor_dir = str(tmp_path)
    client = Client(cfg)
    got = Collector()
    sub = client.subscribe(ch, None, got)
    assert got.datas(1) == ["1"]
    sub.cancel()
    client.shutdown()
    assert (tmp_path / f"{ch}.cursor").read_text() != start


class QueueTokens(TokenProvider):
    def __init__(self, *tokens):
        self.queue = list(tokens)
        self.last = None
        self.calls = 0

    def token(self):
        self.calls += 1
        if self.queue:
            self.last = self.queue.pop(0)
        return self.last


def test_a_token_provider_is_asked_again_after_a_refusal(server):
    reset_faults(server)
    post(f"{server}/control/tokens?accept=t1")
    try:
        ch = channel("tokens")
        start = publish(server, ch, "0")
        tokens = QueueTokens("t1")
        client = Client.with_callbacks(config(server, [TransportKind.WS]), None, tokens)
        got = Collector()
        sub = client.subscribe(ch, start, got)
        publish(server, ch, "1")
        assert got.datas(1) == ["1"]
        # The provider's next token is stale, then t2; the server moves to t2.
        tokens.queue = ["t1", "t2"]
        post(f"{server}/control/tokens?accept=t2")
        post(f"{server}/control/drop")
        publish(server, ch, "2")
        assert got.datas(1) == ["2"], "nothing lost across the refresh"
        assert tokens.calls >= 3
        sub.cancel()
        client.shutdown()
    finally:
        post(f"{server}/control/tokens")


class FailingTokens(TokenProvider):
    def __init__(self):
        self.calls = 0

    def token(self):
        self.calls += 1
        raise RuntimeError("the identity provider is down")


def test_a_failing_token_provider_is_reported_as_such_then_stops_the_client(server):
    reset_faults(server)
    tokens = FailingTokens()
    client = Client.with_callbacks(config(server, [TransportKind.WS]), None, tokens)
    states = States()
    watch = client.on_state(states)
    failed = states.until(lambda s: isinstance(s, State.DISCONNECTED))
    assert failed.reason == DisconnectCode.NO_CREDENTIALS, failed
    assert "the identity provider is down" in failed.detail, failed.detail
    closed = states.until(lambda s: isinstance(s, State.CLOSED))
    assert closed.error.code == "unauthorized"
    assert tokens.calls == 3, "three failures in a row, as three refusals"
    watch.cancel()


def test_bindings_are_generated_for_kotlin_and_swift():
    out = os.environ["RESUB_BINDINGS_DIR"]
    kt = open(os.path.join(out, "kotlin", "uniffi", "resub_ffi", "resub_ffi.kt")).read()
    swift = open(os.path.join(out, "swift", "resub_ffi.swift")).read()
    for text in (kt, swift):
        for name in ("Client", "SubscriptionListener", "StateListener", "ResubError", "defaultConfig"):
            assert name in text, name
    assert "suspend fun `publish`" in kt or "suspend fun publish" in kt
    assert "func publish(" in swift and "async" in swift


def test_the_swift_wrapper_uses_only_names_the_generated_swift_has():
    # No Swift compiler here: the wrapper is checked against the generated
    # declarations it relies on (compile it in Xcode with the bindings).
    swift = open(os.path.join(os.environ["RESUB_BINDINGS_DIR"], "swift", "resub_ffi.swift")).read()
    wrapper = open(os.path.join(os.path.dirname(__file__), "..", "swift", "Resub.swift")).read()
    needed = [
        "func onEvent(event: EventMessage) throws",
        "func onResumed(channel: String, after: String) throws",
        "func onReset(channel: String, reason: String, head: String) throws",
        "func onPresence(channel: String, action: String, clientId: String, data: String) throws",
        "func onError(code: String, message: String) throws",
        "func onEnd() throws",
        "func onState(state: State) throws",
        "func subscribe(channel: String, from: String?, listener: SubscriptionListener)",
        "func onState(listener: StateListener)",
        "convenience init(config: ClientConfig)",
        "case closed(",
        "func cancel()",
    ]
    for declaration in needed:
        assert declaration in swift, declaration
    for code, cls in resub.CODES.items():
        assert f"case {cls.__name__}(message: String)" in swift, cls.__name__
        assert f'case .{cls.__name__}: return "{code}"' in wrapper, code


# --- threads -------------------------------------------------------------------


def thread_name():
    """The OS name of the calling thread (as the library named it)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


class Timed(Collector):
    """Records, with each event, when it arrived and on which thread."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay = delay
        self.threads = set()

    def on_event(self, event):
        self.threads.add(thread_name())
        time.sleep(self.delay)
        self.items.put(("event", (time.monotonic(), event.data)))


def test_a_slow_listener_delays_neither_heartbeats_nor_other_subscriptions(server):
    reset_faults(server)
    slow_ch, quick_ch = channel("slow"), channel("quick")
    slow_start, quick_start = publish(server, slow_ch, "0"), publish(server, quick_ch, "0")
    # The fixture's heartbeat is 300 ms: a client whose I/O stalled would
    # miss it within 600 ms and report a disconnection.
    client = Client(config(server, [TransportKind.WS]))
    states = States()
    watch = client.on_state(states)
    states.until(lambda s: isinstance(s, State.CONNECTED))
    slow, quick = Timed(delay=1.0), Timed()
    h1 = client.subscribe(slow_ch, slow_start, slow)
    h2 = client.subscribe(quick_ch, quick_start, quick)
    for i in range(4):
        publish(server, slow_ch, f"s{i}")
    t0 = time.monotonic()
    for i in range(4):
        publish(server, quick_ch, f"q{i}")
    arrived = []
    while len(arrived) < 4:
        kind, value = quick.next()
        if kind == "event":
            arrived.append(value)
    assert [d for _, d in arrived] == ["q0", "q1", "q2", "q3"]
    assert arrived[-1][0] - t0 < 2.0, "the quick subscription waited for the slow listener"
    # The slow one gets all of its events, a second apart, and the
    # connection stayed up meanwhile.
    slow_events = []
    while len(slow_events) < 4:
        kind, value = slow.next()
        if kind == "event":
            slow_events.append(value[1])
    assert slow_events == ["s0", "s1", "s2", "s3"]
    seen = []
    while not states.items.empty():
        seen.append(states.items.get())
    assert not any(isinstance(s, State.DISCONNECTED) for s in seen), seen
    # Each on a delivery thread of its own, none on the I/O threads.
    assert slow.threads == {"resub-deliver"} and quick.threads == {"resub-deliver"}
    h1.cancel()
    h2.cancel()
    watch.cancel()
    client.shutdown()


class ThreadOfState(StateListener):
    def __init__(self):
        self.names = set()

    def on_state(self, state):
        self.names.add(thread_name())


def test_state_listeners_and_cursor_stores_are_called_on_library_threads_not_io_threads(server):
    reset_faults(server)
    names = set()

    class Store(DictStore):
        def save(self, channel, cursor):
            names.add(thread_name())
            super().save(channel, cursor)

    ch = channel("threads")
    start = publish(server, ch, "0")
    client = Client.with_callbacks(config(server), Store(), None)
    listener = ThreadOfState()
    watch = client.on_state(listener)
    got = Collector()
    sub = client.subscribe(ch, start, got)
    publish(server, ch, "1")
    assert got.datas(1) == ["1"]
    asyncio.run(client.shutdown_and_wait())
    assert names == {"resub-deliver"}, names
    assert listener.names == {"resub-state"}, listener.names
    del sub, watch


def test_shutdown_and_wait_returns_after_the_last_callback_and_none_comes_later(server):
    reset_faults(server)
    for _ in range(20):
        ch = channel("last")
        start = publish(server, ch, "0")
        client = Client(config(server))
        got = Collector()
        sub = client.subscribe(ch, start, got)
        publish(server, ch, "1")
        assert got.datas(1) == ["1"]
        asyncio.run(client.shutdown_and_wait())
        items = []
        while not got.items.empty():
            items.append(got.items.get())
        assert items and items[-1] == ("end", None), f"on_end before the return: {items}"
        time.sleep(0.05)
        assert got.items.empty(), "a callback after shutdown_and_wait returned"
        del sub


class Lines:
    def __init__(self):
        self.lines = queue.Queue()

    def log(self, level, target, message):
        self.lines.put((level, target, message))


def test_listener_exceptions_are_logged_with_what_they_said(server):
    reset_faults(server)
    logs = Lines()
    resub._ffi.set_log_listener(logs, LogLevel.WARN)
    try:
        ch = channel("logged")
        start = publish(server, ch, "0")
        client = Client(config(server))
        got = Raising()
        sub = client.subscribe(ch, start, got)
        publish(server, ch, "1")
        assert got.datas(1) == ["1"]
        deadline = time.monotonic() + TIMEOUT
        while True:
            level, target, message = logs.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if "42" in message:
                break
        assert level == LogLevel.WARN and "subscription" in message, (level, target, message)
        sub.cancel()
        asyncio.run(client.shutdown_and_wait())
    finally:
        resub.clear_log_listener()


# --- exit: no abort, however the process ends -----------------------------------

EXIT_SCRIPT = r"""
import asyncio, random, sys
sys.path.insert(0, sys.argv[2])
mode = sys.argv[3]
if mode == "raw-wait":
    from resub_ffi import Client, ClientConfig, SubscriptionListener
else:
    import resub
    from resub_ffi import Client, ClientConfig, SubscriptionListener

class L(SubscriptionListener):
    def on_event(self, e): pass
    def on_resumed(self, c, a): pass
    def on_reset(self, c, r, h): pass
    def on_presence(self, *a): pass
    def on_error(self, c, m): pass
    def on_end(self): pass

async def main():
    client = Client(ClientConfig(url=sys.argv[1]))
    ch = f"exit-{random.randrange(10**9)}"
    handle = client.subscribe(ch, None, L())
    await client.publish(ch, "x")
    if mode in ("wait", "raw-wait"):
        await client.shutdown_and_wait()
    elif mode == "shutdown":
        client.shutdown()
    # "drop": neither; the client and the handle are dropped at exit.
    return client, handle

kept = asyncio.run(main())
"""


def test_processes_exit_cleanly_after_shutdown_shutdown_and_wait_or_neither(server, tmp_path):
    script = tmp_path / "exit_once.py"
    script.write_text(EXIT_SCRIPT)
    bindings = os.environ.get("RESUB_BINDINGS_DIR", "target/ffi-bindings") + "/python"
    runs = int(os.environ.get("RESUB_EXIT_RUNS", "10"))
    failures = {}
    for mode in ("raw-wait", "wait", "shutdown", "drop"):
        for _ in range(runs):
            p = subprocess.run(
                [sys.executable, str(script), server, bindings, mode],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if p.returncode != 0:
                failures.setdefault(mode, []).append((p.returncode, p.stderr[-300:]))
    assert not failures, {m: (len(f), f[0]) for m, f in failures.items()}


# --- the Python idioms of the shipped wrapper -----------------------------------


def test_the_wrapper_reads_as_python(server):
    reset_faults(server)
    ch = channel("idiom")
    start = publish(server, ch, "0")

    async def main():
        async with resub.Client(server, transports=[TransportKind.SSE], backoff_base_ms=20) as client:
            sub = client.subscribe(ch, from_=start)
            first_id = await client.publish(ch, "one", event="note")
            await client.publish(ch, "end")
            got = []
            async for msg in sub:
                if msg.type == "event":
                    if msg.data == "end":
                        break
                    got.append((msg.id, msg.event, msg.data))
            assert got == [(first_id, "note", "one")]
            states = client.states()
            current = await states.__anext__()
            assert isinstance(current, State.CONNECTED) and current.transport == TransportKind.SSE
            states.close()
        # Closed: a new subscription fails as a publish does.
        with pytest.raises(resub.Closed) as e:
            await client.publish(ch, "late")
        assert e.value.code == "closed" and isinstance(e.value, resub.ResubError)

    asyncio.run(main())


def test_the_wrapper_raises_the_subscriptions_error_class(server):
    reset_faults(server)
    post(f"{server}/control/auth?reject=true")
    try:

        async def main():
            async with resub.Client(server, transports=[TransportKind.WS]) as client:
                with pytest.raises(resub.Unauthorized):
                    async for _ in client.subscribe(channel("denied")):
                        pass

        asyncio.run(main())
    finally:
        post(f"{server}/control/auth?reject=false")


def readme_codes(name):
    """The codes the README's contract table lists under `name`."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")).read()
    section = readme.split(f"<!-- contract:{name} -->")[1].split("<!-- /contract -->")[0]
    return sorted(section.split("):", 1)[1].split("`")[1::2])


def test_the_contract_table_codes_on_this_surface():
    # README, "One contract, three surfaces".
    assert sorted(c.name.lower() for c in DisconnectCode) == readme_codes("disconnect-codes")
    assert sorted(c for c in resub.CODES if c != "other") == readme_codes("error-codes")
    assert [m.type for m in (resub.Event("c", "e-1", "message", ""), resub.Resumed("c", "e-1"), resub.Reset("c", "r", "e-1"), resub.Presence("c", "join", "x", ""))] == [
        "event",
        "resumed",
        "reset",
        "presence",
    ]
    stats = resub.Stats(delivered=0, replayed=0, duplicates=0, resets=0, connections=0, failures=0)
    assert sorted(vars(stats)) == ["connections", "delivered", "duplicates", "failures", "replayed", "resets"]


# --- resub-server, the server teams deploy ---------------------------------

JWT_SECRET = b"a secret shared by the nodes and the token issuer"


def jwt(claims):
    """An HS256 JWT with these claims, valid for ten minutes."""
    import base64
    import hashlib
    import hmac

    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"exp": int(time.time()) + 600, **claims}).encode())
    sig = b64(hmac.new(JWT_SECRET, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def start_process(args, ready):
    """Starts a process; returns it once a stdout line contains `ready`."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if ready in line:
            return proc, line.strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"{args[0]} did not start")


def test_two_resub_server_nodes_with_jwt_refuse_a_channel_and_move_a_client_on_drain(tmp_path):
    """As server/README.md sets them up: two nodes on Redis, HS256 tokens. A
    channel outside the token ends with `forbidden`; SIGTERM on the node in
    use moves the client to the other, with every event once and in order."""
    binary = os.environ.get("RESUB_SERVER_BIN", "target/debug/resub-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        redis_port = s.getsockname()[1]
    procs = []
    try:
        redis, _ = start_process(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
            "Ready to accept connections",
        )
        procs.append(redis)
        secret = tmp_path / "secret"
        secret.write_bytes(JWT_SECRET + b"\n")
        prefix = channel("ffi")
        nodes = []
        for _ in range(2):
            args = [binary, "--addr", "127.0.0.1:0", "--heartbeat-ms", "300", "--jwt-secret-file", str(secret)]
            args += ["--redis", f"redis://127.0.0.1:{redis_port}", "--redis-prefix", prefix, "--drain-ms", "5000"]
            proc, line = start_process(args, "listening on ")
            procs.append(proc)
            nodes.append((proc, line.removeprefix("listening on ")))
        (a_proc, a), (_, b) = nodes
        writer = jwt({"sub": "writer", "publish": ["orders-*"]})

        def publish_to(node, ch, data):
            req = urllib.request.Request(
                f"{node}/publish/{ch}", data=data.encode(), method="POST", headers={"authorization": f"Bearer {writer}"}
            )
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                return json.loads(r.read())["id"]

        cfg = config(a, [TransportKind.WS])
        cfg.backoff_base_ms = 200
        cfg.backoff_cap_ms = 30_000
        cfg.endpoints = [b]
        tokens = QueueTokens(jwt({"sub": "reader", "subscribe": ["orders-*"]}))
        client = Client.with_callbacks(cfg, None, tokens)
        states = States()
        watch = client.on_state(states)
        refused = Collector()
        forbidden_sub = client.subscribe("secret", None, refused)
        assert refused.next() == ("error", "forbidden")
        assert refused.next() == ("end", None)

        ch = channel("orders")
        start = publish_to(b, ch, "0")
        got = Collector()
        sub = client.subscribe(ch, start, got)
        for i in range(1, 21):
            publish_to(b, ch, str(i))
        assert got.datas(20) == [str(i) for i in range(1, 21)]
        a_proc.terminate()  # SIGTERM: the node drains
        told = states.until(lambda s: isinstance(s, State.DISCONNECTED))
        assert str(told.reason).endswith("SERVER_CLOSED"), told
        assert told.retry_in_ms <= 200, f"at once, not after the grown backoff: {told}"
        moved = states.until(lambda s: isinstance(s, State.CONNECTED))
        assert moved.endpoint == b
        for i in range(21, 41):
            publish_to(b, ch, str(i))
        assert got.datas(20) == [str(i) for i in range(21, 41)], "every event once, in order"
        assert a_proc.wait(timeout=TIMEOUT) == 0, "the drained node exits cleanly"
        watch.cancel()
        sub.cancel()
        forbidden_sub.cancel()
        client.shutdown()
    finally:
        for p in procs:
            p.kill()
            p.wait()
