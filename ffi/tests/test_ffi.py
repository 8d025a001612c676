"""The FFI end to end through the Python bindings: the same library Kotlin and
Swift apps load, against the fixture server binary."""

import asyncio
import json
import os
import queue
import random
import socket
import subprocess
import time
import urllib.request

import pytest

from resub_ffi import (
    Client,
    CursorStore,
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
        out = []
        while len(out) < n:
            kind, value = self.next()
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
    assert got.next() == ("reset", "unknown_cursor")
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
    with pytest.raises(ResubError) as e:
        Client(default_config("not a url"))
    assert e.value.code == "invalid_url"
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
    assert (kind, event.id, event.data) == ("event", event_id, "from python")
    client.shutdown()


def test_a_listener_that_raises_does_not_crash_the_client(server):
    reset_faults(server)

    class Raising(Collector):
        def on_event(self, event):
            super().on_event(event)
            raise RuntimeError("the application's own bug")

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
    assert got.next()[0] == "event"
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


def test_a_failing_token_provider_stops_the_client_with_unauthorized(server):
    reset_faults(server)
    tokens = FailingTokens()
    client = Client.with_callbacks(config(server, [TransportKind.WS]), None, tokens)
    deadline = time.monotonic() + 20
    while not isinstance(client.state(), State.CLOSED):
        assert time.monotonic() < deadline, f"still {client.state()}"
        time.sleep(0.02)
    assert client.state().error.code == "unauthorized"
    assert tokens.calls == 3, "three failures in a row stop it"
    client.shutdown()


def test_bindings_are_generated_for_kotlin_and_swift():
    out = os.environ["RESUB_BINDINGS_DIR"]
    kt = open(os.path.join(out, "kotlin", "uniffi", "resub_ffi", "resub_ffi.kt")).read()
    swift = open(os.path.join(out, "swift", "resub_ffi.swift")).read()
    for text in (kt, swift):
        for name in ("Client", "SubscriptionListener", "StateListener", "ResubError", "defaultConfig"):
            assert name in text, name
    assert "suspend fun `publish`" in kt or "suspend fun publish" in kt
    assert "func publish(" in swift and "async" in swift
