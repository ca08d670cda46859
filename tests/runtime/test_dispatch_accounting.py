"""The host's request path in process, at its edges: what a websocket session, an answer
that never started and a forwarded answer that broke mid-body are counted as; durations;
the signature challenge and the body deadline's refusal. Fast enough to run for every
mutant of dispatch.py (its MUTATION_TARGETS)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import WebSocket
from starlette.responses import Response

from chutes.chute import Chute
from chutes_core.plugins import PluginManager
from chutes_core.signing import RequestSigner, generate_keypair, load_public_key
from chutes_runtime.auth import Signatures
from chutes_runtime.host import Host
from chutes_runtime.limits import Limits

from .test_dispatch_inprocess import call, http_scope, invocations, metrics, rejected


class Silent(Response):
    """An answer that never starts (an app that returns without answering)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


def make_chute(upstream_port: int = 1) -> Chute:
    chute = Chute(username="test", name="accounting", concurrency=2)

    @chute.cord()
    async def echo(self, text: str) -> dict:
        return {"text": text}

    @chute.cord()
    async def silent(self) -> Response:
        return Silent()

    @chute.cord(
        passthrough=True,
        passthrough_port=upstream_port,
        passthrough_path="/broken",
        public_api_path="/broken",
        method="GET",
    )
    async def broken(self):
        """Forwarded."""

    @chute.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        async for text in websocket.iter_text():
            await websocket.send_text(text.upper())

    return chute


@asynccontextmanager
async def hosted(chute: Chute, **options: Any) -> AsyncIterator[tuple[Host, httpx.AsyncClient]]:
    host = Host(chute, dev=True, plugins=PluginManager(entry_points=False), **options)
    await host.startup()
    transport = httpx.ASGITransport(app=host)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://chute.test") as client:
            yield host, client
    finally:
        await host.shutdown()


def sample(text: str, name: str, cord: str) -> float:
    found = re.search(rf'^{name}{{cord="{cord}"}} (\S+)$', text, re.M)
    assert found, f"no {name} for {cord}"
    return float(found.group(1))


async def test_a_websocket_session_is_in_flight_while_open_then_counted_as_101() -> None:
    async with hosted(make_chute()) as (host, client):
        incoming: asyncio.Queue[dict] = asyncio.Queue()
        sent: asyncio.Queue[dict] = asyncio.Queue()
        scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
        await incoming.put({"type": "websocket.connect"})
        session = asyncio.ensure_future(host(scope, incoming.get, sent.put))
        assert (await asyncio.wait_for(sent.get(), 10))["type"] == "websocket.accept"
        assert host.in_flight == 1
        assert sample(await metrics(client), "chutes_in_flight", "ws") == 1
        # A second session at the same time: each is counted.
        other_in: asyncio.Queue[dict] = asyncio.Queue()
        other_out: asyncio.Queue[dict] = asyncio.Queue()
        await other_in.put({"type": "websocket.connect"})
        other = asyncio.ensure_future(host(scope, other_in.get, other_out.put))
        assert (await asyncio.wait_for(other_out.get(), 10))["type"] == "websocket.accept"
        assert host.in_flight == 2
        assert sample(await metrics(client), "chutes_in_flight", "ws") == 2
        await other_in.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(other, 10)
        await incoming.put({"type": "websocket.receive", "text": "hi"})
        assert (await asyncio.wait_for(sent.get(), 10))["text"] == "HI"
        await incoming.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(session, 10)
        assert host.in_flight == 0
        text = await metrics(client)
        assert sample(text, "chutes_in_flight", "ws") == 0
        assert invocations(text, "ws", 101) == 2
        assert 0 <= sample(text, "chutes_invocation_duration_seconds_sum", "ws") < 30
        # A websocket to a path no cord serves: the app refuses it; counted as "websocket".
        elsewhere = {**scope, "path": "/nowhere"}
        await incoming.put({"type": "websocket.connect"})
        await asyncio.wait_for(host(elsewhere, incoming.get, sent.put), 10)
        assert invocations(await metrics(client), "websocket", 101) == 1


async def test_durations_are_the_time_each_request_took() -> None:
    async with hosted(make_chute()) as (_, client):
        for _ in range(3):
            assert (await client.post("/echo", json={"text": "x"})).status_code == 200
        text = await metrics(client)
        assert sample(text, "chutes_invocation_duration_seconds_count", "echo") == 3
        assert 0 <= sample(text, "chutes_invocation_duration_seconds_sum", "echo") < 30


async def test_an_answer_that_never_started_is_counted_as_500() -> None:
    async with hosted(make_chute()) as (host, client):
        assert await call(host, http_scope("POST", "/silent"), [{"type": "http.request"}]) == []
        assert invocations(await metrics(client), "silent", 500) == 1


async def test_a_forwarded_answer_that_breaks_mid_body_is_not_answered_twice(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="chutes.runtime")

    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()  # before the last chunk: the body breaks

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with hosted(make_chute(port)) as (host, client):
            assert ("GET", "/broken") in host.direct  # forwarded without FastAPI
            sent = await call(host, http_scope("GET", "/broken"), [{"type": "http.request"}])
            starts = [m for m in sent if m["type"] == "http.response.start"]
            assert [m["status"] for m in starts] == [200]
            assert b"".join(m.get("body", b"") for m in sent[1:]) == b"hello"
            assert invocations(await metrics(client), "broken", 200) == 1
    finally:
        server.close()
        await server.wait_closed()
    failed = [r for r in caplog.records if r.name == "chutes.runtime"]
    assert [r.getMessage() for r in failed] == ["request to /broken failed"]
    assert failed[0].exc_info is not None


async def test_a_client_gone_mid_stream_is_counted_as_499() -> None:
    dropped = asyncio.Event()

    async def first_chunk_then_wait(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # until the host drops the connection
        dropped.set()
        writer.close()

    server = await asyncio.start_server(first_chunk_then_wait, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with hosted(make_chute(port)) as (host, client):
            first = asyncio.Event()
            messages = [{"type": "http.request"}]
            sent: list[dict] = []

            async def receive() -> dict:
                if messages:
                    return messages.pop(0)
                await first.wait()  # the client leaves after the first part of the answer
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)
                if message["type"] == "http.response.body":
                    first.set()

            scope = http_scope("GET", "/broken")
            await asyncio.wait_for(host(scope, receive, send), 10)
            assert sent[0]["status"] == 200 and sent[1]["body"] == b"hello"
            await asyncio.wait_for(dropped.wait(), 10)  # the engine was told
            text = await metrics(client)
            assert invocations(text, "broken", 499) == 1
            assert invocations(text, "broken", 200) == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_a_signature_host_names_its_scheme_and_checks_a_websocket_with_no_body() -> None:
    private, public = generate_keypair()
    async with hosted(make_chute(), auth=Signatures({"k": load_public_key(public)})) as (
        host,
        client,
    ):
        refused = await client.post("/echo", json={"text": "x"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Signature tag="chutes"'
        # A signed handshake: its signed digest is the empty body's.
        handshake = httpx.Request("GET", "http://chute.test/ws")
        RequestSigner("k", private).sign(handshake, b"")
        headers = [(k.lower().encode(), v.encode()) for k, v in handshake.headers.items()]
        scope = {"type": "websocket", "path": "/ws", "headers": headers, "query_string": b"",
                 "scheme": "ws", "server": ("chute.test", 80)}  # fmt: skip
        incoming: asyncio.Queue[dict] = asyncio.Queue()
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)
            await incoming.put({"type": "websocket.disconnect", "code": 1000})

        await incoming.put({"type": "websocket.connect"})
        await asyncio.wait_for(host(scope, incoming.get, send), 10)
        assert sent[0]["type"] == "websocket.accept", sent


async def test_a_body_that_does_not_arrive_in_time_is_refused_with_408() -> None:
    async with hosted(make_chute(), limits=Limits(body_timeout=0.2)) as (host, client):
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        sent = await call(
            host,
            http_scope("POST", "/echo", headers),
            [{"type": "http.request", "body": b"{", "more_body": True}],
        )
        assert sent[0]["status"] == 408
        assert dict(sent[0]["headers"])[b"connection"] == b"close"
        assert rejected(await metrics(client), "body_timeout") == 1
