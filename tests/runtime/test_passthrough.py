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


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait for ``condition`` (polled); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def held_stream(url: str, marks, tag: str) -> tuple[list[str], dict[str, str]]:
    """Stream from an upstream that holds after its first chunk until this client has it.

    The chunks after the first say whether the upstream was released by the
    client (``True``), which it can only be if that chunk was relayed at once.
    """
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"stream": True, "chunks": 5, "delay": 0.01, "hold": tag}
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            lines = []
            async for line in r.aiter_lines():
                if line and not lines:
                    (marks / f"release-{tag}").touch()
                if line:
                    lines.append(line)
    return lines, dict(r.headers)


async def test_streams_are_relayed_chunk_by_chunk(forwarding, upstream) -> None:
    lines, headers = await held_stream(forwarding.url, upstream[1], "direct")
    assert headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert [chunk["i"] for chunk in chunks] == [0, 1, 2, 3, 4]
    # The first chunk reached the client while the upstream was still holding the rest.
    assert [chunk["released"] for chunk in chunks] == [None, True, True, True, True]


async def test_a_client_disconnect_cancels_the_upstream_request(forwarding, upstream) -> None:
    _, marks = upstream
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"stream": True, "chunks": 100, "delay": 0.1, "tag": "disconnect-me"}
        async with client.stream("POST", f"{forwarding.url}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break
    # The upstream would otherwise stream for 10 s more.
    await until(lambda: (marks / "cancelled").exists(), "the upstream to see the disconnect")
    assert (marks / "cancelled").read_text() == "disconnect-me"


async def test_a_client_leaving_before_the_upstream_headers_cancels_it(forwarding, upstream):
    _, marks = upstream
    async with httpx.AsyncClient(timeout=30) as client:
        waiting = asyncio.ensure_future(
            client.post(f"{forwarding.url}/v1/slow", json={"wait": 20, "tag": "early"})
        )
        await until(lambda: (marks / "arrived-early").exists(), "the request to reach upstream")
        waiting.cancel()  # the client leaves before any headers
        with pytest.raises(asyncio.CancelledError):
            await waiting
    # The upstream sees the disconnect well within its 20 s.
    await until(lambda: (marks / "gone-early").exists(), "the upstream to see the client leave")
    counted = 'chutes_invocations_total{cord="slow",status="499"} 1.0'
    await until(
        lambda: counted in httpx.get(f"{forwarding.url}/_chutes/metrics").text,
        "the request to be counted as 499",
    )


def test_an_upstream_idle_past_the_read_timeout_is_a_504(forwarding) -> None:
    began = time.monotonic()
    answer = httpx.post(f"{forwarding.url}/impatient", json={"wait": 10, "tag": "idle"})
    assert answer.status_code == 504
    assert "timed out" in answer.json()["detail"]
    assert time.monotonic() - began < 5


def test_what_is_forwarded_and_what_is_relayed(forwarding, upstream) -> None:
    client = httpx.Client()
    del client.headers["accept-encoding"]  # none asked for: the engine is asked for identity
    answer = client.post(
        f"{forwarding.url}/v1/echo?a=1&b=two",
        content=b"0123456789",
        headers={
            "authorization": "Bearer client-key",
            "x-custom": "kept",
            "te": "trailers",
            "proxy-authorization": "Basic secret",
            "proxy-authenticate": "Basic",
            "keep-alive": "timeout=5",
            "trailer": "x-checksum",
            "upgrade": "h2c",
            "content-type": "application/octet-stream",
        },
    )
    assert answer.status_code == 200
    seen = answer.json()
    headers = dict(seen["headers"])
    assert (seen["method"], seen["query"], seen["body"]) == ("POST", "a=1&b=two", 10)
    assert headers["x-custom"] == "kept" and headers["authorization"] == "Bearer sekret"
    # Hop-by-hop headers stay on the client's connection.
    hop_by_hop = {"te", "proxy-authorization", "proxy-authenticate", "keep-alive", "trailer"}
    assert not hop_by_hop & set(headers) and not {"upgrade", "connection"} & set(headers)
    assert (
        headers["host"] == f"127.0.0.1:{upstream[0]}" and headers["accept-encoding"] == "identity"
    )
    assert headers["content-length"] == "10"
    # The engine's headers come back as sent (both cookies), but not the ones the host sets.
    assert answer.headers["x-engine"] == "upstream"
    assert answer.headers.get_list("set-cookie") == [
        "a=1; Path=/; SameSite=lax",
        "b=2; Path=/; SameSite=lax",
    ]
    assert answer.headers.get_list("server") == ["uvicorn"]
    assert len(answer.headers.get_list("date")) == 1
    # The client's own accept-encoding is kept.
    gzip = httpx.post(f"{forwarding.url}/v1/echo", headers={"accept-encoding": "gzip"})
    assert dict(gzip.json()["headers"])["accept-encoding"] == "gzip"


def test_a_compressed_answer_is_relayed_as_the_engine_sent_it(forwarding) -> None:
    answer = httpx.get(f"{forwarding.url}/v1/gzip")
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.json() == {"compressed": True}  # the client decompresses it


async def test_forwarded_requests_are_not_queued_behind_each_other(forwarding, upstream) -> None:
    _, marks = upstream
    async with httpx.AsyncClient(timeout=30) as client:
        tags = [f"parallel-{i}" for i in range(4)]
        body = {"wait": 20, "hold": True}
        held = [
            asyncio.ensure_future(
                client.post(f"{forwarding.url}/v1/slow", json={**body, "tag": tag})
            )
            for tag in tags
        ]
        # All four reach the engine while all four are held: no pool limit queues any.
        await until(
            lambda: all((marks / f"arrived-{tag}").exists() for tag in tags),
            "every request to reach the engine",
        )
        for tag in tags:
            (marks / f"release-{tag}").touch()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * 4


def test_a_get_route_forwards_no_body(forwarding) -> None:
    seen = httpx.get(f"{forwarding.url}/v1/echo_get?q=1").json()
    assert (seen["method"], seen["query"], seen["body"]) == ("GET", "q=1", 0)
    assert "content-length" not in dict(seen["headers"])


def test_the_hosts_read_timeout_comes_from_the_environment_and_proxies_do_not(
    module_chute, upstream
) -> None:
    proxy = "http://127.0.0.1:1"  # nothing listens there: a request sent through it fails
    impatient = module_chute(
        "forwarding:chute",
        env={
            "UPSTREAM_PORT": str(upstream[0]),
            "CHUTES_PASSTHROUGH_READ_TIMEOUT": "0.5",
            **{name: proxy for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")},
        },
    )
    # The engine is on loopback: the environment's proxies are not for it.
    assert httpx.post(f"{impatient.url}/v1/echo", json={}).status_code == 200
    # /v1/slow has no read timeout of its own: the host's applies.
    answer = httpx.post(f"{impatient.url}/v1/slow", json={"wait": 10, "tag": "host-timeout"})
    assert answer.status_code == 504 and "timed out" in answer.json()["detail"]


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
    forwarding_through_middleware, upstream
) -> None:
    url = forwarding_through_middleware.url
    plain = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": []})
    assert plain.status_code == 200 and plain.headers["x-user-middleware"] == "1"
    assert plain.json()["seen"]["authorization"] == "Bearer sekret"
    lines, headers = await held_stream(url, upstream[1], "through-middleware")
    assert headers["x-user-middleware"] == "1" and lines[-1] == "data: [DONE]"
    # The first chunk reached the client while the upstream was still holding the rest.
    assert [json.loads(line[6:])["released"] for line in lines[:-1]] == [None] + [True] * 4


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
    await until(
        lambda: (
            (marks / "cancelled").exists() and "middleware" in (marks / "cancelled").read_text()
        ),
        "the upstream to see the disconnect",
    )
    assert (marks / "cancelled").read_text() == "disconnect-through-middleware"
