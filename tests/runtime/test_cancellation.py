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
    closed: list[str] = []
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
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat", json={}, headers={"x-request-id": "gone-1"}, timeout=0.5)
        deadline = time.monotonic() + 5
        while not (closed and aborted) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert closed, "the upstream connection was not closed"
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
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return {}

    server, thread, url = serve_in_thread(build_app(chute))
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/slow", timeout=0.5)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events == ["cancelled"]
        assert 'chutes_in_flight{cord="slow"} 0.0' in httpx.get(f"{url}/_chutes/metrics").text
    finally:
        server.should_exit = True
        thread.join(15)
