"""resub for Python: resumable real-time subscriptions.

A thin layer over the generated UniFFI module ``resub_ffi`` (copy both, and
the native library, side by side), giving it Python's idioms::

    import asyncio, resub

    async def main():
        async with resub.Client("https://rt.example.com", transports=[resub.TransportKind.WS]) as client:
            async for msg in client.subscribe("trades", from_="k3f9a2x1-41"):
                if msg.type == "event":
                    print(msg.id, msg.data)
                elif msg.type == "reset":
                    print("history lost:", msg.reason)

    asyncio.run(main())

- ``Client(url, **options)``: options are the fields of ``ClientConfig``,
  every one optional (the core's defaults otherwise).
- ``client.subscribe(channel, from_=None)`` is an async iterator of
  ``Event``, ``Resumed``, ``Reset`` and ``Presence`` messages, each with a
  ``type``; it raises the subscription's error when it ends with one.
- ``client.states()`` is an async iterator of states, the current one first.
- Errors are one class per stable code: ``except resub.Unauthorized``;
  every one is a ``resub.ResubError`` with ``.code`` and ``str(e)``.
- Threads: the library calls back on threads of its own; this module hands
  every message to the asyncio loop that subscribed. At interpreter exit
  every client is shut down before Python tears down (``atexit``), so no
  library thread calls into a dying interpreter.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import typing

import resub_ffi as _ffi
from resub_ffi import (  # noqa: F401  (re-exported)
    ClientConfig,
    DisconnectCode,
    EventMessage,
    LogLevel,
    PresenceMember,
    State,
    Stats,
    TransportKind,
    clear_log_listener,
    shutdown_all,
)

# --- errors: one class per code ------------------------------------------------

ResubError = _ffi.ResubError

#: The stable code of each error class (the same codes as Rust and JS).
CODES: typing.Dict[str, type] = {
    "unauthorized": ResubError.Unauthorized,
    "forbidden": ResubError.Forbidden,
    "bad_request": ResubError.BadRequest,
    "tls": ResubError.Tls,
    "retries_exhausted": ResubError.RetriesExhausted,
    "closed": ResubError.Closed,
    "already_subscribed": ResubError.AlreadySubscribed,
    "invalid_argument": ResubError.InvalidArgument,
    "invalid_url": ResubError.InvalidUrl,
    "publish_rejected": ResubError.PublishRejected,
    "publish_queue_full": ResubError.PublishQueueFull,
    "frame_too_large": ResubError.FrameTooLarge,
    "invalid_client_id": ResubError.InvalidClientId,
    "unavailable": ResubError.Unavailable,
    "cursor_store": ResubError.CursorStore,
    "no_randomness": ResubError.NoRandomness,
    "other": ResubError.Other,
}

for _code, _cls in CODES.items():
    _cls.code = _code  # e.code on an instance
    globals()[_cls.__name__] = _cls  # resub.Unauthorized, resub.Closed, …
ResubError.code = property(lambda self: type(self).code)  # type: ignore[attr-defined]


def error(code: str, message: str) -> Exception:
    """The exception for a stable ``code`` (``Other`` for one not known)."""
    return CODES.get(code, ResubError.Other)(message)


# --- messages ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """The next event after the cursor."""

    channel: str
    id: str
    event: str
    data: str
    type: str = "event"


@dataclasses.dataclass(frozen=True)
class Resumed:
    """A (re)subscription resumed after ``after``: nothing was lost."""

    channel: str
    after: str
    type: str = "resumed"


@dataclasses.dataclass(frozen=True)
class Reset:
    """The subscription could not continue from its cursor (``reason``); it
    continues after ``head``. Events may have been missed: re-sync."""

    channel: str
    reason: str
    head: str
    type: str = "reset"


@dataclasses.dataclass(frozen=True)
class Presence:
    """``client_id`` joined or left the channel's presence."""

    channel: str
    action: str
    client_id: str
    data: str
    type: str = "presence"


Message = typing.Union[Event, Resumed, Reset, Presence]

_END = object()

# --- listeners with every method but on_event optional -------------------------


class SubscriptionListener:
    """Base class for callback listeners: override ``on_event`` and whatever
    else you need; the rest do nothing. Called on a library thread."""

    def on_event(self, event: EventMessage) -> None:
        raise NotImplementedError

    def on_resumed(self, channel: str, after: str) -> None:
        pass

    def on_reset(self, channel: str, reason: str, head: str) -> None:
        pass

    def on_presence(self, channel: str, action: str, client_id: str, data: str) -> None:
        pass

    def on_error(self, code: str, message: str) -> None:
        pass

    def on_end(self) -> None:
        pass


class _ToLoop(SubscriptionListener):
    """Hands every message to an asyncio queue, on the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        self._loop, self._queue = loop, queue

    def _put(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed: nobody is listening any more

    def on_event(self, e):
        self._put(Event(e.channel, e.id, e.event, e.data))

    def on_resumed(self, channel, after):
        self._put(Resumed(channel, after))

    def on_reset(self, channel, reason, head):
        self._put(Reset(channel, reason, head))

    def on_presence(self, channel, action, client_id, data):
        self._put(Presence(channel, action, client_id, data))

    def on_error(self, code, message):
        self._put(error(code, message))

    def on_end(self):
        self._put(_END)


class Subscription:
    """An async iterator of a channel's messages; ``close()`` ends it."""

    def __init__(self, client: "_ffi.Client", channel: str, from_: typing.Optional[str]):
        self.channel = channel
        self._queue: asyncio.Queue = asyncio.Queue()
        self._handle = client.subscribe(channel, from_, _ToLoop(asyncio.get_running_loop(), self._queue))
        self._done = False

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            # The subscription ends with it; on_end follows.
            self._done = True
            self._handle.cancel()
            raise item
        return item

    def close(self) -> None:
        self._handle.cancel()

    async def __aenter__(self) -> "Subscription":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class _StatesToLoop:
    def __init__(self, loop, queue):
        self._loop, self._queue = loop, queue

    def on_state(self, state):
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, state)
        except RuntimeError:
            pass


class States:
    """An async iterator of connection states, the current one first; it
    ends after ``State.CLOSED``."""

    def __init__(self, client: "_ffi.Client"):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._handle = client.on_state(_StatesToLoop(asyncio.get_running_loop(), self._queue))
        self._done = False

    def __aiter__(self) -> "States":
        return self

    async def __anext__(self) -> State:
        if self._done:
            raise StopAsyncIteration
        state = await self._queue.get()
        if isinstance(state, State.CLOSED):
            self._done = True
        return state

    def close(self) -> None:
        self._handle.cancel()


class _Tokens:
    def __init__(self, fn: typing.Callable[[], str]):
        self._fn = fn

    def token(self) -> str:
        return self._fn()


class Client:
    """A connection to a resub server; ``async with`` closes it.

    ``Client(url, **options)`` takes the fields of ``ClientConfig`` as
    keywords; ``store`` is an object with ``load(channel)`` and
    ``save(channel, cursor)``; ``token_provider`` a callable returning a
    token (called on a library thread before each connection).
    """

    def __init__(
        self,
        url: str,
        *,
        store: typing.Any = None,
        token_provider: typing.Optional[typing.Callable[[], str]] = None,
        **options: typing.Any,
    ):
        tokens = _Tokens(token_provider) if token_provider is not None else None
        self.ffi = _ffi.Client.with_callbacks(ClientConfig(url=url, **options), store, tokens)

    def subscribe(self, channel: str, from_: typing.Optional[str] = None) -> Subscription:
        """The channel's messages, after ``from_`` (or the store's cursor,
        or live); raises ``Closed`` after ``close``. Call it from a coroutine."""
        return Subscription(self.ffi, channel, from_)

    def states(self) -> States:
        return States(self.ffi)

    @property
    def state(self) -> State:
        return self.ffi.state()

    @property
    def stats(self) -> Stats:
        return self.ffi.stats()

    async def publish(self, channel: str, data: str, event: typing.Optional[str] = None) -> str:
        """Publishes; returns the event id once the server acknowledged it."""
        return await self.ffi.publish_event(channel, event, data)

    async def presence(self, channel: str) -> typing.List[PresenceMember]:
        return await self.ffi.presence(channel)

    def wake(self) -> None:
        self.ffi.wake()

    def network_available(self, online: bool) -> None:
        self.ffi.network_available(online)

    async def close(self) -> None:
        """Closes and returns once no library thread will call back again."""
        await self.ffi.shutdown_and_wait()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class _Logs:
    def __init__(self, fn):
        self._fn = fn

    def log(self, level, target, message):
        self._fn(level, target, message)


def set_log_listener(fn: typing.Callable[[LogLevel, str, str], None], level: LogLevel = LogLevel.WARN) -> None:
    """Sends the library's log lines of ``level`` and above to ``fn(level,
    target, message)``, on the library's log thread (for ``logging``,
    forward them to a logger)."""
    _ffi.set_log_listener(_Logs(fn), level)


# Before the interpreter tears down: no library thread may call into it
# afterwards.
atexit.register(shutdown_all)
