"""ASGI dispatch: where each request to the host goes.

``/_chutes/*`` (and the OIP ``/v2/health/*`` aliases) goes to the internal endpoints; anything else answers 503 until
the host is ready. Past that, each request counts against the concurrency cap
(429 beyond it), is tagged with a request id (``x-request-id``, the caller's
if it sent a sane one) and is counted in the metrics. Passthrough routes are
forwarded straight to their handler when the chute has no middleware;
everything else goes to the chute's FastAPI app.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from chutes_runtime import logs
from chutes_runtime.lifespan import lifespan
from chutes_runtime.passthrough import error_response
from chutes_runtime.routes import RESERVED_PREFIX
from chutes_runtime.warmup import OIP_LIVE, OIP_READY

if TYPE_CHECKING:
    from chutes_runtime.host import Host

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("chutes.runtime")

#: Host paths outside ``/_chutes``: the Open Inference Protocol's health checks.
HOST_PATHS = frozenset({OIP_LIVE, OIP_READY})
#: Served even at the concurrency cap: the chute's documentation.
UNLIMITED_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


async def dispatch(host: Host, scope: Scope, receive: Receive, send: Send) -> None:
    """The host's ASGI entry (``Host.__call__``)."""
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        root = scope.get("root_path")
        if root and path.startswith(root):  # mounted under a prefix (Ray Serve, a proxy)
            path = path[len(root) :] or "/"
        if path.startswith(RESERVED_PREFIX) or path in HOST_PATHS:
            await host.internal(scope, receive, send)
        elif host.state != "ready":
            await not_ready(host, send)
        elif path in UNLIMITED_PATHS:
            await host.chute(scope, receive, send)
        else:
            await serve_request(host, scope, receive, send, path)
    elif kind == "websocket":
        if host.state != "ready":
            await send({"type": "websocket.close", "code": 1013, "reason": "not ready"})
            return
        await host.chute(scope, receive, send)
    elif kind == "lifespan":
        await lifespan(host, receive, send)


async def serve_request(host: Host, scope: Scope, receive: Receive, send: Send, path: str) -> None:
    """One request to the chute: the cap, the request id, the metrics."""
    if host.in_flight >= host.limit:
        host.metrics.rejected["concurrency"] += 1
        await send_json(
            send,
            429,
            {"detail": f"too many requests: this chute serves {host.limit} at a time"},
            extra=[(b"retry-after", b"1")],
        )
        return
    request_id = _request_id(scope)
    token = logs.request_id.set(request_id)
    stats = host.cord_stats.get(path) or host.metrics.cord("other")
    status = 0  # until the response starts
    header = (b"x-request-id", request_id.encode())

    async def send_wrapper(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    host.in_flight += 1
    stats.in_flight += 1
    began = time.perf_counter()
    forward = host.direct.get((scope["method"], path)) if host.direct else None
    try:
        if forward is not None:
            # The same handler FastAPI would call (see routes.mount_cords), minus the routing.
            response = await forward(Request(scope, receive))
            await response(scope, receive, send_wrapper)
        else:
            await host.chute(scope, receive, send_wrapper)
    except Exception as exc:
        # The chute's app has sent its 500 (see routes.server_error); a forwarded
        # response can only fail here once started. Keep the log to one entry.
        log.exception("request to %s failed", path)
        if forward is not None and not status:
            await error_response(500, f"{type(exc).__name__}: {exc}")(scope, receive, send_wrapper)
    finally:
        host.in_flight -= 1
        stats.in_flight -= 1
        stats.finished(status or 500, time.perf_counter() - began)
        logs.request_id.reset(token)


async def not_ready(host: Host, send: Send) -> None:
    host.metrics.rejected["not_ready"] += 1
    detail = {"detail": f"not ready: {host.unready_reason or host.state}"}
    await send_json(send, 503, detail, extra=[(b"retry-after", b"5")])


# Request ids: unique per process (a random prefix) and cheap (a counter).
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= 128 and value.isascii():
                return str(value.decode())
            break
    return f"{_ID_PREFIX}{next(_ids):08x}"


async def send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """A whole JSON response, straight onto ASGI (no Starlette objects on hot refusals)."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
