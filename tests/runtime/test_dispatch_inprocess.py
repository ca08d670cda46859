"""The host's request path in process, over ASGI: every refusal, its status, headers and
metric, request ids, and the order the checks run in. (The same paths over real HTTP are
in test_limits, test_auth, test_readiness and test_serving; these are fast enough to run
for every mutant of dispatch.py.)"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from chutes.chute import Chute
from chutes_core.plugins import PluginManager
from chutes_runtime.auth import BearerKeys
from chutes_runtime.host import Host
from chutes_runtime.limits import Limits

GATE: dict[str, asyncio.Event] = {}


def make_chute() -> Chute:
    chute = Chute(username="test", name="dispatch", concurrency=2)

    @chute.cord()
    async def echo(self, text: str) -> dict:
        return {"text": text}

    @chute.cord(max_body_bytes=64)
    async def small(self, text: str) -> dict:
        return {"text": text}

    @chute.cord()
    async def hold(self, key: str) -> dict:
        await GATE.setdefault(key, asyncio.Event()).wait()
        return {"held": key}

    @chute.cord()
    def nap(self, seconds: float) -> dict:  # a sync cord: it runs in a thread
        time.sleep(seconds)
        return {"slept": seconds}

    @chute.cord()
    async def boom(self) -> dict:
        raise RuntimeError("boom")

    @chute.cord(method="GET")
    async def raw(self, request: Request) -> dict:
        return {"length": len(await request.body())}

    return chute


@asynccontextmanager
async def hosted(
    root_path: str = "", **options: Any
) -> AsyncIterator[tuple[Host, httpx.AsyncClient]]:
    GATE.clear()
    host = Host(make_chute(), dev=True, plugins=PluginManager(entry_points=False), **options)
    await host.startup()
    transport = httpx.ASGITransport(app=host, root_path=root_path)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://chute.test") as client:
            yield host, client
    finally:
        await host.shutdown()


async def metrics(client: httpx.AsyncClient) -> str:
    answer = await client.get("/_chutes/metrics")
    assert answer.status_code == 200
    return answer.text


def rejected(text: str, reason: str) -> float:
    found = re.search(rf'^chutes_rejected_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def invocations(text: str, cord: str, status: int) -> float:
    pattern = rf'^chutes_invocations_total{{cord="{cord}",status="{status}"}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


async def until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def websocket_closes(host: Host, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    """The message the host answers a websocket handshake with, when it refuses one."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": list(headers), "query_string": b""}
    await asyncio.wait_for(host(scope, receive, send), 10)
    (message,) = sent
    return message


async def test_request_ids_are_kept_only_when_short_and_safe() -> None:
    async with hosted() as (_, client):
        for given, kept in [
            ("abc-1.2:3_X", True),
            ("a" * 64, True),
            ("a" * 65, False),
            ("two words", False),
            ("", False),
            ("semi;colon", False),
        ]:
            answer = await client.post("/echo", json={"text": "x"}, headers={"x-request-id": given})
            assert answer.status_code == 200
            assert (answer.headers["x-request-id"] == given) is kept, given
        made = [
            (await client.post("/echo", json={"text": "x"})).headers["x-request-id"]
            for _ in range(2)
        ]
        assert made[0] != made[1]
        assert all(re.fullmatch(r"[0-9a-f]{16}", made_id) for made_id in made), made
        assert made[0][:8] == made[1][:8]  # one prefix per process, then a counter
        assert int(made[1][8:], 16) == int(made[0][8:], 16) + 1
        # A failed cord's body names the same id its header carries.
        failed = await client.post("/boom", headers={"x-request-id": "mine-1"})
        assert failed.status_code == 500 and failed.json()["request_id"] == "mine-1"
        assert failed.headers["x-request-id"] == "mine-1"


async def test_status_counts_per_cord_and_unknown_paths_as_other() -> None:
    async with hosted() as (_, client):
        assert (await client.post("/echo", json={"text": "x"})).status_code == 200
        assert (await client.post("/echo", json={})).status_code == 422
        assert (await client.post("/boom")).status_code == 500
        assert (await client.get("/nowhere")).status_code == 404
        text = await metrics(client)
        assert invocations(text, "echo", 200) == 1 and invocations(text, "echo", 422) == 1
        assert invocations(text, "boom", 500) == 1
        assert invocations(text, "other", 404) == 1
        # The cord's own headers go out with the request id.
        answer = await client.post("/echo", json={"text": "x"})
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["content-length"] == str(len(answer.content))
        assert 'chutes_in_flight{cord="echo"} 0.0' in text


async def test_the_cap_refuses_the_excess_with_429_but_serves_the_docs() -> None:
    async with hosted() as (host, client):
        held = [asyncio.ensure_future(client.post("/hold", json={"key": "cap"})) for _ in range(2)]
        await until(lambda: host.in_flight == 2, "two requests in flight")
        text = await metrics(client)
        assert 'chutes_in_flight{cord="hold"} 2.0' in text
        refused = await client.post("/echo", json={"text": "x"}, headers={"x-request-id": "r-1"})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1" and refused.headers["x-request-id"] == "r-1"
        assert refused.json() == {"detail": "too many requests: this chute serves 2 at a time"}
        assert int(refused.headers["content-length"]) == len(refused.content)
        assert refused.headers["content-type"] == "application/json"
        assert "connection" not in refused.headers  # the body was read: the connection stays
        for docs in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert (await client.get(docs)).status_code == 200, docs
        ws = await websocket_closes(host)
        assert ws == {"type": "websocket.close", "code": 1013, "reason": host.busy}
        assert rejected(await metrics(client), "concurrency") == 2
        GATE["cap"].set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert host.in_flight == 0
        assert (await client.post("/echo", json={"text": "x"})).status_code == 200


async def test_before_ready_only_probes_and_internal_paths_are_served() -> None:
    async with hosted() as (host, client):
        host.set_unready("testing")
        refused = await client.post("/echo", json={"text": "x"})
        assert refused.status_code == 503
        assert refused.json() == {"detail": "not ready: testing"}
        assert refused.headers["retry-after"] == "5"
        assert (await client.get("/openapi.json")).status_code == 503
        assert (await client.get("/_chutes/live")).status_code == 200
        assert (await client.get("/_chutes/ready")).status_code == 503
        ws = await websocket_closes(host)
        assert ws == {"type": "websocket.close", "code": 1013, "reason": "not ready"}
        assert rejected(await metrics(client), "not_ready") == 2  # the websocket is not counted
        host.clear_unready("testing")
        assert (await client.post("/echo", json={"text": "x"})).status_code == 200
        host.state = "starting"  # a host that never was ready says what it is doing
        host.unready_reason = None
        assert (await client.post("/echo", json={"text": "x"})).json() == {
            "detail": "not ready: starting"
        }


async def test_a_prefix_the_host_is_mounted_under_is_stripped() -> None:
    async with hosted(root_path="/pre") as (host, client):
        assert (await client.get("/pre/_chutes/live")).json()["status"] == "alive"
        host.set_unready("testing")
        # Probes are answered even before ready: the prefix did not hide /_chutes/ready.
        assert (await client.get("/pre/_chutes/ready")).status_code == 503
        assert (await client.get("/pre/_chutes/live")).status_code == 200
        # A path outside the prefix is taken as it is.
        assert (await client.get("/_chutes/live")).status_code == 200


async def test_oversized_headers_and_bodies_are_refused_and_the_connection_closed() -> None:
    limits = Limits(max_body_bytes=1024, max_headers=20, max_header_bytes=4096)
    async with hosted(limits=limits) as (_, client):
        many = {f"x-h{i}": "1" for i in range(30)}
        answer = await client.post("/echo", json={"text": "x"}, headers=many)
        assert answer.status_code == 431 and answer.headers["connection"] == "close"
        assert "too many header fields" in answer.json()["detail"]
        answer = await client.post("/echo", json={"text": "x" * 2000})
        assert answer.status_code == 413 and answer.headers["connection"] == "close"
        # A cord's own limit is below the host's.
        answer = await client.post("/small", json={"text": "x" * 100})
        assert answer.status_code == 413
        assert (await client.post("/small", json={"text": "x"})).status_code == 200
        text = await metrics(client)
        assert rejected(text, "headers_too_large") == 1 and rejected(text, "body_too_large") == 2
        assert invocations(text, "echo", 413) == 0  # refused before the cord


async def test_unanswerable_json_is_a_400_only_when_sent_as_json() -> None:
    async with hosted() as (_, client):
        body = b'{"text": NaN}'
        answer = await client.post(
            "/echo", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400 and "finite" in answer.json()["detail"]
        assert "x-request-id" in answer.headers
        assert rejected(await metrics(client), "bad_input") == 1
        # Not declared as JSON: the cord's own validation answers.
        plain = await client.post("/echo", content=body, headers={"content-type": "text/plain"})
        assert plain.status_code == 422


@pytest.mark.parametrize("path", ["/echo", "/_chutes/metrics"])
async def test_bearer_keys_guard_everything_but_the_probes(path: str) -> None:
    async with hosted(auth=BearerKeys(["sekret"])) as (host, client):
        refused = await client.post(path, json={"text": "x"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["detail"].startswith("missing credentials")
        wrong = await client.post(path, json={"text": "x"}, headers={"authorization": "Bearer no"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer key"
        key = {"authorization": "Bearer sekret"}
        assert (await client.post("/echo", json={"text": "x"}, headers=key)).status_code == 200
        assert (await client.get("/_chutes/live")).status_code == 200
        ws = await websocket_closes(host)
        assert ws["type"] == "websocket.close" and ws["code"] == 1008
        assert ws["reason"].startswith("missing credentials")
        text = (await client.get("/_chutes/metrics", headers=key)).text
        assert rejected(text, "unauthenticated") == 3  # two requests and the websocket


async def call(host: Host, scope: dict, messages: list[dict]) -> list[dict]:
    """One raw ASGI call: ``messages`` are what the client sends, then it waits."""
    sent: list[dict] = []
    pending = list(messages)

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    await asyncio.wait_for(host(scope, receive, send), 10)
    return sent


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    return {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": list(headers), "scheme": "http",
        "server": ("chute.test", 80), "client": ("127.0.0.1", 1), "root_path": "",
        "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip


async def test_a_request_without_a_body_reaches_the_cord_with_none() -> None:
    async with hosted() as (host, _):
        sent = await call(host, http_scope("GET", "/raw"), [{"type": "http.request"}])
        assert sent[0]["status"] == 200 and b'{"length":0}' in sent[-1]["body"]


async def test_a_client_that_leaves_is_counted_as_499_and_logged(caplog) -> None:
    caplog.set_level(logging.INFO, logger="chutes.runtime")
    async with hosted() as (host, client):
        body = b'{"key": "left"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"15")]
        messages = [{"type": "http.request", "body": body}, {"type": "http.disconnect"}]
        sent = await call(host, http_scope("POST", "/hold", headers), messages)
        assert sent == []  # nothing was answered to a client that had gone
        assert invocations(await metrics(client), "hold", 499) == 1
        assert host.in_flight == 0
    left = [r for r in caplog.records if r.name == "chutes.runtime" and "went away" in r.message]
    assert [r.getMessage() for r in left] == [
        "POST /hold: the client went away; its work was cancelled"
    ]


async def test_a_client_that_leaves_a_cord_in_a_thread_is_counted_as_499() -> None:
    """The thread cannot be stopped: it finishes, its answer reaches no one, and the
    request is counted as the client leaving, as an async cord's is."""
    async with hosted() as (host, client):
        body = b'{"seconds": 0.3}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"16")]
        messages = [{"type": "http.request", "body": body}, {"type": "http.disconnect"}]
        await call(host, http_scope("POST", "/nap", headers), messages)
        text = await metrics(client)
        assert invocations(text, "nap", 499) == 1 and invocations(text, "nap", 200) == 0
        assert host.in_flight == 0


async def test_the_asgi_lifespan_starts_and_stops_the_host() -> None:
    host = Host(make_chute(), dev=True, plugins=PluginManager(entry_points=False))
    events: asyncio.Queue[dict] = asyncio.Queue()
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    running = asyncio.ensure_future(host({"type": "lifespan"}, events.get, send))
    await events.put({"type": "lifespan.startup"})
    await until(lambda: sent, "the startup to complete")
    assert sent == [{"type": "lifespan.startup.complete"}] and host.state == "ready"
    await events.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(running, 10)
    assert sent[-1] == {"type": "lifespan.shutdown.complete"} and host.state == "stopped"


async def test_a_client_gone_while_its_body_is_read_is_counted_not_answered() -> None:
    async with hosted() as (host, client):
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        for _ in range(2):
            sent = await call(
                host, http_scope("POST", "/echo", headers), [{"type": "http.disconnect"}]
            )
            assert sent == []
        assert rejected(await metrics(client), "client_left") == 2


async def test_a_client_gone_after_its_whole_answer_is_counted_by_that_answer() -> None:
    async with hosted() as (host, client):
        answered = asyncio.Event()
        body = b'{"text": "x"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"13")]
        messages = [{"type": "http.request", "body": body}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await answered.wait()  # the client hangs up once it has the whole answer
            return {"type": "http.disconnect"}

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()
                await asyncio.sleep(0.05)  # the hang-up is seen before the answer returns

        await asyncio.wait_for(host(http_scope("POST", "/echo", headers), receive, send), 10)
        assert sent[0]["status"] == 200
        text = await metrics(client)
        assert invocations(text, "echo", 200) == 1 and invocations(text, "echo", 499) == 0


async def test_only_the_first_request_id_counts_and_bare_bodies_are_not_json_checked() -> None:
    async with hosted() as (host, _):
        headers = [(b"x-request-id", b"not safe"), (b"x-request-id", b"safe-2")]
        sent = await call(host, http_scope("GET", "/raw", headers), [{"type": "http.request"}])
        given = dict(sent[0]["headers"])[b"x-request-id"]
        assert given not in (b"not safe", b"safe-2")
        # Without a JSON content type the body is not parsed: the cord decides.
        bare = [(b"content-length", b"3")]
        sent = await call(
            host, http_scope("GET", "/raw", bare), [{"type": "http.request", "body": b"NaN"}]
        )
        assert sent[0]["status"] == 200 and b'{"length":3}' in sent[-1]["body"]
