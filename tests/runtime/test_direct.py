"""Cords the host serves itself (chutes_runtime.direct) answer exactly as FastAPI does.

Every request here is sent twice to the same host: once as it serves (the cord
served directly where it qualifies) and once with direct serving switched off, so
that FastAPI's own routing, validation and serialization answer. Status, every
header and every body byte must be equal, and so must the log lines. A spy
records which path each request took, so a case meant to be served directly
cannot pass by falling back to FastAPI, and one FastAPI must answer cannot pass
by being served directly.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import fastapi
import fastapi.routing
import httpx
import pytest
from fastapi import Body, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, PydanticSchemaGenerationError, field_validator
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import WebSocketException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Match, Route

from chutes.chute import Chute
from chutes_runtime import direct
from chutes_runtime.direct import DirectCord
from chutes_runtime.host import Host

from .test_dispatch_accounting import hosted

#: Before it, FastAPI answers every request (test_direct_fastapi checks that).
pytestmark = pytest.mark.skipif(
    direct.FASTAPI < direct.SINCE, reason=f"FastAPI {fastapi.__version__} serves every cord"
)


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=20)
    count: int = 1
    price: Decimal | None = None
    when: datetime | None = None
    tags: list[str] = []

    @field_validator("name")
    @classmethod
    def no_spaces(cls, value: str) -> str:
        if " " in value:
            raise ValueError("no spaces, please")
        return value


class Aliased(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    item_name: str = Field(alias="itemName")


class Out(BaseModel):
    name: str
    total: float
    when: datetime | None = None
    label: str = Field(default="x", serialization_alias="Label")


class Noisy(BaseModel):
    """A model whose validator leaves a log line: it must run once per request."""

    name: str

    @field_validator("name")
    @classmethod
    def logged(cls, value: str) -> str:
        logging.getLogger("chutes.chute.direct").warning("validating %r", value)
        if value == "bad":
            raise ValueError("bad name")
        return value


def _late_conflict() -> None:
    raise HTTPException(409, "too late")  # after the response started


def _late_close() -> None:
    raise WebSocketException(1000)  # a websocket's exception, in an HTTP background task


class Raising(Response):
    """A response that raises ``exc`` when it is sent."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(b"x")
        self.exc = exc

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise self.exc


#: One exception instance raised by every request (as auth libraries keep them).
GONE = HTTPException(404, "no such thing")


def make_chute(**options: Any) -> Chute:
    chute = Chute(username="test", name="direct", concurrency=4, **options)

    @chute.cord()
    async def model_out(self, item: Item) -> Out:
        return Out(name=item.name, total=item.count * float(item.price or 1), when=item.when)

    @chute.cord()
    async def dict_out(self, item: Item) -> dict:
        return {"name": item.name, "price": item.price, "when": item.when, "tags": item.tags}

    @chute.cord()
    async def untyped(self, item: Item):  # no annotation: jsonable_encoder
        return {"price": item.price, "when": item.when, "set": {item.count}, "name": item.name}

    @chute.cord()
    async def aliased(self, body: Aliased) -> dict:
        return {"item": body.item_name}

    @chute.cord()
    async def list_out(self, item: Item) -> list[Out]:
        return [Out(name=item.name, total=1.5), Out(name=item.name * 2, total=-0.0)]

    @chute.cord(input_schema=Item)
    async def schema(self, data) -> dict:
        return {"name": data.name, "count": data.count}

    @chute.cord()
    async def keyed(
        self, text: str, n: int = 2, opts: dict | None = None, when: datetime | None = None
    ) -> dict:
        return {"text": text * n, "opts": opts, "when": when}

    @chute.cord()
    async def mutable_default(self, tags: list[str] = ["a"]) -> dict:  # noqa: B006
        tags.append("b")  # a default must be a fresh copy each time
        return {"tags": tags}

    @chute.cord()
    async def constrained(self, n: Annotated[int, Field(gt=0)], label: str = "n") -> dict:
        return {label: n}

    @chute.cord()
    def sync_model(self, item: Item) -> dict:
        return {"name": item.name, "sync": True}

    @chute.cord()
    async def no_input(self) -> dict:
        return {"ok": True}

    @chute.cord()
    async def teapot(self, item: Item) -> dict:
        raise HTTPException(418, detail={"why": item.name}, headers={"x-why": "tea"})

    @chute.cord()
    async def no_content(self, item: Item) -> dict:
        raise HTTPException(204)

    @chute.cord()
    async def refuses(self, item: Item) -> dict:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "name"), "msg": "taken", "input": item.name}]
        )

    @chute.cord()
    async def fails(self, item: Item) -> dict:
        raise ValueError(f"boom {item.name}")

    @chute.cord()
    async def wrong_out(self, item: Item) -> Out:
        return {"name": 5}  # type: ignore[return-value]

    @chute.cord()
    async def unserializable(self, item: Item) -> dict:
        return {"x": object()}

    @chute.cord()
    async def responds(self, item: Item) -> JSONResponse:
        return JSONResponse({"n": item.name}, status_code=201, headers={"x-a": "b"})

    @chute.cord()
    async def missing_file(self, item: Item) -> FileResponse:
        return FileResponse("/nonexistent/file.txt")  # fails before its response starts

    @chute.cord()
    async def odd_detail(self, item: Item) -> dict:
        raise HTTPException(400, detail={"at": datetime(2026, 1, 1)})  # the handler fails

    @chute.cord()
    async def late(self, item: Item) -> JSONResponse:
        return JSONResponse({"ok": True}, background=BackgroundTask(_late_conflict))

    @chute.cord()
    async def ws_error(self, item: Item) -> Response:
        return Raising(WebSocketException(1008, "no"))

    @chute.cord()
    async def ws_error_background(self, item: Item) -> JSONResponse:
        return JSONResponse({"ok": True}, background=BackgroundTask(_late_close))

    @chute.cord()
    async def gone(self, item: Item) -> dict:
        raise GONE

    @chute.cord()
    async def noisy(self, body: Noisy) -> dict:
        return {"name": body.name}

    # Never served directly: each needs something only FastAPI does.
    @chute.cord()
    async def text(self, item: Item) -> str:
        return item.name

    @chute.cord()
    async def with_request(self, item: Item, request: Request) -> dict:
        return {"path": request.url.path}

    @chute.cord(method="GET")
    async def query(self, text: str = "q") -> dict:
        return {"text": text}

    @chute.cord()
    async def depends(self, text: str, who: str = Depends(lambda: "dep")) -> dict:
        return {"text": text, "who": who}

    @chute.cord()
    async def body_param(self, n: int = Body(..., gt=0, embed=True)) -> dict:
        return {"n": n}

    @chute.cord(output_content_type="text/csv")
    async def csv(self, item: Item) -> str:
        return f"name\n{item.name}\n"

    return chute


NOT_DIRECT = {
    "/text",
    "/with_request",
    "/query",
    "/depends",
    "/body_param",
    "/csv",
}


class Spy:
    """Records whether a direct cord served each request (True) or handed it to FastAPI."""

    def __init__(self, inner: DirectCord, taken: list[bool]) -> None:
        self.inner = inner
        self.taken = taken

    async def __call__(self, *args: Any) -> bool:
        served = True  # unless it says otherwise: an error it raises comes after the cord ran
        try:
            served = await self.inner(*args)
        finally:
            self.taken.append(served)
        return served


async def both_ways(
    host: Host,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: bytes,
    content_type: str | None = "application/json",
) -> tuple[bool, httpx.Response]:
    """Send the request directly and through FastAPI; assert the answers are equal.
    Returns whether the direct path served it, and its answer."""
    headers = {"x-request-id": "same-id"}
    if content_type is not None:
        headers["content-type"] = content_type
    direct, taken = host.direct_cords, []
    host.direct_cords = {key: Spy(cord, taken) for key, cord in direct.items()}  # type: ignore[misc]
    answers, logs = [], []
    try:
        for _ in range(2):
            caplog.clear()
            answers.append(await client.post(path, content=body, headers=headers))
            logs.append(
                [
                    (r.name, r.levelname, r.getMessage(), r.exc_info and type(r.exc_info[1]))
                    for r in caplog.records
                ]
            )
            host.direct_cords = {}  # the second time, FastAPI answers
    finally:
        host.direct_cords = direct
    mine, fastapi = answers
    assert (mine.status_code, mine.headers.raw, mine.content) == (
        fastapi.status_code,
        fastapi.headers.raw,
        fastapi.content,
    ), (path, body, content_type)
    assert logs[0] == logs[1], (path, body)
    return taken == [True], mine


VALID = (
    b'{"name": "ab", "count": 2, "price": "1.50", "when": "2026-01-02T03:04:05Z", "tags": ["x"]}'
)
ITEM_CORDS = [
    "/model_out",
    "/dict_out",
    "/untyped",
    "/list_out",
    "/schema",
    "/sync_model",
    "/teapot",
    "/no_content",
    "/refuses",
    "/fails",
    "/wrong_out",
    "/unserializable",
    "/responds",
    "/missing_file",
    "/odd_detail",
    "/late",
    "/ws_error",
    "/ws_error_background",
    "/gone",
]
#: (body, served directly): anything that parses as JSON is, its 422 included; FastAPI
#: answers what does not parse (its 422 for a decode error, its 400 otherwise).
ITEM_BODIES = [
    (VALID, True),
    (b'{"name": "ab"}', True),
    (b'{"name": "\\u00e9t\\u00e9", "count": 100000000000000000000000000000}', True),
    (b'{"name": "ab", "zzz": 1}', True),  # extra="forbid": 422
    (b'{"name": "ab", "count": "many"}', True),
    (b'{"name": "a b"}', True),  # the model's own validator
    (b'{"name": ""}', True),
    (b"{}", True),
    (b"[1, 2]", True),
    (b'"ab"', True),
    (b"null", True),
    (b'{"name": ', False),  # malformed
    (b'{"name": "\xff"}', False),  # not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, False),  # nested past the parser's depth
]


@pytest.mark.parametrize("path", ITEM_CORDS)
async def test_a_model_body_is_answered_as_fastapi_answers(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chutes")
    async with hosted(make_chute()) as (host, client):
        for body, direct in ITEM_BODIES:
            taken, _ = await both_ways(host, client, caplog, path, body)
            assert taken is direct, (path, body)


@pytest.mark.parametrize(
    ("content_type", "direct"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/merge-patch+json", False),  # JSON to FastAPI too, but not served here
        ("text/plain", False),  # FastAPI does not parse it: its 422
        (None, False),
    ],
)
async def test_only_plain_json_content_types_are_served_directly(
    content_type: str | None, direct: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async with hosted(make_chute()) as (host, client):
        for path in ["/model_out", "/keyed"]:
            body = VALID if path == "/model_out" else b'{"text": "a"}'
            taken, _ = await both_ways(host, client, caplog, path, body, content_type)
            assert taken is direct, (path, content_type)


async def test_keyed_bodies_and_defaults(caplog: pytest.LogCaptureFixture) -> None:
    cases = [
        ("/keyed", b'{"text": "a"}', True),
        ("/keyed", b'{"text": "a", "n": "3"}', True),  # lax, as FastAPI validates
        ("/keyed", b'{"text": "a", "unknown": 1}', True),  # other keys are ignored
        ("/keyed", b'{"text": "a", "opts": {"k": [1, 2]}, "when": "2026-01-01"}', True),
        ("/keyed", b'{"n": 1}', True),  # missing: 422
        ("/keyed", b'{"n": "x", "when": "never"}', True),  # every error is reported
        ("/keyed", b'{"text": ["x"]}', True),
        ("/keyed", b'["text"]', True),  # not an object: every key is missing
        ("/keyed", b'{"text": null}', True),
        ("/aliased", b'{"itemName": "x"}', True),
        ("/aliased", b'{"item_name": "x"}', True),  # populate_by_name
        ("/aliased", b'{"name": "x"}', True),
        ("/constrained", b'{"n": 3}', True),
        ("/constrained", b'{"n": "x"}', True),
        ("/no_input", b'{"anything": 1}', True),
        ("/no_input", b"[1]", True),  # FastAPI does not look at the body
        ("/no_input", b"{", False),  # not JSON: FastAPI answers, and ignores it too
    ]
    async with hosted(make_chute()) as (host, client):
        for path, body, direct in cases:
            taken, _ = await both_ways(host, client, caplog, path, body)
            assert taken is direct, (path, body)
        for _ in range(2):  # a mutated default does not leak into the next request
            taken, answer = await both_ways(host, client, caplog, "/mutable_default", b"{}")
            assert taken and answer.json() == {"tags": ["a", "b"]}


async def test_what_needs_fastapi_is_left_to_it(caplog: pytest.LogCaptureFixture) -> None:
    async with hosted(make_chute()) as (host, client):
        served = {path for _, path in host.direct_cords}
        assert served == {f"/{cord.name}" for cord in host.chute.cords} - NOT_DIRECT
        keyed = {
            "/depends": b'{"text": "a"}',
            "/body_param": b'{"n": 1}',
        }
        for path in NOT_DIRECT - {"/query"}:
            taken, answer = await both_ways(host, client, caplog, path, keyed.get(path, VALID))
            assert not taken and answer.status_code == 200, path
        # FastAPI's own constraint on a parameter holds.
        _, answer = await both_ways(host, client, caplog, "/body_param", b'{"n": 0}')
        assert answer.status_code == 422


async def test_errors_keep_fastapis_answers_and_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chutes")
    async with hosted(make_chute()) as (host, client):
        for path, status in [
            ("/missing_file", 500),
            ("/odd_detail", 500),
            ("/late", 200),
            ("/ws_error", 500),
            ("/ws_error_background", 200),
            ("/gone", 404),
            ("/teapot", 418),
            ("/no_content", 204),
            ("/refuses", 422),
            ("/fails", 500),
            ("/wrong_out", 500),
            ("/unserializable", 500),
        ]:
            taken, answer = await both_ways(host, client, caplog, path, VALID)
            assert taken and answer.status_code == status, path
            assert answer.headers["x-request-id"] == "same-id"
        _, teapot = await both_ways(host, client, caplog, "/teapot", VALID)
        assert teapot.headers["x-why"] == "tea" and teapot.json() == {"detail": {"why": "ab"}}
        _, wrong = await both_ways(host, client, caplog, "/wrong_out", VALID)
        assert wrong.json()["detail"].startswith("ResponseValidationError: 2 validation errors")
        assert "POST /wrong_out" in wrong.json()["detail"]
        for body, status in [(b'{"name": "ok"}', 200), (b'{"name": "bad"}', 422)]:
            taken, answer = await both_ways(host, client, caplog, "/noisy", body)
            assert taken and answer.status_code == status
            assert caplog.text.count("validating") == 1  # the validator ran once
        caplog.clear()
        await client.post("/wrong_out", content=VALID, headers={"content-type": "application/json"})
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
            "request to /wrong_out failed"
        ]


def _with_middleware() -> Chute:
    chute = make_chute()

    @chute.middleware("http")
    async def tag(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-tag"] = "1"
        return response

    return chute


def _with_handler() -> Chute:
    chute = make_chute()

    @chute.exception_handler(ValueError)
    async def value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"value": str(exc)}, 400)

    return chute


class TaggedRoute(APIRoute):
    """FastAPI's custom route class pattern: its handler must keep running."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def tagged(request: Request) -> Any:
            response = await handler(request)
            response.headers["x-tag"] = "1"
            return response

        return tagged


def _with_route_class() -> Chute:
    chute = make_chute()
    chute.router.route_class = TaggedRoute
    return chute


def _with_patched_stack() -> Chute:
    """As OpenTelemetry's FastAPI instrumentation does: the stack is wrapped on the app."""
    chute = make_chute()
    build = chute.build_middleware_stack
    chute.build_middleware_stack = lambda: _tagging(build())  # type: ignore[method-assign]
    return chute


class StackOfItsOwn(Chute):
    def build_middleware_stack(self) -> Any:
        return _tagging(super().build_middleware_stack())


class CallOfItsOwn(Chute):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await _tagging(super().__call__)(scope, receive, send)


def _tagging(app: Any) -> Any:
    async def tag(scope: Any, receive: Any, send: Any) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-tag", b"1")]
            await send(message)

        await app(scope, receive, tagged if scope["type"] == "http" else send)

    return tag


def _subclassed(kind: type[Chute]) -> Chute:
    chute = make_chute()
    chute.__class__ = kind
    return chute


def _shadowed() -> Chute:
    chute = Chute(username="test", name="shadow")

    @chute.post("/echo")
    async def mine(request: Request) -> dict:
        return {"mine": True}

    @chute.cord()
    async def echo(self, text: str) -> dict:
        return {"text": text}

    @chute.get("/other")
    async def other_get() -> dict:
        return {"get": True}

    @chute.cord()
    async def other(self, text: str) -> dict:
        return {"text": text}

    return chute


@pytest.mark.parametrize(
    "build",
    [
        _with_middleware,
        _with_handler,
        lambda: make_chute(debug=True),
        lambda: make_chute(root_path="/under"),
        pytest.param(
            lambda: make_chute(max_body_size=1 << 20),
            marks=pytest.mark.skipif(
                "max_body_size" not in inspect.signature(FastAPI).parameters,
                reason="this FastAPI has no body limit of its own",
            ),
        ),
        lambda: make_chute(telemetry={"tracing": True}),
        lambda: make_chute(dependencies=[Depends(lambda: None)]),
    ],
    ids=[
        "middleware",
        "exception-handler",
        "debug",
        "root-path",
        "fastapi-body-limit",
        "telemetry",
        "app-dependencies",
    ],
)
@pytest.mark.filterwarnings("ignore:The `root_path` parameter is deprecated")
async def test_a_chute_that_configures_fastapi_is_served_by_fastapi(build: Any) -> None:
    async with hosted(build()) as (host, client):
        assert host.direct_cords == {}
        answer = await client.post("/dict_out", json={"name": "ab"})
        assert answer.status_code == 200 and answer.json()["name"] == "ab"


@pytest.mark.parametrize(
    "build",
    [
        _with_middleware,
        _with_route_class,
        _with_patched_stack,
        lambda: _subclassed(StackOfItsOwn),
        lambda: _subclassed(CallOfItsOwn),
    ],
    ids=["middleware", "route-class", "patched-stack", "subclass-stack", "subclass-call"],
)
async def test_a_request_path_of_the_chutes_own_keeps_running(build: Any) -> None:
    async with hosted(build()) as (host, client):
        assert host.direct_cords == {}
        answer = await client.post("/dict_out", json={"name": "ab"})
        assert answer.json()["name"] == "ab" and answer.headers["x-tag"] == "1"


async def test_a_host_route_leaves_routing_to_fastapi(caplog: pytest.LogCaptureFixture) -> None:
    chute = make_chute()
    chute.host("admin.chute.test", FastAPI())  # matched by the Host header
    caplog.set_level(logging.INFO, logger="chutes")
    async with hosted(chute) as (host, client):
        assert host.direct_cords == {}
        assert "served through FastAPI" not in caplog.text  # decided, not failed
        assert (await client.post("/dict_out", json={"name": "ab"})).json()["name"] == "ab"


async def test_a_route_of_the_chutes_own_keeps_its_path() -> None:
    async with hosted(_shadowed()) as (host, client):
        # Its own POST /echo comes first, so FastAPI routes there; its GET /other is
        # another method, so the cord's POST /other is the first to match.
        assert set(host.direct_cords) == {("POST", "/other")}
        assert (await client.post("/echo", json={"text": "a"})).json() == {"mine": True}
        assert (await client.post("/other", json={"text": "a"})).json() == {"text": "a"}
        assert (await client.get("/other")).json() == {"get": True}


async def test_a_configured_opentelemetry_keeps_fastapi_tracing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    monkeypatch.setattr(trace, "get_tracer_provider", trace.NoOpTracerProvider)
    async with hosted(make_chute()) as (host, _):
        assert host.direct_cords == {}


async def test_a_type_pydantic_will_not_adapt_leaves_the_cord_to_fastapi(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = direct.TypeAdapter

    def adapter(kind: Any) -> Any:
        if kind is Aliased:
            raise PydanticSchemaGenerationError("no schema for this one")
        return real(kind)

    monkeypatch.setattr(direct, "TypeAdapter", adapter)
    caplog.set_level(logging.INFO, logger="chutes")
    async with hosted(make_chute()) as (host, client):
        served = {path for _, path in host.direct_cords}
        assert "/aliased" not in served and "/model_out" in served
        assert "cord aliased is served through FastAPI: no schema for this one" in caplog.text
        answer = await client.post("/aliased", json={"itemName": "x"})
        assert answer.json() == {"item": "x"}


async def test_a_shared_exception_keeps_no_traceback() -> None:
    async with hosted(make_chute()) as (host, client):
        assert ("POST", "/gone") in host.direct_cords
        for _ in range(20):
            answer = await client.post("/gone", json={"name": "ab"})
            assert answer.status_code == 404
        assert GONE.__traceback__ is None  # each request's frames would pile up on it


async def test_a_send_that_fails_is_logged_as_fastapi_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handler's answer cannot be sent: FastAPI's second layer of handling (its
    exception middleware, around the route's) turns that into a RuntimeError."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/teapot",
        "raw_path": b"/teapot",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"14")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    bodies = iter([{"type": "http.request", "body": b'{"name": "ab"}', "more_body": False}])
    never = asyncio.Event()

    async def receive() -> dict:
        message = next(bodies, None)
        if message is None:
            await never.wait()
        return message

    async def send(message: Any) -> None:
        raise HTTPException(409, "the connection is gone")

    async with hosted(make_chute()) as (host, _):
        logged = []
        for direct_cords in (host.direct_cords, {}):
            saved, host.direct_cords = host.direct_cords, direct_cords
            bodies = iter([{"type": "http.request", "body": b'{"name": "ab"}', "more_body": False}])
            caplog.clear()
            await host(dict(scope, headers=list(scope["headers"])), receive, send)
            host.direct_cords = saved
            logged.append([type(r.exc_info[1]) for r in caplog.records if r.exc_info])
        assert logged == [[RuntimeError], [RuntimeError]]


def _tag_call(call: Any) -> Any:
    async def tagged_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        await _tagging(lambda *args: call(self, *args))(scope, receive, send)

    return tagged_call


def _tag_handler(build: Any) -> Any:
    def get_request_handler(*args: Any, **kwargs: Any) -> Any:
        handler = build(*args, **kwargs)

        async def tagged(request: Any) -> Any:
            response = await handler(request)
            response.headers["x-tag"] = "1"
            return response

        return tagged

    return get_request_handler


@pytest.mark.parametrize(
    ("owner", "name", "patch"),
    [
        (FastAPI, "__call__", _tag_call),
        (Starlette, "__call__", _tag_call),
        (fastapi.routing, "get_request_handler", _tag_handler),
    ],
    ids=["FastAPI.__call__", "Starlette.__call__", "get_request_handler"],
)
async def test_instrumentation_patched_into_fastapi_keeps_running(
    owner: Any, name: str, patch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As APM agents (sentry-sdk among them) patch FastAPI and Starlette in place."""
    monkeypatch.setattr(owner, name, patch(getattr(owner, name)))
    async with hosted(make_chute()) as (host, client):
        assert host.direct_cords == {}
        answer = await client.post("/dict_out", json={"name": "ab"})
        assert answer.json()["name"] == "ab" and answer.headers["x-tag"] == "1"


async def test_a_wrapped_handler_of_the_exception_middleware_keeps_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As sentry-sdk wraps every handler the middleware is given, to see 5xx errors."""
    seen: list[int] = []
    init = ExceptionMiddleware.__init__

    @functools.wraps(init)
    def watching(self: Any, app: Any, handlers: Any = None, debug: bool = False) -> None:
        def wrap(handler: Any) -> Any:
            async def watched(request: Any, exc: Any) -> Any:
                seen.append(getattr(exc, "status_code", 0))
                return await handler(request, exc)

            return watched

        init(self, app, {kind: wrap(h) for kind, h in (handlers or {}).items()}, debug)

    monkeypatch.setattr(ExceptionMiddleware, "__init__", watching)
    async with hosted(make_chute()) as (host, client):
        assert host.direct_cords == {}
        assert (await client.post("/teapot", json={"name": "ab"})).status_code == 418
        assert seen == [418]


def _with_stack_set_at_startup() -> Chute:
    chute = make_chute()

    @chute.on_startup()
    async def wrap(self: Chute) -> None:
        self.middleware_stack = _tagging(self.build_middleware_stack())

    return chute


def _with_router_stack() -> Chute:
    chute = make_chute()
    chute.router.middleware_stack = _tagging(chute.router.middleware_stack)
    return chute


class VersionRoute(Route):
    """Matches only a request that asks for version 2 in a header."""

    def matches(self, scope: Any) -> Any:
        if (b"x-api-version", b"2") not in scope.get("headers", []):
            return Match.NONE, {}
        return super().matches(scope)


def _with_header_route() -> Chute:
    chute = Chute(username="test", name="versions")

    async def version_two(request: Any) -> JSONResponse:
        return JSONResponse({"v2": True}, headers={"x-tag": "1"})

    chute.router.routes.append(VersionRoute("/dict_out", version_two, methods=["POST"]))
    for cord in make_chute().cords:
        chute.add_cord(cord)
    return chute


@pytest.mark.parametrize(
    ("build", "headers"),
    [
        (_with_stack_set_at_startup, {}),
        (_with_router_stack, {}),
        (_with_header_route, {"x-api-version": "2"}),
    ],
    ids=["app-stack", "router-stack", "header-route"],
)
async def test_a_stack_or_route_set_by_hand_keeps_running(build: Any, headers: dict) -> None:
    async with hosted(build()) as (host, client):
        assert ("POST", "/dict_out") not in host.direct_cords
        answer = await client.post("/dict_out", json={"name": "ab"}, headers=headers)
        assert answer.headers["x-tag"] == "1"
