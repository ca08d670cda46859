"""Write coalescing (``chutes_runtime.coalesce``): held under load, straight out otherwise.

First the transport wrapper alone, on a running loop, over a recording
stand-in for the kernel's transport. Then real uvicorn on loopback with each of
its HTTP protocols (composed with the header deadline, as the host serves),
where a spy *below* the wrapper records the writes that reach the socket. Last
a websocket, upgraded through the wrapper. Every wait is on an event or a
socket read with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from chutes_runtime.coalesce import HOLD_AT_MOST, CoalescingTransport, coalescing
from chutes_runtime.limits import header_deadline

from .conftest import uvicorn_protocols

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
BODY = b"body"


class KernelTransport:
    """Stand-in for the kernel's transport: sends each write as it comes, and records it."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.closing = False
        self.buffered = 0
        self.protocol: object = None

    @property
    def writes(self) -> list[Any]:
        return [event[1] for event in self.events if event[0] == "write"]

    def write(self, data: Any) -> None:
        self.events.append(("write", data))

    def close(self) -> None:
        self.events.append(("close",))
        self.closing = True

    def write_eof(self) -> None:
        self.events.append(("write_eof",))

    def abort(self) -> None:
        self.events.append(("abort",))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)

    def pause_reading(self) -> None:
        self.events.append(("pause_reading",))

    def resume_reading(self) -> None:
        self.events.append(("resume_reading",))

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def get_protocol(self) -> object:
        return self.protocol


def wrapped(in_flight: int) -> tuple[CoalescingTransport, KernelTransport, set[object]]:
    kernel = KernelTransport()
    tasks: set[object] = {object() for _ in range(in_flight)}
    return CoalescingTransport(kernel, tasks, asyncio.get_running_loop()), kernel, tasks  # type: ignore[arg-type]


async def test_with_one_request_in_flight_each_write_goes_straight_out() -> None:
    for in_flight in (0, 1):  # 0: the header deadline's 408 between requests
        transport, kernel, _ = wrapped(in_flight)
        transport.write(HEAD)
        assert kernel.writes == [HEAD]
        transport.write(BODY)
        assert kernel.writes == [HEAD, BODY]
        assert transport.get_write_buffer_size() == 0
        await asyncio.sleep(0)
        assert kernel.writes == [HEAD, BODY]


async def test_with_two_in_flight_a_turns_writes_leave_as_one_at_its_end() -> None:
    transport, kernel, _ = wrapped(2)
    body = bytearray(BODY)
    transport.write(HEAD)
    transport.write(body)
    transport.writelines([b"-a", memoryview(b"-b")])
    body[:] = b"XXXX"  # the caller may reuse its buffer once write returns
    assert kernel.events == []
    assert transport.get_write_buffer_size() == len(HEAD + BODY) + 4
    await asyncio.sleep(0)  # the end of the turn
    assert kernel.writes == [HEAD + BODY + b"-a-b"]
    assert transport.get_write_buffer_size() == 0
    # Nothing is held across turns: the next turn's writes are the next write.
    transport.write(b"next")
    assert len(kernel.writes) == 1
    await asyncio.sleep(0)
    assert kernel.writes == [HEAD + BODY + b"-a-b", b"next"]


async def test_order_is_kept_across_held_and_direct_writes() -> None:
    transport, kernel, tasks = wrapped(2)
    transport.write(b"1")
    tasks.pop()  # the other request ended mid-turn: "2" must still not overtake "1"
    transport.write(b"2")
    assert kernel.writes == []
    await asyncio.sleep(0)
    assert kernel.writes == [b"12"]
    transport.write(b"3")  # one in flight, nothing held: straight out
    assert kernel.writes == [b"12", b"3"]
    tasks.add(object())
    transport.write(b"4")
    large = b"L" * HOLD_AT_MOST
    transport.write(large)  # large, but "4" is held: it goes out behind "4", at once
    assert kernel.writes == [b"12", b"3", b"4" + large]
    await asyncio.sleep(0)
    assert kernel.writes == [b"12", b"3", b"4" + large]


async def test_a_large_write_goes_straight_out_and_a_full_hold_at_once() -> None:
    transport, kernel, _ = wrapped(2)
    large = bytearray(HOLD_AT_MOST)
    transport.write(large)
    assert len(kernel.writes) == 1
    assert kernel.writes[0] is large  # not held, not even copied
    piece = b"p" * (HOLD_AT_MOST // 4)
    for held in range(1, 4):
        transport.write(piece)
        assert len(kernel.writes) == 1
        assert transport.get_write_buffer_size() == held * len(piece)
    transport.write(piece)  # the hold reaches HOLD_AT_MOST: out now, not at the turn's end
    assert kernel.writes[1:] == [piece * 4]
    assert transport.get_write_buffer_size() == 0
    transport.write(b"tail")  # a new hold, out at the end of the turn
    assert len(kernel.writes) == 2
    await asyncio.sleep(0)
    assert kernel.writes[2:] == [b"tail"]
    transport.write(b"j" * (HOLD_AT_MOST - 1))  # just under the limit: held
    assert len(kernel.writes) == 3
    await asyncio.sleep(0)
    assert len(kernel.writes) == 4


async def test_close_and_write_eof_send_the_hold_first_and_abort_drops_it() -> None:
    transport, kernel, _ = wrapped(2)
    transport.write(HEAD)
    transport.write(BODY)
    transport.close()
    assert kernel.events == [("write", HEAD + BODY), ("close",)]
    await asyncio.sleep(0)  # the turn's flush finds nothing more
    assert kernel.events == [("write", HEAD + BODY), ("close",)]

    transport, kernel, _ = wrapped(2)
    transport.write(BODY)
    transport.write_eof()
    assert kernel.events == [("write", BODY), ("write_eof",)]

    transport, kernel, _ = wrapped(2)
    transport.write(BODY)
    transport.abort()
    assert kernel.events == [("abort",)]
    assert transport.get_write_buffer_size() == 0
    await asyncio.sleep(0)
    assert kernel.events == [("abort",)]


async def test_a_hold_is_dropped_once_the_real_transport_is_closing() -> None:
    transport, kernel, _ = wrapped(2)
    transport.write(BODY)
    kernel.closing = True  # the peer went away (the kernel's transport closed itself)
    await asyncio.sleep(0)
    assert kernel.events == []
    assert transport.get_write_buffer_size() == 0
    transport.write(BODY)
    transport.close()
    assert kernel.events == [("close",)]


async def test_buffer_size_counts_the_hold_and_the_rest_is_the_real_transports() -> None:
    transport, kernel, _ = wrapped(2)
    kernel.buffered = 10
    assert transport.get_write_buffer_size() == 10
    transport.write(b"12345")
    assert transport.get_write_buffer_size() == 15
    protocol = object()
    transport.set_protocol(protocol)  # through __getattr__ (as uvicorn's websocket upgrade)
    assert kernel.protocol is protocol
    assert transport.get_protocol() is protocol
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5)
    assert transport.get_extra_info("sockname", "none") == "none"
    transport.pause_reading()
    transport.resume_reading()
    assert transport.is_closing() is False
    kernel.closing = True
    assert transport.is_closing() is True
    assert kernel.events == [("pause_reading",), ("resume_reading",)]
    with pytest.raises(AttributeError):
        transport.no_such_method  # noqa: B018


async def test_the_protocol_wraps_its_transport_over_the_servers_live_tasks() -> None:
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert issubclass(coalescing(), AutoHTTPProtocol)

    class Base:
        def __init__(self, server_state: Any) -> None:
            self.server_state = server_state

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

    state = SimpleNamespace(tasks=set())
    protocol = coalescing(Base)(state)
    kernel = KernelTransport()
    protocol.connection_made(kernel)
    assert isinstance(protocol.transport, CoalescingTransport)
    assert protocol.transport.transport is kernel
    protocol.transport.write(b"a")
    assert kernel.writes == [b"a"]
    state.tasks.update({1, 2})  # the set itself is watched, not a copy taken at connect
    protocol.transport.write(b"b")
    assert kernel.writes == [b"a"]
    await asyncio.sleep(0)
    assert kernel.writes == [b"a", b"b"]


# --- real uvicorn on loopback -------------------------------------------------------------


class Wire:
    """The server's real transport, recording the (non-empty) writes that reach it."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        if data:
            self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def spied(http: type, wires: list[Wire]) -> type:
    """``http`` with a :class:`Wire` under whatever it wraps the transport in."""

    class Spied(http):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            wire = Wire(transport)
            wires.append(wire)
            super().connection_made(wire)

    return Spied


@dataclass
class App:
    """The ASGI app: answers at once, after a gathering, or when released; echoes websockets.

    ``/gather?g=G&n=N`` waits (after reading its body) until N requests of group G
    have arrived, so all N answer while the others are still in flight.
    ``/park`` waits for ``/release``; ``parked`` is set once ``park_target`` requests wait there.
    """

    park_target: int = 2
    parked: threading.Event = field(default_factory=threading.Event)
    _groups: dict[str, list[Any]] = field(default_factory=dict)
    _parked = 0
    _release: asyncio.Event | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._echo(receive, send)
            return
        if scope["type"] != "http":
            return
        query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/solo":
            await answer(send, b"solo-body")
        elif path == "/park":
            if self._release is None:
                self._release = asyncio.Event()
            self._parked += 1
            if self._parked >= self.park_target:
                self.parked.set()
            await asyncio.wait_for(self._release.wait(), 10)
            await answer(send, b"parked")
        elif path == "/release":
            if self._release is None:
                self._release = asyncio.Event()
            self._release.set()
            await answer(send, b"released")
        elif path == "/gather":
            group = self._groups.setdefault(query["g"], [0, asyncio.Event()])
            group[0] += 1
            if group[0] >= int(query["n"]):
                group[1].set()
            await asyncio.wait_for(group[1].wait(), 10)
            if query["kind"] == "echo":
                await answer(send, body)
            elif query["kind"] == "stream":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                for part in stream_parts(query["id"]):
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                    await asyncio.sleep(0)  # each part in its own turn
                await send({"type": "http.response.body", "body": b""})
            else:
                await answer(send, f"reply-{query['id']};".encode())
        else:
            await answer(send, b"not found", status=404)

    async def _echo(self, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


async def answer(send: Any, body: bytes, status: int = 200) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def stream_parts(request_id: str) -> list[bytes]:
    return [f"part-{index}-of-{request_id};".encode() for index in range(5)]


@dataclass
class Served:
    url: str
    app: App
    wires: list[Wire]

    def wire_with(self, data: bytes) -> Wire:
        (wire,) = [wire for wire in self.wires if any(data in write for write in wire.writes)]
        return wire


@contextlib.contextmanager
def serving(http: type, *, loop: str = "asyncio", ws: str = "none") -> Iterator[Served]:
    """uvicorn with ``http`` (spied) in a thread, on a socket already listening."""
    import uvicorn

    app, wires = App(), []
    config = uvicorn.Config(
        app,
        loop=loop,
        ws=ws,
        lifespan="off",
        log_level="warning",
        http=spied(http, wires),
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts: no start-up poll
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", app, wires)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=10, trust_env=False)


CONCURRENT = 32
LARGE_BODY = b"large-echo;" * 10_000  # over HOLD_AT_MOST: its write leaves at once


async def one(http: httpx.AsyncClient, group: str, index: int) -> tuple[str, str]:
    """Request ``index`` of a gathering; returns its kind and id once checked whole."""
    request_id = f"{group}-{index}"
    params = {"g": group, "n": str(CONCURRENT), "id": request_id}
    if index % 4 == 0:
        sent = LARGE_BODY if index == 0 else f"echo-{request_id};".encode() * 50
        answered = await http.post("/gather", params={**params, "kind": "echo"}, content=sent)
        assert answered.status_code == 200
        assert answered.content == sent
        return "echo", request_id
    if index % 4 == 1:
        async with http.stream("GET", "/gather", params={**params, "kind": "stream"}) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["transfer-encoding"] == "chunked"
            received = b"".join([chunk async for chunk in streamed.aiter_bytes()])
        assert received == b"".join(stream_parts(request_id))  # every part, in order
        return "stream", request_id
    answered = await http.get("/gather", params={**params, "kind": "plain"})
    assert answered.status_code == 200
    assert answered.content == f"reply-{request_id};".encode()
    return "plain", request_id


def _served_as() -> list[Any]:
    """Each HTTP protocol as the host composes it, and the bare ``coalescing()``, on
    each event loop (one protocol per loop, to keep the run short)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        no_uvloop: list[Any] = [pytest.mark.skip("no uvloop")]
    else:
        no_uvloop = []
    params: list[Any] = [pytest.param(None, "asyncio", id="auto-bare-asyncio")]
    params.append(pytest.param(None, "uvloop", id="auto-bare-uvloop", marks=no_uvloop))
    h11, httptools = uvicorn_protocols()
    params.append(pytest.param(h11.values[0], "asyncio", id="h11-deadline-asyncio"))
    params.append(
        pytest.param(
            httptools.values[0],
            "uvloop",
            id="httptools-deadline-uvloop",
            marks=[*httptools.marks, *no_uvloop],
        )
    )
    return params


@pytest.mark.parametrize(("base", "loop"), _served_as())
async def test_concurrent_responses_arrive_whole_and_coalesced(base: Any, loop: str) -> None:
    http = coalescing() if base is None else header_deadline(10, base=coalescing(base))
    with serving(http, loop=loop) as served:
        async with client(served.url) as http_client:
            # One at a time, on one keep-alive connection: head and body leave as two writes.
            for _ in range(3):
                answered = await http_client.get("/solo")
                assert answered.status_code == 200
                assert answered.content == b"solo-body"
            writes = served.wire_with(b"solo-body").writes
            assert len(writes) == 6, writes
            for head, body in zip(writes[::2], writes[1::2], strict=True):
                assert head.startswith(b"HTTP/1.1 200 "), head
                assert body == b"solo-body"

            # 32 at once (two rounds, the second on the kept-alive connections).
            for group in ("first", "second"):
                results = await asyncio.gather(
                    *(one(http_client, group, index) for index in range(CONCURRENT))
                )
                for kind, request_id in results:
                    if kind == "plain":  # answered while 31 others were in flight
                        reply = f"reply-{request_id};".encode()
                        (write,) = [w for w in served.wire_with(reply).writes if reply in w]
                        assert write.startswith(b"HTTP/1.1 200 "), write
                        assert write.endswith(b"\r\n\r\n" + reply), write
            large = [w for wire in served.wires for w in wire.writes if LARGE_BODY in w]
            assert len(large) == 2  # one a round
            for write in large:  # the held head, then the large body behind it, at once
                assert write.startswith(b"HTTP/1.1 200 "), write[:100]
                assert write.endswith(LARGE_BODY)
            # Connections kept alive from the first round served the second.
            assert any(
                any(b"-first-" in w for w in wire.writes)
                and any(b"-second-" in w for w in wire.writes)
                for wire in served.wires
            )


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, int]]:
    """(the transport under the wrapper, bytes held) for each flush that sent something."""
    seen: list[tuple[Any, int]] = []
    original = CoalescingTransport.flush

    def flush(self: CoalescingTransport) -> None:
        held = self.get_write_buffer_size() - self.transport.get_write_buffer_size()
        if held:
            seen.append((self.transport, held))
        original(self)

    monkeypatch.setattr(CoalescingTransport, "flush", flush)
    return seen


DEADLINE = 0.5


@pytest.mark.parametrize("base", uvicorn_protocols())
async def test_a_held_408_leaves_before_its_connection_closes(
    base: Any, flushes: list[tuple[Any, int]]
) -> None:
    """The header deadline writes its 408 and closes in one go; under load the 408 is held,
    and only close() flushing it first gets it to the client."""
    with serving(header_deadline(DEADLINE, base=coalescing(base))) as served:
        async with client(served.url) as http_client:
            parked = [asyncio.create_task(http_client.get("/park")) for _ in range(2)]
            assert await asyncio.to_thread(served.app.parked.wait, 10)  # 2 in flight
            host, port = served.url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: te")
                data = await asyncio.wait_for(reader.read(), DEADLINE + 5)  # until closed
            finally:
                writer.close()
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert b"did not arrive within 0.5s" in data
            assert (await http_client.get("/release")).content == b"released"
            for answered in await asyncio.gather(*parked):
                assert answered.status_code == 200
                assert answered.content == b"parked"
    late = served.wire_with(b"408 Request Timeout")
    assert [held for wire, held in flushes if wire is late] == [len(data)]  # it was held


def _websockets() -> list[Any]:
    try:
        import websockets  # noqa: F401
    except ImportError:
        return [pytest.param("none", marks=pytest.mark.skip("no websockets"))]
    return [
        pytest.param("websockets-sansio", id="sansio"),
        pytest.param(
            "websockets",
            id="legacy",
            marks=pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*deprecated"),
        ),
    ]


@pytest.mark.parametrize("ws", _websockets())
async def test_a_websocket_upgraded_through_it_echoes_while_a_request_is_in_flight(
    ws: str, flushes: list[tuple[Any, int]]
) -> None:
    from websockets.asyncio.client import connect

    messages: list[str | bytes] = ["one", b"two", "three" * 1000, b"\x00four" * 20_000]
    with serving(coalescing(), ws=ws) as served:
        served.app.park_target = 1
        async with client(served.url) as http_client:
            parked = asyncio.create_task(http_client.get("/park"))
            assert await asyncio.to_thread(served.app.parked.wait, 10)
            # The session and the parked request: two in flight, so the frames are held.
            url = served.url.replace("http://", "ws://") + "/echo"
            async with connect(url, proxy=None, open_timeout=10) as session:
                for message in messages:
                    await session.send(message)
                    assert await asyncio.wait_for(session.recv(), 10) == message
            assert (await http_client.get("/release")).content == b"released"
            answered = await parked
            assert answered.content == b"parked"
    (session_wire,) = [
        wire for wire in served.wires if wire.writes and wire.writes[0].startswith(b"HTTP/1.1 101")
    ]
    assert len(session_wire.writes) > len(messages)  # the upgrade, the echoes, the close
    held = [size for wire, size in flushes if wire is session_wire]
    assert held, "nothing on the websocket was held"


@pytest.mark.parametrize(("base", "loop"), _served_as())
async def test_a_client_that_half_closes_still_gets_its_answer_under_load(
    base: Any, loop: str
) -> None:
    """A client may shut down its sending side once its request is out (``SHUT_WR``).
    The loop then closes the transport itself, before the turn's end: the held answer
    must leave first, as plain uvicorn's unheld one does."""
    http = coalescing() if base is None else header_deadline(10, base=coalescing(base))
    with serving(http, loop=loop) as served:
        async with client(served.url) as http_client:
            parked = [asyncio.create_task(http_client.get("/park")) for _ in range(2)]
            assert await asyncio.to_thread(served.app.parked.wait, 10)  # 2 in flight
            host, port = served.url.removeprefix("http://").split(":")

            def half_closed() -> bytes:
                with socket.create_connection((host, int(port)), timeout=10) as sock:
                    sock.sendall(b"GET /solo HTTP/1.1\r\nHost: test\r\n\r\n")
                    sock.shutdown(socket.SHUT_WR)
                    data = b""
                    while chunk := sock.recv(4096):
                        data += chunk
                    return data

            for _ in range(10):
                data = await asyncio.to_thread(half_closed)
                assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"solo-body"), data
            assert (await http_client.get("/release")).content == b"released"
            await asyncio.gather(*parked)
