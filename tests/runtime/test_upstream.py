"""The engine client of passthrough (``chutes_runtime.upstream``), against real servers.

Each test starts an asyncio server on loopback that plays the engine with raw
HTTP/1.1 bytes, so that what a well-behaved engine does (keep-alive, chunks,
100 Continue) and what a broken one does (closing early, malformed answers,
going quiet) can both be written down exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chutes_runtime import upstream
from chutes_runtime.upstream import (
    Pool,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    check_header,
    request_head,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


class Engine:
    """A loopback server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed = asyncio.Event()  # some connection saw the client close

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(Exception):
            await self.handler(reader, writer)
        if reader.at_eof():  # the handler read to the client's close
            self.closed.set()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Pool]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        pool = Pool("127.0.0.1", server.sockets[0].getsockname()[1])
        try:
            yield pool
        finally:
            pool.close()
            server.close()
            await server.wait_closed()


def request(pool: Pool, path: bytes = b"/v1/models", body: bytes | None = None) -> bytes:
    method = b"GET" if body is None else b"POST"
    parts = request_head(
        method, path, pool.authority, [(b"x-a", b"1")], None if body is None else len(body)
    )
    return b"".join([*parts, body or b""])


async def one_chunk_then_held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Start a chunked answer with one chunk, then hold the connection until the client leaves."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n")
    await writer.drain()
    await reader.read()


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request on the connection with ``OK``."""
    while await reader.readuntil(b"\r\n\r\n"):
        writer.write(OK)
        await writer.drain()


def test_the_request_head_is_what_was_asked() -> None:
    parts = request_head(b"POST", b"/v1/chat?a=1", b"127.0.0.1:9", [(b"x-a", b"1")], 3)
    assert b"".join(parts) == (
        b"POST /v1/chat?a=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n"
    )
    assert b"content-length" not in b"".join(request_head(b"GET", b"/", b"h:1", [], None))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (b"x-a", b"1\r\nx-injected: 1"),
        (b"x-a\r\n", b"1"),
        (b"x a", b"1"),
        (b"", b"1"),
        (b"x", b"\x00"),
        (b"transfer-encoding", b"chunked"),
        (b"host", b"elsewhere"),
    ],
)
def test_a_header_that_would_break_the_framing_is_refused(name: bytes, value: bytes) -> None:
    with pytest.raises(ValueError, match="cannot be sent"):
        check_header(name, value)
    check_header(b"authorization", b"Bearer k\tv \xe9")  # tab, space and obs-text are fine


async def test_a_connection_is_kept_alive_and_reused() -> None:
    engine = Engine(answer_each)
    async with engine.running() as pool:
        for _ in range(3):
            response = await pool.request(request(pool), 1, 1)
            assert (response.status, await response.read()) == (200, b"{}")
        assert engine.connections == 1 and len(pool) == 1


async def test_a_connection_idle_too_long_is_not_reused(monkeypatch) -> None:
    monkeypatch.setattr(upstream, "IDLE_FOR", 0.05)
    engine = Engine(answer_each)
    async with engine.running() as pool:
        assert (await (await pool.request(request(pool), 1, 1)).read()) == b"{}"
        await asyncio.sleep(0.1)  # past IDLE_FOR: the engine may be closing it
        assert (await (await pool.request(request(pool), 1, 1)).read()) == b"{}"
        assert engine.connections == 2 and len(pool) == 1  # the old one was closed


async def test_a_reused_connection_the_engine_closed_is_retried_once_on_a_fresh_one() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the second request: closed unanswered

    engine = Engine(answer_once)
    async with engine.running() as pool:
        for _ in range(2):
            assert (await (await pool.request(request(pool), 1, 1)).read()) == b"{}"
        assert engine.connections == 2


async def test_a_fresh_connection_closed_without_an_answer_is_unreachable() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    engine = Engine(hang_up)
    async with engine.running() as pool:
        with pytest.raises(UpstreamUnreachable, match="without an answer"):
            await pool.request(request(pool), 1, 1)
        assert engine.connections == 1  # not retried: the connection was new


async def test_nothing_listening_is_unreachable() -> None:
    server = await asyncio.start_server(answer_each, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = Pool("127.0.0.1", port)
    with pytest.raises(UpstreamUnreachable):
        await pool.request(request(pool), 1, 1)


async def test_chunks_are_decoded_and_relayed_as_they_come() -> None:
    go_on = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nX-Engine: e\r\n\r\n")
        writer.write(b"5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    engine = Engine(stream)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 5)
        assert response.status == 200 and response.length is None and response.chunked
        assert response.headers == [(b"transfer-encoding", b"chunked"), (b"X-Engine", b"e")]
        chunks = response.chunks()
        assert await anext(chunks) == b"first"  # before the rest was sent
        go_on.set()
        assert [chunk async for chunk in chunks] == [b"second"]
        assert response.done and len(pool._idle) == 1  # back in the pool


async def test_an_answer_without_a_length_ends_with_the_connection() -> None:
    async def old_style(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")

    engine = Engine(old_style)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 1)
        assert await response.read() == b"all of it"
        assert len(pool) == 0


async def test_an_interim_100_continue_is_skipped() -> None:
    async def continue_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 201 Created\r\nx-b: 2\r\n")
        writer.write(b"content-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()

    engine = Engine(continue_first)
    async with engine.running() as pool:
        response = await pool.request(request(pool, body=b"{}"), 1, 1)
        assert (response.status, response.headers) == (
            201,
            [(b"x-b", b"2"), (b"content-length", b"2")],
        )
        assert await response.read() == b"{}"


async def test_an_engine_silent_past_the_read_timeout_times_out_and_is_dropped() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # until the client gives up

    engine = Engine(silent)
    async with engine.running() as pool:
        began = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout, match=r"no answer within 0\.2s"):
            await pool.request(request(pool), 1, 0.2)
        assert 0.15 < asyncio.get_running_loop().time() - began < 3
        await asyncio.wait_for(engine.closed.wait(), 5)  # the engine sees the client leave


async def test_the_read_timeout_bounds_each_wait_not_the_whole_answer() -> None:
    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(8):  # 0.8 s in all, never 0.3 s apart
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        await asyncio.sleep(1)  # then quiet
        writer.write(b"0\r\n\r\n")
        await reader.read()

    engine = Engine(steady)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 0.3)
        got = b""
        with pytest.raises(UpstreamTimeout):
            async for chunk in response.chunks():
                got += chunk
        assert got == b"x" * 8


async def test_a_shorter_read_timeout_applies_on_a_connection_armed_for_a_longer_one() -> None:
    async def then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        await reader.read()

    engine = Engine(then_silent)
    async with engine.running() as pool:
        assert await (await pool.request(request(pool), 1, 300)).read() == b"{}"
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(pool.request(request(pool), 1, 0.2), 5)
        assert engine.connections == 1


async def test_closing_an_answer_mid_body_drops_the_connection() -> None:
    engine = Engine(one_chunk_then_held)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 5)
        assert await anext(response.chunks()) == b"x"
        response.close()
        await asyncio.wait_for(engine.closed.wait(), 5)
        assert len(pool) == 0


async def test_cancelling_while_waiting_for_the_head_drops_the_connection() -> None:
    arrived = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()
        await reader.read()

    engine = Engine(slow)
    async with engine.running() as pool:
        asking = asyncio.ensure_future(pool.request(request(pool), 1, 30))
        await asyncio.wait_for(arrived.wait(), 5)
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        await asyncio.wait_for(engine.closed.wait(), 5)


async def test_an_engine_breaking_off_mid_answer_is_an_error_not_an_end() -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")

    engine = Engine(breaks)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 5)
        with pytest.raises(UpstreamError, match="mid-answer"):
            await response.read()


@pytest.mark.parametrize(
    "answer",
    [b"SMTP ready\r\n\r\n", OK + b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"],
    ids=["not-http", "answers-twice"],
)
async def test_a_malformed_or_unasked_answer_drops_the_connection(answer: bytes) -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await reader.read()

    engine = Engine(wrong)
    async with engine.running() as pool:
        if answer.startswith(b"SMTP"):
            with pytest.raises(UpstreamUnreachable, match="malformed"):
                await pool.request(request(pool), 1, 1)
        else:
            # The first answer is whole and good; the connection is not trusted again.
            assert await (await pool.request(request(pool), 1, 1)).read() == b"{}"
            assert await (await pool.request(request(pool), 1, 1)).read() == b"{}"
            assert engine.connections == 2


async def test_reading_pauses_for_a_slow_reader_and_nothing_is_lost(monkeypatch) -> None:
    size = 4 * upstream.BUFFER_AT_MOST
    paused: list[int] = []  # bytes held each time reading resumed after a pause
    resume = upstream._Connection.resume

    def recording_resume(self: upstream._Connection) -> None:
        if self.paused and self.response is not None:
            paused.append(self.response._buffered)
        resume(self)

    monkeypatch.setattr(upstream._Connection, "resume", recording_resume)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        writer.write(bytes(range(256)) * (size // 256))
        await writer.drain()
        await reader.read()

    engine = Engine(big)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 5)
        got = bytearray()
        async for chunk in response.chunks():
            got += chunk
            await asyncio.sleep(0.02)  # a slow client
        # Paused with little more than the cap held (one read's worth over at most).
        assert paused and max(paused) < 2 * upstream.BUFFER_AT_MOST
        assert bytes(got) == bytes(range(256)) * (size // 256)


async def test_an_answer_that_says_close_is_not_followed_by_another_request() -> None:
    async def says_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()  # the engine leaves closing to the client

    engine = Engine(says_close)
    async with engine.running() as pool:
        assert await (await pool.request(request(pool), 1, 1)).read() == b"{}"
        await asyncio.wait_for(engine.closed.wait(), 5)
        assert await (await pool.request(request(pool), 1, 1)).read() == b"{}"
        assert engine.connections == 2


async def test_an_answer_that_filled_the_buffer_leaves_its_connection_reading() -> None:
    size = upstream.BUFFER_AT_MOST + 100  # crosses the cap with the answer's last bytes

    async def big_then_small(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        await reader.read()

    engine = Engine(big_then_small)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 2)
        while not response.done:  # let it all arrive before anyone reads
            await asyncio.sleep(0.01)
        assert len(await response.read()) == size
        # The same connection serves the next request within its read timeout.
        again = await asyncio.wait_for(pool.request(request(pool), 1, 2), 5)
        assert await again.read() == b"{}" and engine.connections == 1


async def test_an_engine_that_resets_every_connection_is_unreachable() -> None:
    import socket
    import struct
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def reset_each() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted, _ = listener.accept()
            except OSError:
                continue
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            accepted.close()  # a reset, at once

    thread = threading.Thread(target=reset_each, daemon=True)
    thread.start()
    pool = Pool("127.0.0.1", listener.getsockname()[1])
    try:
        for _ in range(5):
            with pytest.raises(UpstreamUnreachable):
                await asyncio.wait_for(pool.request(request(pool), 1, 5), 10)
        assert len(pool) == 0
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        pool.close()


async def test_a_relayed_answer_whose_start_cannot_be_sent_drops_the_engine_connection() -> None:
    from chutes_runtime.passthrough import Relayed

    async def send(message: dict) -> None:
        raise ConnectionResetError("the client left")

    engine = Engine(one_chunk_then_held)
    async with engine.running() as pool:
        response = await pool.request(request(pool), 1, 5)
        with pytest.raises(ConnectionResetError):
            await Relayed(200, [], upstream=response)({}, None, send)
        await asyncio.wait_for(engine.closed.wait(), 5)


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_request_on_a_connection_already_closing_fails_cleanly(loop_name: str) -> None:
    """Between connecting and sending, the connection may already be closing or closed
    (the engine reset it): the request fails as unreachable at once, on either loop."""
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        runner = uvloop.run
    else:
        runner = asyncio.run

    async def scenario() -> None:
        engine = Engine(answer_each)
        async with engine.running() as pool:
            connection = await pool._connect(1, 1)
            assert connection.transport is not None
            connection.transport.close()
            with pytest.raises(UpstreamUnreachable, match="without an answer"):
                await asyncio.wait_for(pool._ask(connection, request(pool), 1), 5)  # closing
            while not connection.closed:  # until its loss is delivered
                await asyncio.sleep(0.01)
            with pytest.raises(UpstreamUnreachable, match="without an answer"):
                await asyncio.wait_for(pool._ask(connection, request(pool), 1), 5)  # closed

    runner(scenario())
