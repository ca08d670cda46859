"""Passthrough cords against a real upstream server on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import APPS, free_port


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    marks = tmp_path_factory.mktemp("upstream")
    port = free_port()
    process = subprocess.Popen([sys.executable, str(APPS / "upstream.py"), str(port), str(marks)])
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models")
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the upstream did not start"
            time.sleep(0.05)
    yield port, marks
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def forwarding(module_chute, upstream):
    port, _ = upstream
    return module_chute("forwarding:chute", env={"UPSTREAM_PORT": str(port)})


def test_requests_are_forwarded_with_the_engine_key(forwarding) -> None:
    answer = httpx.post(
        f"{forwarding.url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer client-key"},
    )
    assert answer.status_code == 200
    seen = answer.json()["seen"]
    assert seen["authorization"] == "Bearer sekret"  # the client's key never reaches the engine
    assert seen["body"]["messages"][0]["content"] == "hi"
    assert httpx.get(f"{forwarding.url}/v1/models").json()["data"][0]["id"] == "upstream"


async def test_streams_are_relayed_chunk_by_chunk(forwarding) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"stream": True, "chunks": 5, "delay": 0.3}
        began = time.monotonic()
        async with client.stream("POST", f"{forwarding.url}/v1/chat/completions", json=body) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            arrivals = []
            lines = []
            async for line in r.aiter_lines():
                if line:
                    arrivals.append(time.monotonic() - began)
                    lines.append(line)
    assert lines[-1] == "data: [DONE]"
    assert [json.loads(line[6:])["i"] for line in lines[:-1]] == [0, 1, 2, 3, 4]
    # The first chunk arrived long before the upstream finished (5 x 0.3 s).
    assert arrivals[0] < arrivals[-1] - 0.9


async def test_a_client_disconnect_cancels_the_upstream_request(forwarding, upstream) -> None:
    _, marks = upstream
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"stream": True, "chunks": 100, "delay": 0.1, "tag": "disconnect-me"}
        async with client.stream("POST", f"{forwarding.url}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break
    for _ in range(100):
        if (marks / "cancelled").exists():
            break
        await asyncio.sleep(0.05)
    assert (marks / "cancelled").read_text() == "disconnect-me"


async def test_a_client_leaving_before_the_upstream_headers_cancels_it(forwarding, upstream):
    _, marks = upstream
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{forwarding.url}/v1/slow", json={"wait": 20, "tag": "early"}, timeout=0.5)
    for _ in range(100):  # the upstream sees the disconnect within 5 s, not after 20
        if (marks / "gone-early").exists():
            break
        await asyncio.sleep(0.05)
    assert (marks / "gone-early").exists()
    for _ in range(100):
        if '"499"' in httpx.get(f"{forwarding.url}/_chutes/metrics").text:
            break
        await asyncio.sleep(0.05)
    assert (
        'chutes_invocations_total{cord="slow",status="499"} 1.0'
        in httpx.get(f"{forwarding.url}/_chutes/metrics").text
    )


def test_an_upstream_idle_past_the_read_timeout_is_a_504(forwarding) -> None:
    began = time.monotonic()
    answer = httpx.post(f"{forwarding.url}/impatient", json={"wait": 10, "tag": "idle"})
    assert answer.status_code == 504
    assert "timed out" in answer.json()["detail"]
    assert time.monotonic() - began < 5


def test_upstream_errors_keep_status_and_detail(forwarding) -> None:
    answer = httpx.post(f"{forwarding.url}/oops", json={})
    assert answer.status_code == 418
    assert answer.json() == {"error": {"message": "teapots cannot chat", "type": "invalid_request"}}


def test_an_unreachable_upstream_is_a_502_that_says_so(forwarding) -> None:
    answer = httpx.post(f"{forwarding.url}/nowhere", json={})
    assert answer.status_code == 502
    assert "upstream for cord 'nowhere' on port 1 is not reachable" in answer.json()["detail"]


def test_bodies_stream_both_ways(forwarding) -> None:
    def chunks():
        for _ in range(64):
            yield b"y" * 32768

    sent = httpx.post(f"{forwarding.url}/v1/upload", content=chunks())
    assert sent.json() == {"received": 64 * 32768}
    big = httpx.get(f"{forwarding.url}/v1/big")
    assert big.status_code == 200 and len(big.content) == 32 * 65536


# With a user's middleware the host forwards through FastAPI's routes, not around them.
@pytest.fixture(scope="module")
def forwarding_through_middleware(module_chute, upstream):
    port, _ = upstream
    return module_chute(
        "forwarding:chute", env={"UPSTREAM_PORT": str(port), "WITH_MIDDLEWARE": "1"}
    )


async def test_through_middleware_streams_are_forwarded_and_relayed_chunk_by_chunk(
    forwarding_through_middleware,
) -> None:
    url = forwarding_through_middleware.url
    plain = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": []})
    assert plain.status_code == 200 and plain.headers["x-user-middleware"] == "1"
    assert plain.json()["seen"]["authorization"] == "Bearer sekret"
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"stream": True, "chunks": 5, "delay": 0.3}
        began = time.monotonic()
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            assert r.headers["x-user-middleware"] == "1"
            arrivals = [time.monotonic() - began async for line in r.aiter_lines() if line]
    assert len(arrivals) == 6 and arrivals[0] < arrivals[-1] - 0.9


async def test_through_middleware_a_client_disconnect_cancels_the_upstream_request(
    forwarding_through_middleware, upstream
) -> None:
    _, marks = upstream
    url = forwarding_through_middleware.url
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"stream": True, "chunks": 100, "delay": 0.1, "tag": "disconnect-through-middleware"}
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (marks / "cancelled").exists() and "middleware" in (marks / "cancelled").read_text():
            break
        await asyncio.sleep(0.05)
    assert (marks / "cancelled").read_text() == "disconnect-through-middleware"
