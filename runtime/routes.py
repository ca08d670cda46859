"""Turning cords into FastAPI routes.

The endpoint FastAPI sees is generated from the cord's signature (see
:mod:`chutes_core.signature`), so FastAPI does the validation (422 with
field-level detail) and the OpenAPI schema from the type hints.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Body, Query, Request, WebSocket
from fastapi import params as fastapi_params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException

from chutes_core.errors import InvalidValueError
from chutes_core.signature import cord_signature
from chutes_runtime import logs

if TYPE_CHECKING:
    from chutes_core.batching import Batcher
    from chutes_core.chute import Chute
    from chutes_core.cord import Cord, WebsocketRoute
    from chutes_runtime.passthrough import Forwarder

log = logging.getLogger("chutes.runtime")

RESERVED_PREFIX = "/_chutes"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_DONE = object()


def cord_routes(cord: Cord, *, dev: bool) -> list[tuple[str, str]]:
    """``(path, method)`` of each route a cord is served at: its public path and
    method, plus (outside dev mode) its internal path with POST."""
    routes = [(cord.public_api_path, cord.method)]
    if not dev and (cord.path, "POST") != routes[0]:
        routes.append((cord.path, "POST"))
    return routes


_ERROR_BODY = {
    "application/json": {
        "schema": {"type": "object", "properties": {"detail": {"type": "string"}}},
    }
}
#: What the host itself may answer for any cord, declared in the OpenAPI schema.
HOST_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "The body is not JSON that can be answered (malformed, NaN or Infinity, "
        "a lone surrogate), or the cord refused the input",
        "content": _ERROR_BODY,
    },
    413: {"description": "The body is over the size limit", "content": _ERROR_BODY},
    429: {"description": "The chute serves as many requests as it may", "content": _ERROR_BODY},
}
UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid credentials", "content": _ERROR_BODY},
}


def mount_cords(
    chute: Chute,
    cords: list[Cord],
    *,
    dev: bool,
    forwarder: Forwarder,
    batchers: dict[str, Batcher[Any, Any]] | None = None,
    authenticated: bool = False,
) -> dict[str, str]:
    """Add a route per cord (and per internal path outside dev mode).

    A batched cord's routes feed its batcher in ``batchers`` (by cord name).
    Every route declares what the host may answer besides the cord
    (:data:`HOST_RESPONSES`, and 401 when ``authenticated``), then what the
    cord declares (``Cord.responses``). Returns ``{path: cord name}`` for
    every mounted path, for metrics labels.
    """
    paths: dict[str, str] = {}
    host_responses = dict(HOST_RESPONSES)
    if authenticated:
        host_responses.update(UNAUTHENTICATED)
    for cord in cords:
        responses: dict[int | str, dict[str, Any]] = {**host_responses}
        for status, answer in (cord.responses or {}).items():
            responses[status] = answer
        for path, method in cord_routes(cord, dev=dev):
            if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
                raise InvalidValueError(
                    f"cord {cord.name!r}: path",
                    path,
                    f"a path outside {RESERVED_PREFIX}/, which the host uses",
                )
            if cord.passthrough:
                endpoint = forwarder.handler(cord)
                chute.add_api_route(
                    path,
                    endpoint,
                    methods=[method],
                    name=cord.name,
                    include_in_schema=True,
                    responses=responses,
                )
            else:
                batcher = (batchers or {}).get(cord.name) if cord.batch else None
                _add_cord_route(chute, cord, path, method, responses, batcher)
            paths[path] = cord.name
    return paths


async def server_error(request: Request, exc: Exception) -> Response:
    """The chute's handler of last resort: the cause and the request id, as JSON."""
    return JSONResponse(
        {"detail": f"{type(exc).__name__}: {exc}", "request_id": logs.request_id.get()}, 500
    )


#: How much of a caller's input a 422 repeats back.
EXCERPT = 80


async def validation_error(request: Request, exc: Exception) -> Response:
    """422 with FastAPI's field-level detail, but never more than a short excerpt of
    the input (a huge or unencodable input must not come back whole, or fail)."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        error = dict(error)
        if "input" in error:
            error["input"] = excerpt(error["input"])
        if "ctx" in error:
            error["ctx"] = {key: excerpt(value) for key, value in error["ctx"].items()}
        error.pop("url", None)
        errors.append(error)
    return JSONResponse({"detail": errors}, 422)


def excerpt(value: Any) -> Any:
    """``value`` when it is a short plain scalar, else a short ``repr`` of it."""
    if (
        value is None
        or isinstance(value, bool | int)
        or (isinstance(value, float) and math.isfinite(value))
    ):
        return value
    if isinstance(value, str) and len(value) <= EXCERPT and value.isprintable():
        return value
    text = repr(value)
    return text if len(text) <= EXCERPT else text[: EXCERPT - 3] + "..."


def mount_websockets(chute: Chute, routes: list[WebsocketRoute]) -> None:
    for route in routes:
        fn = route.fn

        async def endpoint(websocket: WebSocket, _fn: Callable[..., Any] = fn) -> None:
            await _fn(chute, websocket)

        chute.add_api_websocket_route(route.path, endpoint, name=route.name)


def _add_cord_route(
    chute: Chute,
    cord: Cord,
    path: str,
    method: str,
    responses: dict[int | str, dict[str, Any]],
    batcher: Batcher[Any, Any] | None = None,
) -> None:
    sig = cord_signature(cord)
    returns = cord.output_schema or sig.hints.get("return")
    if batcher is not None and not cord.output_schema:
        from chutes_core.batching import list_item

        returns = list_item(returns)  # what one request gets: an item of the list
    kwargs: dict[str, Any] = {"response_model": None, "responses": dict(responses)}
    if cord.stream:
        kwargs["response_class"] = StreamingResponse
        kwargs["responses"][200] = {"content": {"text/event-stream": {}}}
    elif cord.output_content_type and cord.output_content_type != "application/json":
        kwargs["response_class"] = Response
        kwargs["responses"][200] = {"content": {cord.output_content_type: {}}}
    elif isinstance(returns, type) and issubclass(returns, Response):
        pass
    elif returns is str:
        kwargs["response_class"] = PlainTextResponse
    elif returns is not None and returns is not inspect.Signature.empty:
        kwargs["response_model"] = returns
    if batcher is not None:
        from chutes_runtime.batching import batch_endpoint

        endpoint = batch_endpoint(cord, batcher, render)
    else:
        endpoint = _make_endpoint(chute, cord, method)
    chute.add_api_route(
        path,
        endpoint,
        methods=[method],
        name=cord.name if path == cord.public_api_path else f"{cord.name}_internal",
        summary=cord.name,
        description=inspect.getdoc(cord.fn) or None,
        **kwargs,
    )


def _make_endpoint(chute: Chute, cord: Cord, method: str) -> Callable[..., Any]:
    sig = cord_signature(cord)
    fn = cord.fn
    parameters = []
    if sig.request_param:
        parameters.append(
            inspect.Parameter(sig.request_param, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        )
    if sig.model is not None:
        name, model = sig.model
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=model, default=Body(...)
            )
        )
    for param in sig.fields:
        annotation = sig.hints.get(param.name, Any)
        default = param.default
        if not isinstance(
            default, fastapi_params.Depends | fastapi_params.Param | fastapi_params.Body
        ):
            required = default is inspect.Parameter.empty
            if method == "GET":
                default = Query(... if required else default)
            else:
                default = Body(... if required else default, embed=True)
        parameters.append(
            inspect.Parameter(
                param.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
            )
        )

    is_async = inspect.iscoroutinefunction(fn)
    is_agen = inspect.isasyncgenfunction(fn)
    is_gen = inspect.isgeneratorfunction(fn)
    content_type = cord.output_content_type

    async def call(kwargs: dict[str, Any]) -> Any:
        if is_agen:
            return await event_stream(fn(chute, **kwargs))
        if is_gen:
            return await event_stream(iterate_in_threadpool(fn(chute, **kwargs)))
        if is_async:
            result = await fn(chute, **kwargs)
        else:
            result = await run_in_threadpool(fn, chute, **kwargs)
        if cord.stream and not isinstance(result, Response):
            if hasattr(result, "__aiter__"):
                return await event_stream(result)
            if isinstance(result, Iterator):
                return await event_stream(iterate_in_threadpool(result))
        return render(result, content_type)

    async def endpoint(**kwargs: Any) -> Any:
        try:
            return await call(kwargs)
        except (HTTPException, RequestValidationError):
            raise
        except Exception as exc:
            # The client gets the cause; the log gets the traceback, under the request id.
            log.exception("cord %s failed", cord.name)
            return JSONResponse(
                {
                    "detail": f"cord {cord.name!r} failed: {type(exc).__name__}: {exc}",
                    "request_id": logs.request_id.get(),
                },
                status_code=500,
            )

    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = cord.name
    endpoint._chutes_cord = cord  # type: ignore[attr-defined]  # see cord_of
    return endpoint


def cord_of(endpoint: Any) -> Cord | None:
    """The cord whose generated endpoint this is (``None`` for any other callable)."""
    return getattr(endpoint, "_chutes_cord", None)


def render(result: Any, content_type: str | None) -> Any:
    """Turn a cord's return value into a response (or leave it to FastAPI's JSON)."""
    if isinstance(result, Response):
        return result
    if content_type and content_type != "application/json":
        if isinstance(result, (bytes, bytearray, memoryview)):
            return Response(bytes(result), media_type=content_type)
        if isinstance(result, str):
            return Response(result, media_type=content_type)
    if isinstance(result, str):
        return PlainTextResponse(result)
    return result


async def event_stream(source: AsyncIterator[Any]) -> StreamingResponse:
    """Server-Sent Events from ``source``, answered only once the first chunk exists.

    An exception before the first chunk propagates (a real status); one after
    it ends the stream with an ``error`` event, since the status is sent.
    """
    iterator = source.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        first = _DONE

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not _DONE:
                yield encode_event(first)
                async for chunk in iterator:
                    yield encode_event(chunk)
        except (Exception, SystemExit) as exc:  # sys.exit() here would stop the whole host
            log.exception("stream failed after it started")
            detail = json.dumps({"detail": f"{type(exc).__name__}: {exc}"})
            yield f"event: error\ndata: {detail}\n\n".encode()
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    return StreamingResponse(body(), media_type="text/event-stream", headers=SSE_HEADERS)


def encode_event(chunk: Any) -> bytes:
    """One SSE message; chunks that are already SSE-framed pass through unchanged."""
    if isinstance(chunk, (bytes, bytearray)):
        return bytes(chunk)
    if isinstance(chunk, str):
        if chunk.startswith(("data:", "event:", ":", "id:", "retry:")):
            return chunk.encode()
        return b"".join(b"data: " + line.encode() + b"\n" for line in chunk.split("\n")) + b"\n"
    if isinstance(chunk, BaseModel):
        return b"data: " + chunk.model_dump_json().encode() + b"\n\n"
    from pydantic_core import to_json

    return b"data: " + to_json(chunk) + b"\n\n"
