"""Passthrough in process: headers resolved at mount time, one forwarding path, one error shape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator

import pytest

from chutes.chute import Chute
from chutes_core import hookimpl
from chutes_core.plugins import PluginManager
from chutes_runtime import passthrough
from chutes_testing import ChuteClient


def forwarding_chute(*, middleware: bool) -> Chute:
    chute = Chute(username="test", name="forwarding")

    # Port 1: nothing listens there, so every forwarded request fails to connect.
    @chute.cord(passthrough=True, passthrough_port=1, public_api_path="/v1/chat")
    async def chat(self):
        """Forwarded."""

    @chute.cord(passthrough=True, passthrough_port=1, public_api_path="/v1/models", method="GET")
    async def models(self):
        """Forwarded."""

    if middleware:

        class Passing:  # a user middleware: the host must not bypass it
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                await self.app(scope, receive, send)

        chute.add_middleware(Passing)
    return chute


@contextlib.asynccontextmanager
async def engine_on_loopback(handler) -> AsyncIterator[int]:
    """An asyncio server on loopback running ``handler`` per connection; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def manager(**hooks) -> PluginManager:
    module = types.ModuleType("probe")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return PluginManager(entry_points=False, plugins=[("probe", module)], strict=True)


@pytest.mark.parametrize("middleware", [False, True], ids=["direct", "with-middleware"])
async def test_headers_are_resolved_once_per_cord_at_mount_time(middleware, monkeypatch) -> None:
    asked: list[str] = []

    def passthrough_headers(chute, cord):
        asked.append(cord.name)
        return {"x-probe": "1"}

    calls: list[str] = []
    plugins = manager(passthrough_headers=passthrough_headers)
    original = PluginManager.passthrough

    def counting(self, chute, cord, request):
        calls.append(cord.name)
        original(self, chute, cord, request)

    monkeypatch.setattr(PluginManager, "passthrough", counting)
    async with ChuteClient(forwarding_chute(middleware=middleware), plugins=plugins) as client:
        assert sorted(asked) == ["chat", "models"]  # at startup, before any request
        for _ in range(3):
            assert (await client.post("/v1/chat", json={})).status_code == 502
            assert (await client.get("/v1/models")).status_code == 502
    assert sorted(asked) == ["chat", "models"]
    # No installed plugin implements the per-request hook: it is never called.
    assert calls == []


async def test_a_plugins_per_request_hook_runs_for_every_request() -> None:
    seen: list[str] = []

    def passthrough(cord, request):
        seen.append(request.headers.get("x-probe", "-"))

    plugins = manager(passthrough=passthrough, passthrough_headers=lambda: {"x-probe": "set"})
    async with ChuteClient(forwarding_chute(middleware=False), plugins=plugins) as client:
        for _ in range(3):
            await client.post("/v1/chat", json={})
    # Runs after the mount-time headers are in place.
    assert seen == ["set", "set", "set"]


async def test_failures_have_one_body_shape_with_or_without_middleware() -> None:
    def passthrough(request):
        if request.path == "/v1/chat":
            raise RuntimeError("boom")

    bodies = {}
    for middleware in (False, True):
        plugins = manager(passthrough=passthrough)
        async with ChuteClient(forwarding_chute(middleware=middleware), plugins=plugins) as client:
            failed = await client.post("/v1/chat", json={})
            unreachable = await client.get("/v1/models")
        for answer in (failed, unreachable):
            assert answer.json()["request_id"] == answer.headers["x-request-id"]
        bodies[middleware] = (
            failed.status_code,
            failed.json()["detail"],
            unreachable.status_code,
            unreachable.json()["detail"].split(": ")[0],
        )
    assert bodies[False] == bodies[True]
    assert bodies[False][:3] == (500, "cord 'chat' failed: RuntimeError: boom", 502)
    assert bodies[False][3] == "upstream for cord 'models' on port 1 is not reachable"


async def test_forwarding_failures_are_logged_on_the_passthrough_logger(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="chutes.passthrough")
    async with ChuteClient(forwarding_chute(middleware=False), plugins=manager()) as client:
        assert (await client.get("/v1/models")).status_code == 502
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.passthrough"]
    assert any(
        m.startswith("passthrough models -> http://127.0.0.1:1/v1/models failed") for m in logged
    )


def test_a_failed_forward_is_logged_with_the_cords_name(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="chutes.passthrough")

    def passthrough(request):
        raise RuntimeError("boom")

    async def scenario() -> None:
        async with ChuteClient(
            forwarding_chute(middleware=False), plugins=manager(passthrough=passthrough)
        ) as client:
            assert (await client.post("/v1/chat", json={})).status_code == 500

    asyncio.run(scenario())
    failed = [r for r in caplog.records if r.name == "chutes.passthrough"]
    assert [r.getMessage() for r in failed] == ["passthrough cord chat failed"]
    assert failed[0].exc_info is not None


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a further connect is never answered
    (the kernel drops its SYN), so it times out; no packet leaves loopback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    first = socket.create_connection(listener.getsockname())  # fills the queue; never accepted
    try:
        yield listener.getsockname()[1]
    finally:
        first.close()
        listener.close()


def timed_chute(
    port: int, connect_timeout: float | None, read_timeout: float | None = None
) -> Chute:
    chute = Chute(username="test", name="timeouts")

    @chute.cord(
        passthrough=True,
        passthrough_port=port,
        public_api_path="/v1/models",
        method="GET",
        passthrough_connect_timeout=connect_timeout,
        passthrough_read_timeout=read_timeout,
    )
    async def models(self):
        """Forwarded."""

    return chute


async def timed_get(chute: Chute) -> tuple[int, str, float]:
    async with ChuteClient(chute, plugins=manager()) as client:
        began = time.monotonic()
        answer = await client.get("/v1/models")
        return answer.status_code, answer.json()["detail"], time.monotonic() - began


def test_a_connect_that_is_never_answered_times_out_with_504() -> None:
    with unanswered_port() as port:
        # The cord's own connect timeout (the host's is 10 s).
        status, detail, took = asyncio.run(timed_get(timed_chute(port, 0.3)))
        assert (status, detail.split(": ")[0]) == (
            504,
            f"upstream for cord 'models' on port {port} timed out",
        )
        assert took < 5
        # The host's, from CHUTES_PASSTHROUGH_CONNECT_TIMEOUT (read at import: a fresh process).
        code = (
            "import asyncio, sys\n"
            "from tests.runtime.test_passthrough_inprocess import timed_chute, timed_get\n"
            f"status, _, took = asyncio.run(timed_get(timed_chute({port}, None)))\n"
            "print(status, took < 5)\n"
        )
        env = {**os.environ, "CHUTES_PASSTHROUGH_CONNECT_TIMEOUT": "0.3"}
        ran = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.split() == ["504", "True"], ran.stdout  # 0.3 s, not the default 10 s
    assert passthrough.CONNECT_TIMEOUT == 10  # the documented default, unset here


async def test_a_failing_abort_hook_and_abort_work_are_logged(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="chutes.passthrough")
    received = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        with contextlib.suppress(Exception):
            await reader.read()  # until the host drops the connection
        writer.close()

    def passthrough_abort(chute, cord, request, request_id):
        if request_id == "hook-fails":
            raise RuntimeError("no abort endpoint")

        async def tell_the_engine() -> None:
            if request_id == "work-fails":
                raise RuntimeError("abort refused")

        return tell_the_engine()

    async with engine_on_loopback(never_answer) as port:
        logged = lambda: [r.getMessage() for r in caplog.records if r.name == "chutes.passthrough"]  # noqa: E731
        async with ChuteClient(
            timed_chute(port, None), plugins=manager(passthrough_abort=passthrough_abort)
        ) as client:
            left = asyncio.Event()
            for request_id in ("hook-fails", "work-fails", "works"):
                received.clear()
                left.clear()

                async def receive() -> dict:
                    await received.wait()  # the client leaves once the engine has the request
                    left.set()
                    return {"type": "http.disconnect"}

                async def send(message: dict) -> None:
                    raise AssertionError(f"answered a client that left: {message}")

                scope = {
                    "type": "http", "method": "GET", "path": "/v1/models", "raw_path": b"/v1/models",
                    "query_string": b"", "headers": [(b"x-request-id", request_id.encode())],
                    "scheme": "http", "server": ("chute.test", 80), "client": ("127.0.0.1", 1),
                    "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"},
                }  # fmt: skip
                await asyncio.wait_for(client.host(scope, receive, send), 10)
                assert left.is_set()
            deadline = time.monotonic() + 10
            while len(logged()) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # an abort that worked logs nothing
    assert logged() == [
        "the passthrough_abort hook failed",
        "passthrough_abort failed: abort refused",
    ]
    hook_failed = next(r for r in caplog.records if r.getMessage().startswith("the passthrough"))
    assert hook_failed.exc_info is not None


async def test_closing_the_host_closes_its_pooled_engine_connections(caplog) -> None:
    caplog.set_level(logging.ERROR)
    closed = asyncio.Event()

    async def answer_and_keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read()  # the connection stays in the host's pool until it is closed
        closed.set()
        writer.close()

    async with engine_on_loopback(answer_and_keep) as port:
        async with ChuteClient(timed_chute(port, None), plugins=manager()) as client:
            assert (await client.get("/v1/models")).status_code == 200
            await asyncio.sleep(0.1)
            assert not closed.is_set()  # kept alive while the host serves
        await asyncio.wait_for(closed.wait(), 10)
        assert [r.getMessage() for r in caplog.records] == []  # nothing failed on the way


async def test_a_redirect_from_the_engine_is_relayed_not_followed() -> None:
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /v1/models\r\n")
                writer.write(b"content-length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    async with (
        engine_on_loopback(redirect) as port,
        ChuteClient(timed_chute(port, None), plugins=manager()) as client,
    ):
        answer = await client.get("/v1/models")
        assert answer.status_code == 307 and answer.headers["location"] == "/v1/models"


async def test_a_body_sent_with_a_get_is_not_forwarded() -> None:
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append((await reader.readuntil(b"\r\n\r\n")).lower())
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async with (
        engine_on_loopback(record) as port,
        ChuteClient(timed_chute(port, None), plugins=manager()) as client,
    ):
        answer = await client.request("GET", "/v1/models", content=b"abc")
        assert answer.status_code == 200
    (head,) = heads
    assert head.startswith(b"get /v1/models ") and b"content-length" not in head, head


def chat_chute(port: int) -> Chute:
    chute = Chute(username="test", name="chat")

    @chute.cord(passthrough=True, passthrough_port=port, public_api_path="/v1/chat")
    async def chat(self):
        """Forwarded."""

    return chute


@contextlib.asynccontextmanager
async def recording_engine(heads: list[bytes]):
    """An engine that records each request as it came (head and what followed) and answers {}."""

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                heads.append(head + await reader.readexactly(length))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        writer.close()

    async with engine_on_loopback(record) as port:
        yield port


async def test_a_plugins_host_header_replaces_the_engines_address_once() -> None:
    heads: list[bytes] = []
    plugins = manager(passthrough_headers=lambda: {"Host": "engine.local", "x-key": "k"})
    async with (
        recording_engine(heads) as port,
        ChuteClient(chat_chute(port), plugins=plugins) as client,
    ):
        answer = await client.post("/v1/chat", json={}, headers={"host": "client.example"})
        assert answer.status_code == 200
    (head,) = heads
    hosts = [line for line in head.lower().split(b"\r\n") if line.startswith(b"host:")]
    assert hosts == [b"host: engine.local"] and b"x-key: k" in head


@pytest.mark.parametrize("header", ["Transfer-Encoding", "content-length", "Connection"])
async def test_a_plugin_cannot_set_a_header_that_frames_the_request(header: str) -> None:
    from chutes_runtime.lifecycle import StartupError

    plugins = manager(passthrough_headers=lambda: {header: "chunked"})
    with pytest.raises(StartupError, match="cannot be sent"):  # when its routes are mounted
        async with ChuteClient(chat_chute(1), plugins=plugins):
            pass


async def test_a_plugin_changing_the_method_changes_what_body_is_sent() -> None:
    heads: list[bytes] = []

    def to_get(cord, request):
        if request.headers.get("x-as") == "get":
            request.method = "GET"

    async with (
        recording_engine(heads) as port,
        ChuteClient(chat_chute(port), plugins=manager(passthrough=to_get)) as client,
    ):
        body = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n"
        as_get = await client.post("/v1/chat", content=body, headers={"x-as": "get"})
        as_post = await client.post("/v1/chat", content=b'{"a": 1}')
        assert (as_get.status_code, as_post.status_code) == (200, 200)
    # The client's body never goes out behind a GET (where it would read as a request).
    assert len(heads) == 2 and heads[0].startswith(b"GET /v1/chat ")
    assert heads[0].endswith(b"\r\n\r\n") and b"smuggled" not in heads[0]
    assert heads[1].startswith(b"POST /v1/chat ") and heads[1].endswith(b'\r\n\r\n{"a": 1}')


@pytest.mark.parametrize(("then", "status"), [("goes quiet", 504), ("hangs up", 502)])
async def test_a_small_answer_broken_off_is_the_hosts_to_report(then: str, status: int) -> None:
    """A small answer is read whole before anything is relayed: an engine that stops
    halfway leaves the host free to answer 504 or 502 itself, not a bare 500."""

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        if then == "goes quiet":
            await reader.read()
        writer.close()

    async with engine_on_loopback(half) as port:
        async with ChuteClient(timed_chute(port, None, 0.3), plugins=manager()) as client:
            answer = await client.get("/v1/models")
        assert answer.status_code == status
        assert answer.json()["detail"].startswith(f"upstream for cord 'models' on port {port}")
