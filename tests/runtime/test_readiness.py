"""Readiness at its edges: before startup ends, on SIGTERM, and request ids at the door."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
import uvicorn

from chutes.chute import Chute
from chutes_core.plugins import PluginManager
from chutes_runtime.server import _draining_server
from chutes_testing import ChuteClient

from .conftest import metric, wait_for


def test_before_ready_requests_and_websockets_are_refused_and_counted(run_chute, tmp_path) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    served = run_chute("slow_startup:chute", ready=False, env={"CHUTES_TEST_MARKS": str(tmp_path)})

    def live() -> bool:
        try:
            return httpx.get(f"{served.url}/_chutes/live").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(live, "liveness while the startup hook runs")
    before = metric(served.url, "chutes_rejected_total", reason="not_ready")
    for _ in range(3):
        assert httpx.get(f"{served.url}/hello").status_code == 503
    assert metric(served.url, "chutes_rejected_total", reason="not_ready") == before + 3
    # A websocket is closed before it is accepted: the handshake is refused.
    ws = f"ws://{served.url.removeprefix('http://')}/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws, open_timeout=10)
    assert refused.value.response.status_code == 403
    (tmp_path / "go").touch()
    served.wait_ready()
    assert httpx.get(f"{served.url}/hello").text == "hello"
    with connect(ws, open_timeout=10) as websocket:
        assert websocket.recv(timeout=10) == "hello"
    assert metric(served.url, "chutes_rejected_total", reason="not_ready") == before + 3


async def test_sigterm_turns_the_real_host_unready_before_the_drain() -> None:
    chute = Chute(username="test", name="terminated")

    @chute.cord(method="GET")
    async def hello(self) -> str:
        return "hello"

    async with ChuteClient(chute, plugins=PluginManager(entry_points=False)) as client:
        host = client.host
        assert (await client.get("/_chutes/ready")).status_code == 200
        server = _draining_server(uvicorn.Config(app=host), host)
        # The server's own signal handlers, and a real SIGTERM to this process.
        with server.capture_signals():
            os.kill(os.getpid(), signal.SIGTERM)
        assert server.should_exit
        ready = await client.get("/_chutes/ready")
        assert ready.status_code == 503, ready.text
        refused = await client.get("/hello")
        assert refused.status_code == 503
        assert refused.json() == {"detail": "not ready: shutting down"}
        assert host.metrics.rejected["not_ready"] == 1


def test_request_ids_from_the_client_are_kept_only_when_sane(run_chute, tmp_path) -> None:
    served = run_chute("serving:chute", env={"CHUTES_TEST_MARKS": str(tmp_path)})
    url = f"{served.url}/echo"
    body = {"text": "x"}
    kept = httpx.post(url, json=body, headers={"x-request-id": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42"
    made = httpx.post(url, json=body).headers["x-request-id"]
    # Too long, or not ASCII: not echoed into the response or the log; a fresh id instead.
    for unsafe in ("a" * 500, "caf\xe9-\xff"):
        answer = httpx.post(url, json=body, headers={"x-request-id": unsafe.encode("latin-1")})
        assert answer.status_code == 200
        fresh = answer.headers["x-request-id"]
        assert fresh != unsafe and fresh.isascii() and 0 < len(fresh) <= 128
        assert fresh != made
        assert unsafe not in served.log
