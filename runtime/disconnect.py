"""Noticing a client that leaves, and cancelling the work it asked for.

Once the host has read a request's body, the app below it reads the body from
a replay (:class:`Replay`) and a watcher task owns the connection's
``receive``: when the client disconnects, the replay reports it (streaming
responses stop) and, for work that can be cancelled, the serving task is
cancelled (an async cord's coroutine, a passthrough request before or after
the engine's headers). A sync cord runs in a thread that cannot be
interrupted: it keeps its slot until it returns. Either way the request is
counted with status 499.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Replay", "Watcher"]

Message = MutableMapping[str, Any]


class Replay:
    """The ``receive`` the app sees: the body already read, then the disconnect."""

    __slots__ = ("_body", "gone")

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body
        self.gone = asyncio.Event()

    async def __call__(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


class Watcher:
    """Watches ``receive`` for the disconnect while the current task serves the request."""

    __slots__ = ("_task", "_watch", "cancel", "left", "replay", "responded")

    def __init__(self, receive: Callable[[], Awaitable[Message]], replay: Replay, cancel: bool):
        self.replay = replay
        self.cancel = cancel
        self.left = False
        #: Set once the whole response is sent: a disconnect after that is no one leaving.
        self.responded = False
        self._task = asyncio.current_task()
        self._watch = asyncio.get_running_loop().create_task(self._run(receive))

    async def _run(self, receive: Callable[[], Awaitable[Message]]) -> None:
        while True:
            message = await receive()
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
        self._watch.cancel()

    def swallow(self) -> bool:
        """After a ``CancelledError``: whether it was the client leaving (then it is
        consumed, and the task goes on); otherwise it must propagate."""
        if not (self.left and self.cancel):
            return False
        if sys.version_info >= (3, 11) and self._task is not None:
            self._task.uncancel()
        return True
