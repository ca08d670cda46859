"""Cords the host serves itself, with FastAPI's semantics and without its per-request machinery.

FastAPI spends about 45 µs on each request to a cord that takes a pydantic
body: its middleware stack, the routing, a ``Request`` object, content-type
parsing through :mod:`email`, dependency solving, the response model and the
response object. For a cord with nothing the chute configured that needs
any of that, the host does the same work itself in a few microseconds:

1. the body (read already, within the host's limits) is parsed with
   :func:`json.loads`, as FastAPI's ``Request.json()`` does;
2. it is validated against the cord's model by pydantic, exactly as FastAPI's
   body field does (``validate_python(..., from_attributes=True)``);
3. the same endpoint FastAPI would call (:mod:`chutes_runtime.routes`) runs;
4. its result is validated and serialized against the route's response model
   by pydantic (``dump_json(by_alias=True)``, as FastAPI does), or
   ``jsonable_encoder`` and a ``JSONResponse`` without one; a ``Response`` is
   sent as it is.

Anything else goes to FastAPI, so its answer is FastAPI's own: a body that is
not JSON, not ``application/json``, empty or invalid (FastAPI then answers
with its 422, the model validated a second time) is handed over before the
cord runs. ``HTTPException`` and ``RequestValidationError`` raised by the
cord are answered by the chute's handlers for them, and a result that fails
its response model by the chute's 500 handler, which is then raised for the
host to log, as FastAPI's ``ServerErrorMiddleware`` does.

A cord is served this way only when nothing would be bypassed (see
:func:`plan`): no middleware, exception handlers, dependencies, debug mode,
``root_path``, FastAPI body limit or OpenTelemetry of the chute's, its route
the first to match its path and method, a body that is one pydantic model,
no ``Request`` parameter, and the default response class. ``tests/runtime/
test_direct.py`` serves the same requests both ways and compares the answers
byte for byte. With FastAPI before 0.130, which serialized response models
another way, every cord is served by FastAPI.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import fastapi
from fastapi.datastructures import DefaultPlaceholder
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import (
    http_exception_handler,
    websocket_request_validation_exception_handler,
)
from fastapi.exceptions import (
    RequestValidationError,
    ResponseValidationError,
    WebSocketRequestValidationError,
)
from fastapi.params import Depends
from fastapi.routing import APIRoute
from pydantic import PydanticUserError, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from chutes_core.signature import cord_signature
from chutes_runtime.routes import cord_of, cord_routes, server_error, validation_error

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from chutes_core.chute import Chute
    from chutes_core.cord import Cord

    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

__all__ = ["JSON_TYPES", "DirectCord", "plan"]

log = logging.getLogger("chutes.runtime")

#: ``Content-Type`` values served directly (lower-cased); FastAPI parses each as JSON.
JSON_TYPES = frozenset(
    {b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"}
)

#: The FastAPI whose answers this module gives: from 0.130, a response model is
#: serialized by pydantic straight to JSON (``dump_json``). Older ones serve every cord.
SINCE = (0, 130)
FASTAPI = tuple(int(part) for part in fastapi.__version__.split(".")[:2])

#: The exception handlers every hosted chute has (FastAPI's, then the host's; see lifecycle).
_HANDLERS: dict[Any, Any] = {
    HTTPException: http_exception_handler,
    RequestValidationError: validation_error,
    WebSocketRequestValidationError: websocket_request_validation_exception_handler,
    Exception: server_error,
}


class DirectCord:
    """One cord route, served without FastAPI's per-request machinery (see the module)."""

    __slots__ = ("arguments", "endpoint", "method", "path", "returns")

    def __init__(
        self, route: APIRoute, method: str, arguments: Callable[[Any], dict[str, Any]]
    ) -> None:
        self.endpoint = route.endpoint
        self.method = method
        self.path = route.path
        self.arguments = arguments
        self.returns = None if route.response_model is None else TypeAdapter(route.response_model)

    async def __call__(self, scope: Message, body: bytes, receive: Receive, send: Send) -> bool:
        """Serve the request; ``False`` (before the cord runs): FastAPI must answer it."""
        try:
            arguments = self.arguments(json.loads(body))
        except Exception:  # FastAPI answers it, with its own 422 or 400
            return False
        try:
            result = await self.endpoint(**arguments)
        except HTTPException as exc:
            response = await http_exception_handler(Request(scope, receive), exc)
        except RequestValidationError as exc:
            response = await validation_error(Request(scope, receive), exc)
        else:
            if isinstance(result, Response):
                response = result
            else:
                try:
                    response = self.render(result, scope)
                except Exception as exc:
                    # As FastAPI's ServerErrorMiddleware: the 500 handler answers, and the
                    # error goes on to be logged.
                    await (await server_error(Request(scope, receive), exc))(scope, receive, send)
                    raise
        await response(scope, receive, send)
        return True

    def render(self, result: Any, scope: Message) -> Response:
        returns = self.returns
        if returns is None:
            return JSONResponse(jsonable_encoder(result))
        try:
            value = returns.validate_python(result, from_attributes=True)
        except ValidationError as exc:
            errors = [
                {**error, "loc": ("response", *error["loc"])}
                for error in exc.errors(include_url=False)
            ]
            raise ResponseValidationError(
                errors, body=result, endpoint_ctx=self.context(scope)
            ) from None
        return Response(returns.dump_json(value, by_alias=True), media_type="application/json")

    def context(self, scope: Message) -> Any:
        """Where the endpoint is, as FastAPI names it in a response validation error."""
        from fastapi.exceptions import EndpointContext

        context = EndpointContext()
        try:
            context["file"] = inspect.getsourcefile(self.endpoint) or ""
            context["line"] = inspect.getsourcelines(self.endpoint)[1]
            context["function"] = self.endpoint.__name__
        except Exception:
            context = EndpointContext()
        root = str(scope.get("root_path", "")).rstrip("/")
        context["path"] = f"{self.method} {root}{self.path}"
        return context


class _Missing(Exception):
    """The body does not hold the arguments (not an object, a key missing): FastAPI answers."""


def _model_body(name: str, model: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """The arguments from a body that is one model (FastAPI's single body field)."""
    validate = TypeAdapter(model).validate_python

    def arguments(body: Any) -> dict[str, Any]:
        return {name: validate(body, from_attributes=True)}

    return arguments


def _keyed_body(params: list[tuple[str, Any, Any]]) -> Callable[[Any], dict[str, Any]]:
    """The arguments from a JSON object with a key per parameter (FastAPI's embedded
    body fields): ``params`` holds ``(name, annotation, default)``; a missing key takes
    a copy of its default, unvalidated, as FastAPI does."""
    fields = [
        (name, TypeAdapter(annotation).validate_python, default)
        for name, annotation, default in params
    ]

    def arguments(body: Any) -> dict[str, Any]:
        if type(body) is not dict:
            raise _Missing
        values: dict[str, Any] = {}
        for name, validate, default in fields:
            value = body.get(name, _MISSING)
            if value is not _MISSING:
                values[name] = validate(value, from_attributes=True)
            elif default is inspect.Parameter.empty:
                raise _Missing
            else:
                values[name] = copy.deepcopy(default)
        return values

    return arguments


_MISSING = object()


def plan(chute: Chute, cords: list[Cord], *, dev: bool) -> dict[tuple[str, str], DirectCord]:
    """``{(method, path): DirectCord}`` of the cord routes that can be served directly.

    Decided once routes are mounted, after the startup hooks: a chute that sets
    OpenTelemetry up later than that is traced only on the routes FastAPI serves.
    """
    if FASTAPI < SINCE or not _app_is_plain(chute):
        return {}
    direct: dict[tuple[str, str], DirectCord] = {}
    for cord in cords:
        try:
            direct.update(_routes(chute, cord, dev))
        except PydanticUserError as exc:  # a type pydantic will not adapt alone: FastAPI's
            log.info("cord %s is served through FastAPI: %s", cord.name, exc)
    return direct


def _routes(chute: Chute, cord: Cord, dev: bool) -> dict[tuple[str, str], DirectCord]:
    if cord.passthrough or cord.batch:
        return {}
    signature = cord_signature(cord)
    if signature.request_param:
        return {}
    if signature.model is not None:
        arguments = _model_body(*signature.model)
    else:
        params = [
            (param.name, signature.hints.get(param.name, Any), param.default)
            for param in signature.fields
        ]
        if any(isinstance(default, FieldInfo | Depends) for _, _, default in params):
            return {}  # a parameter FastAPI treats in a way of its own
        arguments = _keyed_body(params)
    direct = {}
    for path, method in cord_routes(cord, dev=dev):
        route = _first_match(chute, path, method)
        if method != "GET" and isinstance(route, APIRoute) and _route_is_plain(route, cord):
            direct[(method, path)] = DirectCord(route, method, arguments)
    return direct


def _app_is_plain(chute: Chute) -> bool:
    """Whether the chute's app adds nothing per request beyond FastAPI's defaults and the host's."""
    handlers = chute.exception_handlers
    return (
        not chute.user_middleware
        and not chute.debug
        and not chute.root_path
        and getattr(chute, "max_body_size", None) is None  # FastAPI's own limit, from 0.16x
        and handlers.keys() == _HANDLERS.keys()
        and all(handlers[kind] is handler for kind, handler in _HANDLERS.items())
        and not _telemetry(chute)
    )


def _route_is_plain(route: APIRoute, cord: Cord) -> bool:
    """Whether FastAPI reads only a JSON body for this route, one field per parameter
    (no query, header, cookie or path parameters, no dependencies), and
    answers with its default response class and status."""
    # The cord's signature already excludes FastAPI parameter defaults; these hold if
    # FastAPI is ever handed one another way (an ``Annotated`` hint, a path template).
    dependant = route.dependant
    body = dependant.body_params
    return (
        cord_of(route.endpoint) is cord
        and not dependant.dependencies
        and not dependant.path_params
        and not dependant.query_params
        and not dependant.header_params
        and not dependant.cookie_params
        and all(field.alias == field.name for field in body)
        and isinstance(route.response_class, DefaultPlaceholder)
        and route.status_code is None
    )


def _first_match(chute: Chute, path: str, method: str) -> Any:
    """The route FastAPI's router would pick for ``method path``."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in chute.router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


#: OpenTelemetry's providers before any is set (FastAPI traces only once one is).
_DEFERRED = frozenset({"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"})


def _telemetry(chute: Chute) -> bool:
    """Whether FastAPI's own telemetry could trace this chute's requests.

    OpenTelemetry's API has no public "is it configured" query; like FastAPI,
    a global provider counts as configured once it is no longer the deferred
    proxy the API starts with. A chute given ``telemetry=`` settings of its own
    is taken as traced.
    """
    if chute.fastapi_options.get("telemetry") is not None:
        return True
    try:
        from opentelemetry import metrics, trace
    except ImportError:  # FastAPI before its own telemetry; nothing set up to trace
        return False

    providers = [trace.get_tracer_provider(), metrics.get_meter_provider()]
    try:
        from opentelemetry._logs import get_logger_provider  # the logs API's own module name
    except ImportError:
        pass
    else:
        providers.append(get_logger_provider())
    return any(type(provider).__name__ not in _DEFERRED for provider in providers)
