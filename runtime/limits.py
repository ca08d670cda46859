"""Request limits: header and body deadlines, sizes, and JSON that cannot be answered.

The host reads a request's whole body *before* it takes a concurrency slot,
so a client that trickles its body holds a connection, never a slot. The
read is bounded twice: by size (413 as soon as the declared length or the
bytes received cross the limit, without reading the rest) and by time (408
past the deadline). Every refusal closes the connection.

Before that, the request head itself has a deadline (uvicorn has none): a
connection must complete each request's headers within the header timeout
of opening or of its previous response ending. One that sent part of a head
by then is answered 408 and closed; one that sent nothing is closed, as
uvicorn closes an idle keep-alive connection. See :func:`header_deadline`.

Defaults, each overridable by an environment variable:

=============================  ===========  ========================================
``CHUTES_MAX_BODY_BYTES``      16 MiB       body size of a request (a cord's own
                                            ``max_body_bytes`` wins for that cord)
``CHUTES_HEADER_TIMEOUT``      10 s         time to receive a request's headers (408)
``CHUTES_BODY_TIMEOUT``        30 s         time to receive the whole body (408)
``CHUTES_MAX_HEADERS``         100          header fields in a request (431)
``CHUTES_MAX_HEADER_BYTES``    64 KiB       all header names and values (431)
=============================  ===========  ========================================
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from chutes_runtime.disconnect import clock

__all__ = [
    "BodyRefused",
    "Limits",
    "check_headers",
    "header_deadline",
    "read_body",
    "unanswerable_json",
]

Message = MutableMapping[str, Any]


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number")
    return value


@dataclass(frozen=True)
class Limits:
    """The host-wide request limits (see the module docstring for the defaults)."""

    max_body_bytes: int = 16 * 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_body_bytes=int(_env_number("CHUTES_MAX_BODY_BYTES", cls.max_body_bytes)),
            header_timeout=_env_number("CHUTES_HEADER_TIMEOUT", cls.header_timeout),
            body_timeout=_env_number("CHUTES_BODY_TIMEOUT", cls.body_timeout),
            max_headers=int(_env_number("CHUTES_MAX_HEADERS", cls.max_headers)),
            max_header_bytes=int(_env_number("CHUTES_MAX_HEADER_BYTES", cls.max_header_bytes)),
        )


class BodyRefused(Exception):
    """The body was not read to the end: answer ``status`` (0: the client left)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)


def check_headers(headers: list[tuple[bytes, bytes]], limits: Limits) -> str | None:
    """Why these headers are refused (431), or ``None``."""
    if len(headers) > limits.max_headers:
        return f"too many header fields: {len(headers)} (at most {limits.max_headers})"
    size = sum(len(name) + len(value) for name, value in headers)
    if size > limits.max_header_bytes:
        return f"headers too large: {size} bytes (at most {limits.max_header_bytes})"
    return None


_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def header_deadline(timeout: float, base: type[Any] | None = None) -> type[Any]:
    """uvicorn's HTTP protocol (``base``; uvicorn's choice by default) with a header deadline.

    Pass the class as ``uvicorn.Config(http=...)``. A timer is armed when the
    connection opens and again when each response ends; at the deadline, a
    connection with no request in progress has not completed a head: it gets
    a 408 if it sent part of one, and is closed either way. Only the protocol's
    public surface is used (``connection_made``, ``data_received``,
    ``on_response_complete``, ``connection_lost``, the ``cycle`` attribute).
    """
    import asyncio

    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    detail = f"the request headers did not arrive within {timeout:g}s".encode()
    timed_out = _TIMED_OUT % (len(detail), detail)

    class HeaderDeadline(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _head_started = False
        _head_since = 0.0  # when the connection opened, or its last response ended

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            loop = asyncio.get_running_loop()
            self._head_since = loop.time()
            self._head_timer = loop.call_at(self._head_since + timeout, self._head_deadline)

        def data_received(self, data: bytes) -> None:
            self._head_started = True
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The timer is not moved for each response (that costs more than the rest of
            # this): it is moved when it fires, to the last response's end.
            self._head_started = False
            self._head_since = asyncio.get_running_loop().time()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def _head_deadline(self) -> None:
            self._head_timer = None
            transport = self.transport
            if transport.is_closing() or transport.get_protocol() is not self:
                return  # closed, or upgraded to a websocket
            loop = asyncio.get_running_loop()
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                # A request is being served (its head arrived in time): look again
                # one timeout after now, by when its response may have ended.
                due = loop.time() + timeout
            else:
                due = self._head_since + timeout
            if due > loop.time():
                self._head_timer = loop.call_at(due, self._head_deadline)
                return
            if self._head_started:
                transport.write(timed_out)
            transport.close()

    return HeaderDeadline


def has_body(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length; -1 when chunked; ``None`` when there is no body."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1  # malformed: read it and let the limits decide
        if name == b"transfer-encoding":
            return -1
    return None


async def read_body(
    receive: Callable[[], Awaitable[Message]], declared: int, max_bytes: int, timeout: float
) -> bytes:
    """The whole body, within ``max_bytes`` and ``timeout``; raises :class:`BodyRefused`.

    The deadline is kept by the event loop's shared clock (no timer of its own:
    ``asyncio.timeout`` cost a third of the host's own work per request), so
    it is kept to within one tick (:data:`~chutes_runtime.disconnect.WATCH_AFTER`).
    """
    if declared > max_bytes:
        raise BodyRefused(413, _too_large(max_bytes))
    deadline = _Deadline()
    clock = deadline.clock
    clock.add(deadline, timeout)
    try:
        return await _read(receive, max_bytes)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        # Cancelled by someone else as well (shutdown): that one goes on.
        if sys.version_info >= (3, 11) and deadline.task.uncancel() > 0:
            raise
        raise BodyRefused(408, f"the request body did not arrive within {timeout:g}s") from None
    finally:
        clock.discard(deadline)


class _Deadline:
    """Cancels the reading task when due (see :class:`~chutes_runtime.disconnect.Clock`)."""

    __slots__ = ("clock", "expired", "task")

    def __init__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.clock = clock()
        self.expired = False

    def due(self) -> None:
        self.expired = True
        self.task.cancel("the request body did not arrive in time")


async def _read(receive: Callable[[], Awaitable[Message]], max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyRefused(0, "the client went away")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise BodyRefused(413, _too_large(max_bytes))
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_bytes: int) -> str:
    return f"request body too large: at most {max_bytes} bytes"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (JSON numbers are finite)")


def unanswerable_json(body: bytes) -> str | None:
    """Why a JSON body is refused (400), or ``None``.

    Python's JSON decoder accepts ``NaN``, ``Infinity`` and lone UTF-16
    surrogates (``"\\ud800"``), none of which can be answered (the response
    encoder refuses them, as does UTF-8). The body is parsed only when one of
    them may be there, so ordinary bodies cost one byte search each.
    """
    if b"NaN" not in body and b"Infinity" not in body and b"\\u" not in body:
        return None
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:
        if "JSON numbers are finite" in str(exc):
            return str(exc)
        return None  # malformed JSON: the cord's own validation says how
    if b"\\u" in body:
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return "the body has a lone UTF-16 surrogate (such as \\ud800), which is not text"
    return None
