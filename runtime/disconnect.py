"""Noticing a client that leaves, and cancelling the work it asked for.

Once the host has read a request's body, the app below it reads the body from
a replay (:class:`Replay`), and a watcher owns the connection's ``receive``:
when the client disconnects, the replay reports it (streaming responses stop)
and, for work that can be cancelled, the serving task is cancelled (an async
cord's coroutine, a passthrough request before or after the engine's
headers). A sync cord runs in a thread that cannot be interrupted: it keeps
its slot until it returns. Either way the request is counted with status 499.

The watcher task starts only once a request has run for :data:`WATCH_AFTER`
seconds: most requests finish sooner, and a task per request would cost them
more than the rest of the host. A client that leaves earlier is noticed then.
Nor does each request get a timer of its own (on uvloop, arming and
cancelling one costs more than the host's other checks together): one
:class:`Clock` per event loop ticks every :data:`WATCH_AFTER` seconds while
any request is registered with it, and hands each its due time, at most one
tick late. The body deadline (:func:`chutes_runtime.limits.read_body`) uses
it too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["WATCH_AFTER", "Clock", "Replay", "Watcher", "clock"]

Message = MutableMapping[str, Any]
log = logging.getLogger("chutes.runtime")
#: Seconds a request runs before its connection is watched for a disconnect.
WATCH_AFTER = 0.01


class Clock:
    """One timer for every request on an event loop: calls each registered entry's
    ``due()`` once its time has come, at most :data:`WATCH_AFTER` seconds late."""

    __slots__ = ("_handle", "_waiting", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._waiting: dict[Any, float] = {}  # entry -> loop time it is due at

    def add(self, entry: Any, delay: float) -> None:
        """Call ``entry.due()`` in ``delay`` seconds, unless discarded before."""
        self._waiting[entry] = self.loop.time() + delay
        if self._handle is None:
            self._handle = self.loop.call_later(WATCH_AFTER, self._tick)

    def discard(self, entry: Any) -> None:
        self._waiting.pop(entry, None)

    def _tick(self) -> None:
        now = self.loop.time()
        waiting = self._waiting
        for entry in [entry for entry, at in waiting.items() if at <= now]:
            del waiting[entry]
            try:
                entry.due()
            except Exception:  # one entry's failure must not stop the clock for the others
                log.exception("a request's timer failed")
        self._handle = self.loop.call_later(WATCH_AFTER, self._tick) if waiting else None


_clock: Clock | None = None


def clock() -> Clock:
    """The clock of the running event loop."""
    global _clock
    loop = asyncio.get_running_loop()
    if _clock is None or _clock.loop is not loop:
        _clock = Clock(loop)
    return _clock


class Replay:
    """The ``receive`` the app sees: the body already read, then the disconnect."""

    __slots__ = ("_body", "_gone")

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self._gone: asyncio.Event | None = None

    @property
    def gone(self) -> asyncio.Event:
        if self._gone is None:
            self._gone = asyncio.Event()
        return self._gone

    async def __call__(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


class Watcher:
    """Watches ``receive`` for the disconnect while the current task serves the request."""

    __slots__ = ("_clock", "_receive", "_task", "_watch", "cancel", "left", "replay", "responded")

    def __init__(self, receive: Callable[[], Awaitable[Message]], replay: Replay, cancel: bool):
        self.replay = replay
        self.cancel = cancel
        self.left = False
        #: Set once the whole response is sent: a disconnect after that is no one leaving.
        self.responded = False
        self._receive = receive
        self._task = asyncio.current_task()
        self._watch: asyncio.Task[None] | None = None
        self._clock = clock()
        self._clock.add(self, WATCH_AFTER)

    def due(self) -> None:
        """The request has run for :data:`WATCH_AFTER`: watch its connection."""
        if not self.responded:
            self._watch = self._clock.loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        if self._task is None or self.responded:
            return
        self.left = True
        self.replay.gone.set()
        if self.cancel:
            self._task.cancel("the client went away")

    def stop(self) -> None:
        """The request is done: stop watching."""
        self._clock.discard(self)
        if self._watch is not None:
            self._watch.cancel()

    def swallow(self) -> bool:
        """After a ``CancelledError``: whether it was the client leaving (then it is
        consumed, and the task goes on); otherwise it must propagate."""
        if not (self.left and self.cancel):
            return False
        if sys.version_info >= (3, 11) and self._task is not None:
            self._task.uncancel()
        return True
