"""A client that leaves cancels its work: real uvicorn in a thread, on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import types
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from chutes.chute import Chute
from chutes_core import hookimpl
from chutes_core.plugins import PluginManager
from chutes_runtime.hosting import build_app
from chutes_testing.running import free_port


@pytest.fixture
def silent_upstream() -> Iterator[tuple[int, list[str]]]:
    """A server that accepts connections, reads, and never answers; it notes each close."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    closed: list[str] = []  # "received" when a request arrives, "closed" when it is dropped
    stop = threading.Event()

    def serve() -> None:
        conns = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.settimeout(0.05)
                conns.append(conn)
            except TimeoutError:
                pass
            for conn in list(conns):
                try:
                    if conn.recv(65536) == b"":
                        closed.append("closed")
                        conns.remove(conn)
                    elif "received" not in closed:
                        closed.append("received")
                except TimeoutError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], closed
    stop.set()
    thread.join(5)
    listener.close()


def serve_in_thread(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def leave_once(url: str, until, what: str, **kwargs) -> None:
    """POST to ``url`` and leave (close the connection) once ``until()`` holds."""

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            request = asyncio.ensure_future(client.post(url, **kwargs))
            deadline = time.monotonic() + 10
            while not until():
                assert not request.done(), f"answered before {what}: {request.result()}"
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.01)
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)

    asyncio.run(scenario())


def test_leaving_before_the_engine_answers_drops_it_and_calls_the_abort_hook(
    silent_upstream,
) -> None:
    port, closed = silent_upstream
    aborted: list[tuple[str, str | None]] = []

    def passthrough_abort(chute, cord, request, request_id):
        async def tell_the_engine() -> None:
            await asyncio.sleep(0)
            aborted.append((cord.name, request_id))

        return tell_the_engine()

    module = types.ModuleType("aborter")
    module.passthrough_abort = hookimpl(passthrough_abort)
    plugins = PluginManager(entry_points=False, plugins=[("aborter", module)], strict=True)
    chute = Chute(username="test", name="cancel")

    @chute.cord(passthrough=True, passthrough_port=port, public_api_path="/v1/chat")
    async def chat(self):
        """Forwarded to a server that never answers."""

    server, thread, url = serve_in_thread(build_app(chute, plugins=plugins))
    try:
        leave_once(
            f"{url}/v1/chat", lambda: "received" in closed, "the request to reach the engine",
            json={}, headers={"x-request-id": "gone-1"},
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while not ("closed" in closed and aborted) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "closed" in closed, "the upstream connection was not closed"
        assert aborted == [("chat", "gone-1")]
        metrics = httpx.get(f"{url}/_chutes/metrics").text
        assert 'chutes_invocations_total{cord="chat",status="499"} 1.0' in metrics
    finally:
        server.should_exit = True
        thread.join(15)


def test_an_async_cord_is_cancelled_when_its_client_leaves() -> None:
    chute = Chute(username="test", name="cancel")
    events: list[str] = []

    @chute.cord()
    async def slow(self) -> dict:
        events.append("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return {}

    server, thread, url = serve_in_thread(build_app(chute))
    try:
        leave_once(f"{url}/slow", lambda: events == ["started"], "the cord to start")
        deadline = time.monotonic() + 5
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events == ["started", "cancelled"]
        idle = 'chutes_in_flight{cord="slow"} 0.0'
        while idle not in httpx.get(f"{url}/_chutes/metrics").text:
            assert time.monotonic() < deadline + 5, "the cancelled cord kept its slot"
            time.sleep(0.02)
    finally:
        server.should_exit = True
        thread.join(15)
