"""Cords as routes, in process: inputs, outputs, streaming and the schema."""

from __future__ import annotations

import json

import pytest
from fastapi import HTTPException, Request, Response
from pydantic import BaseModel, Field

from chutes.chute import Chute
from chutes_core.cord import Cord
from chutes_core.plugins import PluginManager
from chutes_testing import ChuteClient


class Prompt(BaseModel):
    text: str = Field(..., min_length=1, max_length=20)
    count: int = Field(1, ge=1, le=5)


class Answer(BaseModel):
    words: list[str]


def make_chute() -> Chute:
    chute = Chute(username="me", name="cords", concurrency=4)

    @chute.cord()
    async def repeat(self, prompt: Prompt) -> Answer:
        """Repeat the text."""
        return Answer(words=[prompt.text] * prompt.count)

    @chute.cord(input_schema=Prompt)
    async def untyped(self, prompt):
        return {"got": prompt.text}

    @chute.cord(public_api_path="/add", method="GET")
    def add(self, a: int, b: int = 2) -> dict:
        return {"sum": a + b}

    @chute.cord()
    async def greet(self, name: str, excited: bool = False) -> str:
        return f"hello {name}{'!' if excited else ''}"

    @chute.cord(output_content_type="image/png")
    async def png(self) -> Response:
        return b"\x89PNG fake bytes"

    @chute.cord(output_content_type="text/plain")
    async def plain(self) -> str:
        return "just text"

    @chute.cord()
    async def raw(self) -> Response:
        return Response(b"raw", media_type="application/octet-stream", headers={"x-raw": "1"})

    @chute.cord(stream=True)
    async def tokens(self, n: int):
        if n < 0:
            raise HTTPException(status_code=400, detail="n must be >= 0")
        for i in range(n):
            yield {"token": i}

    @chute.cord(stream=True)
    async def preformatted(self):
        yield f"data: {json.dumps({'a': 1})}\n\n"
        yield "data: [DONE]\n\n"

    @chute.cord(stream=True)
    def sync_stream(self):
        yield "one"
        yield "two"

    @chute.cord(stream=True)
    async def breaks(self):
        yield "first"
        raise RuntimeError("lost the model")

    @chute.cord()
    async def whoami(self, request: Request, suffix: str = "") -> dict:
        return {"path": request.url.path, "suffix": suffix}

    @chute.cord()
    async def explode(self) -> dict:
        raise ValueError("bad things")

    return chute


@pytest.fixture
async def client():
    async with ChuteClient(make_chute(), plugins=PluginManager(entry_points=False)) as c:
        yield c


async def test_model_body_is_validated_with_field_detail(client) -> None:
    ok = await client.post("/repeat", json={"text": "hi", "count": 2})
    assert ok.status_code == 200 and ok.json() == {"words": ["hi", "hi"]}
    bad = await client.post("/repeat", json={"text": "", "count": 9})
    assert bad.status_code == 422
    locations = {tuple(item["loc"]) for item in bad.json()["detail"]}
    assert locations == {("body", "text"), ("body", "count")}
    missing = await client.post(
        "/repeat", content=b"not json", headers={"content-type": "application/json"}
    )
    assert missing.status_code == 422


async def test_input_schema_without_annotation(client) -> None:
    assert (await client.post("/untyped", json={"text": "x"})).json() == {"got": "x"}
    assert (await client.post("/untyped", json={})).status_code == 422


async def test_plain_parameters_as_query_and_body(client) -> None:
    assert (await client.get("/add", params={"a": 3})).json() == {"sum": 5}
    bad = await client.get("/add", params={"a": "three"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "a"]
    greeting = await client.post("/greet", json={"name": "ada", "excited": True})
    assert greeting.text == "hello ada!"
    assert greeting.headers["content-type"].startswith("text/plain")


async def test_output_content_types(client) -> None:
    png = await client.post("/png")
    assert png.headers["content-type"] == "image/png" and png.content == b"\x89PNG fake bytes"
    plain = await client.post("/plain")
    assert plain.headers["content-type"].startswith("text/plain") and plain.text == "just text"
    raw = await client.post("/raw")
    assert raw.content == b"raw" and raw.headers["x-raw"] == "1"


async def test_streams_are_server_sent_events(client) -> None:
    response = await client.post("/tokens", json={"n": 3})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert events == [{"token": 0}, {"token": 1}, {"token": 2}]
    pre = await client.post("/preformatted")
    assert pre.text == 'data: {"a": 1}\n\ndata: [DONE]\n\n'
    sync = await client.post("/sync_stream")
    assert sync.text == "data: one\n\ndata: two\n\n"


async def test_a_stream_failing_before_its_first_chunk_gets_a_real_status(client) -> None:
    response = await client.post("/tokens", json={"n": -1})
    assert response.status_code == 400 and response.json() == {"detail": "n must be >= 0"}
    empty = await client.post("/tokens", json={"n": 0})
    assert empty.status_code == 200 and empty.text == ""


async def test_a_stream_failing_midway_ends_with_an_error_event(client) -> None:
    response = await client.post("/breaks")
    assert response.status_code == 200
    assert response.text.startswith("data: first\n\n")
    assert "event: error" in response.text and "lost the model" in response.text


async def test_request_parameter_and_errors(client) -> None:
    assert (await client.post("/whoami", json={"suffix": "x"})).json() == {
        "path": "/whoami",
        "suffix": "x",
    }
    failed = await client.post("/explode")
    assert failed.status_code == 500
    body = failed.json()
    assert "cord 'explode' failed: ValueError: bad things" in body["detail"]
    assert body["request_id"] == failed.headers["x-request-id"]


async def test_request_ids_are_kept_or_made(client) -> None:
    given = await client.post("/greet", json={"name": "x"}, headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.post("/greet", json={"name": "x"})
    assert len(made.headers["x-request-id"]) == 16


async def test_openapi_schema_comes_from_the_type_hints(client) -> None:
    schema = (await client.get("/openapi.json")).json()
    repeat = schema["paths"]["/repeat"]["post"]
    assert repeat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Prompt"
    )
    assert repeat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Answer"
    )
    assert repeat["description"] == "Repeat the text."
    add = schema["paths"]["/add"]["get"]
    assert {p["name"] for p in add["parameters"]} == {"a", "b"}
    assert "image/png" in schema["paths"]["/png"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in schema["paths"]["/tokens"]["post"]["responses"]["200"]["content"]


async def test_dev_mode_serves_public_paths_only() -> None:
    chute = make_chute()
    async with ChuteClient(chute, dev=True, plugins=PluginManager(entry_points=False)) as dev:
        assert (await dev.get("/add", params={"a": 1})).status_code == 200
        assert (await dev.post("/add", json={"a": 1})).status_code == 405
    async with ChuteClient(
        make_chute(), dev=False, plugins=PluginManager(entry_points=False)
    ) as prod:
        assert (await prod.get("/add", params={"a": 1})).json() == {"sum": 3}
        internal = await prod.post("/add", json={"a": 1, "b": 1})
        assert internal.json() == {"sum": 2}


async def test_cords_run_in_place_inside_the_host() -> None:
    chute = Chute(username="me", name="inner")

    @chute.cord()
    async def double(self, x: int) -> int:
        return x * 2

    @chute.cord()
    async def quadruple(self, x: int) -> int:
        return await double(await double(x))

    async with ChuteClient(chute, plugins=PluginManager(entry_points=False)) as client:
        assert (await client.post("/quadruple", json={"x": 3})).json() == 12


async def test_reserved_paths_are_refused() -> None:
    chute = Chute(username="me", name="reserved")

    @chute.cord(public_api_path="/_chutes/ready")
    async def sneaky(self) -> dict:
        return {}

    with pytest.raises(Exception, match="outside /_chutes/"):
        async with ChuteClient(chute, plugins=PluginManager(entry_points=False)):
            pass


async def test_declared_cords_and_ordered_startup_hooks() -> None:
    import types

    from chutes_core import hookimpl
    from chutes_core.cord import LifecycleHook

    order: list[str] = []
    plugin = types.ModuleType("extras")

    async def plugin_first(chute):
        order.append("plugin-10")

    @hookimpl
    def on_startup(chute):
        return LifecycleHook(plugin_first, priority=10)

    @hookimpl
    def declare_cords(chute):
        def ping(self) -> dict:
            return {"pong": True}

        return [Cord(ping, method="GET")]

    plugin.on_startup = on_startup
    plugin.declare_cords = declare_cords
    chute = Chute(username="me", name="ordered")

    @chute.on_startup(priority=5)
    def early(self):
        order.append("chute-5")

    @chute.on_startup()
    async def late(self):
        order.append("chute-50")

    manager = PluginManager(entry_points=False, plugins=[("extras", plugin)])
    async with ChuteClient(chute, plugins=manager) as client:
        assert order == ["chute-5", "plugin-10", "chute-50"]
        assert (await client.get("/ping")).json() == {"pong": True}
