"""The engine's side of passthrough: HTTP/1.1 over pooled loopback connections.

A passthrough cord asks one engine, on loopback, the same few requests over
and over; what it needs from a client is a connection pool, a request written
in one piece, and the answer's head and body as they arrive. A general client
(aiohttp) builds a request object, a header multidict, timers and a response
object per request: in process that was about three fifths of the host's
work per forwarded request (BENCHMARKS.md). Here a request is the bytes the
host built (:func:`request_head` and the body, one write), and the answer is
parsed by httptools, uvicorn's parser (llhttp), straight into a
:class:`Response`: status, the engine's headers as sent, and its body as
decoded from the engine's framing (Content-Length or chunked).

What a client owes the engine is kept:

- **Keep-alive**: a connection goes back to its :class:`Pool` once its
  answer has fully arrived and the engine did not ask to close it; one idle
  longer than :data:`IDLE_FOR` is closed rather than reused (servers close
  idle connections after a few seconds: uvicorn's default is 5), and a
  request that finds its reused connection closed before any answer arrives
  is sent once more on a fresh one (the engine never saw it).
- **Disconnects**: :meth:`Response.close` before the end drops the
  connection, so the engine sees its client leave and can stop.
- **Timeouts**: connecting is bounded (504), and so is each wait for the
  engine's next bytes (504 before the head; an error mid-body), with one
  timer per connection that is moved only when it fires.
- **Back pressure**: reading from the engine pauses while more than
  :data:`BUFFER_AT_MOST` bytes wait for a slow client.

It speaks only to what the host was configured with (a cord's engine on
loopback), never to a URL from a request.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterator, Iterable
from typing import cast

import httptools

__all__ = [
    "BUFFER_AT_MOST",
    "FRAMING",
    "IDLE_FOR",
    "Pool",
    "Response",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "check_header",
    "check_target",
    "check_value",
    "request_head",
]

#: Seconds an idle connection may be reused after (below common servers' keep-alive).
IDLE_FOR = 4.0
#: Bytes of answer held for a slow client before reading from the engine pauses.
BUFFER_AT_MOST = 1024 * 1024


class UpstreamError(Exception):
    """The engine could not be asked, or its answer broke off."""


class UpstreamUnreachable(UpstreamError):
    """No connection, or it closed without an answer, or the answer was malformed (502)."""


class UpstreamTimeout(UpstreamError):
    """Connecting, or waiting for the engine's next bytes, took too long (504)."""


class _Stale(UpstreamUnreachable):
    """A reused connection closed before any answer: the engine never saw the request."""


# What a header name and value may hold on the wire (RFC 9110 5.1 and 5.5).
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")


#: Headers that frame a request or speak for its connection: set here, never by a caller.
FRAMING = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
    }
)


def check_header(name: bytes, value: bytes) -> None:
    """Refuse a header that would break the request's framing (a plugin's, say):
    characters a header cannot hold, or a framing header (:data:`FRAMING`;
    ``name`` lower-cased)."""
    if not _NAME.fullmatch(name) or name in FRAMING:
        raise ValueError(f"header {name!r}: {value!r} cannot be sent")
    check_value(name, value)


def check_value(name: bytes, value: bytes) -> None:
    """Refuse a header value with characters a header cannot hold (a Host a plugin set)."""
    if not _VALUE.fullmatch(value):
        raise ValueError(f"header {name!r}: {value!r} cannot be sent")


def check_target(target: bytes) -> None:
    """Refuse a request target that is not a path, or that would break the request line."""
    if not target.startswith(b"/") or any(c <= 0x20 or c == 0x7F for c in target):
        raise ValueError(f"cannot forward to {target.decode('latin-1')!r}")


def request_head(
    method: bytes,
    target: bytes,
    authority: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    body_length: int | None,
) -> list[bytes]:
    """The parts of a request head (join them with the body for one write).

    ``target`` is the path and query; ``headers`` must not hold ``host`` or
    any header that frames the body (see :data:`FRAMING`): ``authority`` is
    the ``host``, and ``body_length`` the ``content-length`` (``None``: none).
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if body_length is not None:
        parts.append(b"content-length: %d\r\n" % body_length)
    parts.append(b"\r\n")
    return parts


class Response:
    """One answer from the engine: its status and headers, then its body."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_connection",
        "_error",
        "_waiter",
        "chunked",
        "done",
        "headers",
        "length",
        "status",
    )

    def __init__(self, connection: _Connection) -> None:
        self._connection: _Connection | None = connection
        #: Status code, once the head has arrived (0 before).
        self.status = 0
        #: The engine's headers as it sent them (names in its own case, repeats kept).
        self.headers: list[tuple[bytes, bytes]] = []
        #: The declared Content-Length, if any.
        self.length: int | None = None
        self.chunked = False
        #: The whole body has arrived.
        self.done = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole body."""
        while not self.done:
            if self._connection is not None:
                self._connection.resume()  # a body this size is read whole
            await self._wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: all that arrived since the last step, joined."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                if self._buffered > BUFFER_AT_MOST and self._connection is not None:
                    self._connection.resume()
                self._buffered = 0
                yield data
            elif self.done:
                return
            else:
                await self._wait()

    def close(self) -> None:
        """Done with the answer: mid-body, drop the connection so the engine sees it."""
        connection, self._connection = self._connection, None
        if connection is not None and not self.done:
            connection.drop()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self.done:
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the engine; httptools calls its ``on_*`` methods."""

    def __init__(self, pool: Pool, read_timeout: float) -> None:
        self.pool = pool
        self.read_timeout = read_timeout
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.received = False  # any byte of the current answer
        self.interim = False  # a 1xx head, skipped
        self.closed = False
        self.idle_since = 0.0
        self.active_at = 0.0  # the engine's last bytes (or the request's sending)
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None

    # -- the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, response: Response, data: bytes) -> None:
        assert self.transport is not None
        if self.closed or self.transport.is_closing():  # closed before it could be used
            response._fail(_Stale("the engine closed the connection without an answer"))
            return
        self.response = response
        self.received = False
        self.active_at = now = self.loop.time()
        due = now + self.read_timeout
        timer = self.timer
        if timer is not None and timer.when() > due:  # set for a longer timeout
            timer.cancel()
            timer = None
        if timer is None:
            self.timer = self.loop.call_at(due, self._idle_check)
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # the engine spoke unasked: nothing to trust on it
            self.drop()
            return
        self.received = True
        self.active_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken("the engine switched protocols")
        except httptools.HttpParserError as exc:
            self._broken(f"the engine's answer is malformed: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        self.pool.forget(self)
        response, self.response = self.response, None
        if response is None:
            return
        if response.status and response.length is None and not response.chunked:
            # Neither a length nor chunks: the body is what came before the close.
            response.done = True
            response._connection = None
            response._wake()
            return
        if not self.received:
            response._fail(_Stale("the engine closed the connection without an answer"))
        elif not response.status:
            response._fail(UpstreamUnreachable("the engine closed the connection mid-head"))
        else:
            response._fail(UpstreamError("the engine closed the connection mid-answer"))

    def drop(self) -> None:
        """Close now; whatever is in progress fails (its client left, or it broke)."""
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.active_at = self.loop.time()
            self.transport.resume_reading()

    def _broken(self, why: str) -> None:
        response, self.response = self.response, None
        self.drop()
        if response is not None:
            response._fail(UpstreamUnreachable(why))

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle_check(self) -> None:
        """The read timeout: moved to the engine's last bytes, or enforced."""
        self.timer = None
        response = self.response
        if response is None or self.closed:
            return
        now = self.loop.time()
        if self.paused:  # the client is slow, not the engine: look again later
            self.timer = self.loop.call_at(now + self.read_timeout, self._idle_check)
            return
        due = self.active_at + self.read_timeout
        if due > now:
            self.timer = self.loop.call_at(due, self._idle_check)
            return
        self.response = None
        self.drop()
        response._fail(UpstreamTimeout(f"no answer within {self.read_timeout:g}s"))

    # -- httptools' callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._current()
        if self.interim:
            return
        response.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length":
            if value.strip().isdigit():  # else llhttp refuses it
                response.length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            response.chunked = True

    def _current(self) -> Response:
        response = self.response
        if response is None:  # a second answer to one request: httptools stops on this
            raise UpstreamUnreachable("the engine answered more than it was asked")
        return response

    def on_message_begin(self) -> None:
        self._current()
        self.interim = False

    def on_headers_complete(self) -> None:
        response = self._current()
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 100 Continue and the like: the answer follows
            self.interim = True
            response.headers.clear()
            response.length = None
            response.chunked = False
            return
        response.status = status
        response._wake()

    def on_body(self, body: bytes) -> None:
        response = self._current()
        response._chunks.append(body)
        response._buffered += len(body)
        if response._buffered > BUFFER_AT_MOST and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        response = self._current()
        self.response = None
        response.done = True
        response._connection = None
        response._wake()
        if self.paused and self.transport is not None:  # the next answer must be read
            self.paused = False
            self.transport.resume_reading()
        if self.parser.should_keep_alive() and not self.closed:
            self.pool.release(self)
        else:
            self.drop()


class Pool:
    """Keep-alive connections to one engine (``host``, ``port``), most recent first."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.authority = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()
        self._idle: collections.deque[_Connection] = collections.deque()
        self._all: set[_Connection] = set()

    async def request(self, data: bytes, connect_timeout: float, read_timeout: float) -> Response:
        """Send ``data`` (a whole request) and wait for the answer's head.

        Cancelled meanwhile, the connection is dropped (the engine sees the
        client leave). Raises :class:`UpstreamUnreachable` or :class:`UpstreamTimeout`.
        """
        connection = self._reuse()
        if connection is not None:
            try:
                return await self._ask(connection, data, read_timeout)
            except _Stale:
                pass  # closed while idle: once more, on a fresh connection
        connection = await self._connect(connect_timeout, read_timeout)
        return await self._ask(connection, data, read_timeout)

    async def _ask(self, connection: _Connection, data: bytes, read_timeout: float) -> Response:
        connection.read_timeout = read_timeout
        response = Response(connection)
        connection.send(response, data)
        try:
            while not response.status:
                await response._wait()
        except BaseException:
            response.close()
            raise
        return response

    def _reuse(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if connection.closed or connection.transport is None:
                continue
            if now - connection.idle_since > IDLE_FOR or connection.transport.is_closing():
                connection.drop()
                continue
            return connection
        return None

    async def _connect(self, connect_timeout: float, read_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, read_timeout), self.host, self.port
                ),
                connect_timeout,
            )
        except (asyncio.TimeoutError, TimeoutError):
            raise UpstreamTimeout(f"no connection within {connect_timeout:g}s") from None
        except OSError as exc:
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from None
        if connection.closed:  # reset while connecting (an engine restarting, say)
            raise UpstreamUnreachable("the engine closed the connection at once")
        self._all.add(connection)
        return connection

    def release(self, connection: _Connection) -> None:
        now = asyncio.get_running_loop().time()
        connection.idle_since = now
        idle = self._idle
        # The oldest idle connections go first once past their time.
        while idle and now - idle[0].idle_since > IDLE_FOR:
            idle.popleft().drop()
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection.idle_since and connection in self._idle:
            self._idle.remove(connection)

    def close(self) -> None:
        """Close every connection, idle or busy."""
        for connection in list(self._all):
            connection.drop()
        self._idle.clear()
        self._all.clear()

    def __len__(self) -> int:
        return len(self._all)
