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

Invalid input gets FastAPI's 422: its errors are located as FastAPI locates
them (``("body", ...)``; every key of a keyed body checked, a missing one
reported as FastAPI reports it) and answered by the chute's handler for
``RequestValidationError``, so a validator runs once per request. A body that
is not JSON, or not ``application/json``, or empty, is handed to FastAPI. As
FastAPI's route and error middleware do: ``HTTPException`` and
``RequestValidationError`` raised by the cord are answered by the chute's
handlers for them (unless the response started); any other error, a result
that fails its response model included, gets the chute's 500 handler's answer
if nothing was sent yet, and is then raised for the host to log. Both of
FastAPI's layers of exception handling (around the route, and in its
exception middleware) are kept, with their handlers, ``RuntimeError`` for an
exception handled after the response started, and the cleared traceback of a
handled exception.

A cord is served this way only when nothing would be bypassed (see
:func:`plan`): no middleware, exception handlers, dependencies, debug mode,
``root_path``, FastAPI body limit, OpenTelemetry, custom route class or
request path (``build_middleware_stack``, ``__call__``, a middleware stack
set by hand) of the chute's; FastAPI and Starlette as they ship (APM agents
such as sentry-sdk patch them in place); its route the first to match its
path and method, behind routes that match on nothing else (no ``Host`` route
or route class of the chute's own before it); a body that is one pydantic
model or plain keys; no ``Request`` or FastAPI parameter objects; the
default response class. This is decided once, when routes are mounted
(after the startup hooks): middleware, handlers or routes added later apply
to what FastAPI serves. ``tests/runtime/test_direct.py`` serves the same
requests both ways and compares the answers byte for byte. With FastAPI
before 0.151 (see :data:`SINCE`), FastAPI serves every cord.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import fastapi
from fastapi import FastAPI
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
from fastapi.routing import APIRoute, APIRouter, APIWebSocketRoute
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from starlette.exceptions import HTTPException, WebSocketException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route, WebSocketRoute

from chutes_core.signature import cord_signature
from chutes_runtime.routes import cord_of, cord_routes, server_error, validation_error

if TYPE_CHECKING:
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

#: The first FastAPI whose answers this module gives (the tests compare them on every
#: release from it): 0.151, where a body key sent as ``null`` stopped counting as
#: missing; response models are serialized by pydantic's ``dump_json`` since 0.130.
#: With an older FastAPI, FastAPI serves every cord.
SINCE = (0, 151)
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

    __slots__ = ("arguments", "endpoint", "handlers", "method", "path", "returns")

    def __init__(
        self,
        route: APIRoute,
        method: str,
        arguments: Callable[[Any], dict[str, Any]],
        handlers: dict[Any, Any],
    ) -> None:
        self.endpoint = route.endpoint
        self.handlers = handlers
        self.method = method
        self.path = route.path
        self.arguments = arguments
        self.returns = None if route.response_model is None else TypeAdapter(route.response_model)

    async def __call__(self, scope: Message, body: bytes, receive: Receive, send: Send) -> bool:
        """Serve the request; ``False`` (a body that is not JSON): FastAPI must answer it."""
        try:
            data = json.loads(body)
        except Exception:  # FastAPI answers: its 422 (JSON decode error) or 400
            return False
        sender = _Tracked(send)

        async def serve(send: Send) -> None:
            try:
                arguments = self.arguments(data)
            except _Invalid as exc:
                raise RequestValidationError(
                    exc.errors, body=data, endpoint_ctx=self.context(scope)
                ) from None
            result = await self.endpoint(**arguments)
            response = result if isinstance(result, Response) else self.render(result, scope)
            await response(scope, receive, send)

        async def route(send: Send) -> None:  # FastAPI handles errors around the route...
            await _handling(serve, scope, receive, send, self.handlers)

        # ... and again in its exception middleware; its error middleware answers the rest
        # with the 500 handler (when nothing was sent yet) and raises it on, to be logged.
        try:
            await _handling(route, scope, receive, sender, self.handlers)
        except Exception as exc:
            if not sender.started:
                await (await server_error(Request(scope), exc))(scope, receive, send)
            raise
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


class _Tracked:
    """``send``, remembering whether the response started."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


async def _handling(
    app: Callable[[Send], Awaitable[None]],
    scope: Message,
    receive: Receive,
    send: Send,
    handlers: dict[Any, Any],
) -> None:
    """``app`` with Starlette's exception handling, as around a route and in the exception
    middleware: a handled exception is answered by its handler unless the response
    started (then it becomes a ``RuntimeError``); any other is raised."""
    sender = _Tracked(send)
    try:
        await app(sender)
    except Exception as exc:
        handler = next((handlers[kind] for kind in type(exc).__mro__ if kind in handlers), None)
        if handler is None:
            raise
        if sender.started:
            raise RuntimeError("Caught handled exception, but response already started.") from exc
        response = await handler(Request(scope, receive), exc)
        if response is not None:
            await response(scope, receive, sender)
        exc.__traceback__ = None  # a reused exception must not keep every request's frames


class _Invalid(Exception):
    """The input is invalid: ``errors`` as FastAPI words them (its 422 follows)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _located(exc: ValidationError, loc: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**error, "loc": (*loc, *error["loc"])} for error in exc.errors(include_url=False)]


def _missing(loc: tuple[str, ...]) -> dict[str, Any]:
    """FastAPI's error for a missing body field."""
    line = {"type": "missing", "loc": loc, "input": {}}
    error = ValidationError.from_exception_data("Field required", [line]).errors(  # type: ignore[list-item]
        include_url=False
    )[0]
    return {**error, "input": None}


def _model_body(name: str, model: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """The arguments from a body that is one model (FastAPI's single body field)."""
    validate = TypeAdapter(model).validate_python

    def arguments(body: Any) -> dict[str, Any]:
        try:
            return {name: validate(body, from_attributes=True)}
        except ValidationError as exc:
            raise _Invalid(_located(exc, ("body",))) from None

    return arguments


def _keyed_body(params: list[tuple[str, Any, Any]]) -> Callable[[Any], dict[str, Any]]:
    """The arguments from a JSON object with a key per parameter (FastAPI's embedded
    body fields): ``params`` holds ``(name, annotation, default)``. As FastAPI: a
    missing key takes a copy of its default, unvalidated; every key is validated and
    every error reported; a body that is not an object misses every key."""
    fields = [
        (name, TypeAdapter(annotation).validate_python, default, ("body", name))
        for name, annotation, default in params
    ]

    def arguments(body: Any) -> dict[str, Any]:
        if not fields:
            return {}  # FastAPI does not look at the body
        if type(body) is not dict:
            raise _Invalid([_missing(loc) for _, _, _, loc in fields])
        values: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        for name, validate, default, loc in fields:
            value = body.get(name, _MISSING)
            if value is _MISSING:
                if default is inspect.Parameter.empty:
                    errors.append(_missing(loc))
                else:
                    values[name] = copy.deepcopy(default)
                continue
            try:
                values[name] = validate(value, from_attributes=True)
            except ValidationError as exc:
                errors.extend(_located(exc, loc))
        if errors:
            raise _Invalid(errors)
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
    handlers = _exception_handlers(chute)
    for cord in cords:
        try:
            direct.update(_routes(chute, cord, dev, handlers))
        except Exception as exc:  # a type pydantic will not adapt alone, say: FastAPI's then
            log.info("cord %s is served through FastAPI: %s", cord.name, exc)
    return direct


def _routes(
    chute: Chute, cord: Cord, dev: bool, handlers: dict[Any, Any]
) -> dict[tuple[str, str], DirectCord]:
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
        if method != "GET" and type(route) is APIRoute and _route_is_plain(route, cord):
            direct[(method, path)] = DirectCord(route, method, arguments, handlers)
    return direct


def _exception_handlers(chute: Chute) -> dict[Any, Any]:
    """The handlers FastAPI's exception middleware holds: Starlette's default for
    ``WebSocketException``, then the app's own (all but the 500 handler)."""
    handlers: dict[Any, Any] = {WebSocketException: ExceptionMiddleware(chute).websocket_exception}
    handlers.update(
        (kind, handler)
        for kind, handler in chute.exception_handlers.items()
        if kind not in (500, Exception)
    )
    return handlers


def _app_is_plain(chute: Chute) -> bool:
    """Whether the chute's app adds nothing per request beyond FastAPI's defaults and the host's."""
    handlers = chute.exception_handlers
    app_class = type(chute)
    router = chute.router
    return (
        # FastAPI's own request path: not patched on the app (OpenTelemetry's
        # instrument_app replaces build_middleware_stack there), overridden by a subclass,
        # set as a stack of the app's or router's own, or wrapped in the libraries.
        "build_middleware_stack" not in vars(chute)
        and app_class.build_middleware_stack is FastAPI.build_middleware_stack
        and app_class.__call__ is FastAPI.__call__
        and chute.middleware_stack is None
        and getattr(router, "middleware_stack", router.app) == router.app
        and _stock_request_path()
        and not chute.user_middleware
        and not chute.debug
        and not chute.root_path
        and getattr(chute, "max_body_size", None) is None  # FastAPI's own limit, from 0.16x
        and handlers.keys() == _HANDLERS.keys()
        and all(handlers[kind] is handler for kind, handler in _HANDLERS.items())
        and not _telemetry(chute)
    )


def _stock_request_path() -> bool:
    """Whether what FastAPI and Starlette run for a request is as they ship it.

    Instrumentation (sentry-sdk, APM agents) patches these classes and functions
    in place; a patch is a function from another module or, through
    ``functools.wraps``, one with ``__wrapped__``.
    """
    from fastapi import routing as fastapi_routing
    from starlette.applications import Starlette
    from starlette.middleware.errors import ServerErrorMiddleware
    from starlette.routing import Router

    functions = [
        getattr(owner, name, None)
        for owner, names in (
            (FastAPI, ("__call__", "build_middleware_stack")),
            (Starlette, ("__call__", "build_middleware_stack")),
            (APIRouter, ("__call__", "app", "handle")),
            (Router, ("__call__", "app")),
            (APIRoute, ("handle", "matches", "get_route_handler")),
            (Route, ("handle", "matches")),
            (ExceptionMiddleware, ("__init__", "__call__")),
            (ServerErrorMiddleware, ("__init__", "__call__")),
            (fastapi_routing, ("request_response", "get_request_handler", "serialize_response")),
        )
        for name in names
    ]
    return all(
        str(getattr(function, "__module__", "")).partition(".")[0] in ("fastapi", "starlette")
        and not hasattr(function, "__wrapped__")
        for function in functions
        if function is not None
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


#: Routes whose match depends on the path and method alone.
_PLAIN_ROUTES = (APIRoute, APIWebSocketRoute, Route, WebSocketRoute, Mount)


def _first_match(chute: Chute, path: str, method: str) -> Any:
    """The route FastAPI's router would pick for any ``method path`` request, or ``None``
    when that may depend on more (a ``Host`` route before it, or a route class of the
    chute's own)."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in chute.router.routes:
        if type(route) not in _PLAIN_ROUTES:
            return None
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


#: OpenTelemetry's providers before any is set (FastAPI traces only once one is).
_DEFERRED = frozenset(
    {
        ("opentelemetry.trace", "ProxyTracerProvider"),
        ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
        ("opentelemetry._logs._internal", "ProxyLoggerProvider"),
    }
)


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
    return any(
        (type(provider).__module__, type(provider).__name__) not in _DEFERRED
        for provider in providers
    )
