"""ASGI dispatch: where each request to the host goes, and on what terms.

Liveness and readiness (and their Open Inference Protocol aliases,
``/v2/health/*``) are answered at once. Every other request is tagged
with a request id (``x-request-id``, the caller's if it is short and safe),
then, in order: its headers are checked (431), its whole body is read within
the limits (413, 408; see :mod:`chutes_runtime.limits`), the caller is
authenticated (401; :mod:`chutes_runtime.auth`) and JSON that could not be
answered is refused (400). Only then does it reach ``/_chutes/*``, or, once
the host is ready (503 before), take a concurrency slot (429 beyond the cap).
A client that leaves cancels its work (:mod:`chutes_runtime.disconnect`);
it is counted as status 499. Passthrough routes are forwarded straight to
their handler when the chute has no middleware; a plain cord with a JSON body
is served by the host itself with FastAPI's semantics
(:mod:`chutes_runtime.direct`); everything else goes to the chute's FastAPI
app.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from chutes_runtime import logs
from chutes_runtime.auth import OPEN_PATHS, AuthError
from chutes_runtime.direct import JSON_TYPES
from chutes_runtime.disconnect import Replay, Watcher
from chutes_runtime.lifespan import lifespan
from chutes_runtime.limits import BodyRefused, check_headers, has_body, read_body, unanswerable_json
from chutes_runtime.passthrough import error_response
from chutes_runtime.routes import RESERVED_PREFIX

if TYPE_CHECKING:
    from chutes_runtime.host import Host

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("chutes.runtime")

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
        if path in OPEN_PATHS:
            await host.internal(scope, receive, send)
        else:
            await serve_request(host, scope, receive, send, path)
    elif kind == "websocket":
        await serve_websocket(host, scope, receive, send)
    elif kind == "lifespan":
        await lifespan(host, receive, send)


async def serve_request(host: Host, scope: Scope, receive: Receive, send: Send, path: str) -> None:
    """One request: limits, authentication, then the cap, cancellation and the metrics."""
    request_id = _request_id(scope)
    token = logs.request_id.set(request_id)
    try:
        await _serve(host, scope, receive, send, path, request_id)
    finally:
        logs.request_id.reset(token)


async def _serve(
    host: Host, scope: Scope, receive: Receive, send: Send, path: str, request_id: str
) -> None:
    header = (b"x-request-id", request_id.encode())
    headers = scope["headers"]
    limits = host.limits
    refusal = check_headers(headers, limits)
    if refusal is not None:
        return await refuse(host, send, 431, refusal, header, close=True)
    body = b""
    declared = has_body(headers)
    if declared is not None:
        max_bytes = host.body_limits.get(path, limits.max_body_bytes)
        try:
            body = await read_body(receive, declared, max_bytes, limits.body_timeout)
        except BodyRefused as exc:
            if exc.status:
                await refuse(host, send, exc.status, exc.detail, header, close=True)
            else:
                host.metrics.rejected["client_left"] += 1
            return
    if host.auth.mode != "none":
        try:
            host.auth.check(scope, body)
        except AuthError as exc:
            extra = (b"www-authenticate", _CHALLENGE[host.auth.mode])
            return await refuse(host, send, 401, str(exc), header, extra)
    content_type = _content_type(headers) if body else None
    if content_type is not None and b"json" in content_type:
        problem = unanswerable_json(body)
        if problem is not None:
            return await refuse(host, send, 400, problem, header, reason="bad_input")
    replay = Replay(body)
    if path.startswith(RESERVED_PREFIX):
        await host.internal(scope, replay, send)
        return
    if host.state != "ready":
        return await not_ready(host, send)
    if path in UNLIMITED_PATHS:
        await host.chute(scope, replay, send)
        return
    if host.in_flight >= host.limit:
        return await refuse(host, send, 429, host.busy, header, (b"retry-after", b"1"))
    stats = host.cord_stats.get(path) or host.metrics.cord("other")
    status = 0  # until the response starts
    watcher = Watcher(receive, replay, cancel=path not in host.uncancellable)

    async def send_wrapper(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            message["headers"] = [*message.get("headers", ()), header]
        elif not message.get("more_body", False) and not watcher.left:
            # The whole answer goes out (one for a client that left already, a thread
            # cord's, goes nowhere: that request stays counted as the client leaving).
            watcher.responded = True
        await send(message)

    host.in_flight += 1
    stats.in_flight += 1
    began = time.perf_counter()
    key = (scope["method"], path)
    forward = host.direct.get(key) if host.direct else None
    plain = (
        host.direct_cords.get(key)
        if forward is None
        and host.direct_cords
        and content_type is not None
        and content_type.lower() in JSON_TYPES
        else None
    )
    try:
        if forward is not None:
            # The same handler FastAPI would call (see routes.mount_cords), minus the routing.
            response = await forward(Request(scope, replay))
            await response(scope, replay, send_wrapper)
        elif plain is None or not await plain(scope, body, replay, send_wrapper):
            await host.chute(scope, replay, send_wrapper)
    except asyncio.CancelledError:
        if not watcher.swallow():
            raise
        log.info("%s %s: the client went away; its work was cancelled", scope["method"], path)
    except Exception as exc:
        # The chute's app has sent its 500 (see routes.server_error); a forwarded
        # response can only fail here once started. Keep the log to one entry.
        log.exception("request to %s failed", path)
        if forward is not None and not status and not watcher.left:
            await error_response(500, f"{type(exc).__name__}: {exc}")(scope, replay, send_wrapper)
    finally:
        watcher.stop()
        host.in_flight -= 1
        stats.in_flight -= 1
        if watcher.left and not watcher.responded:
            status = CLIENT_LEFT
        stats.finished(status or 500, time.perf_counter() - began)


async def serve_websocket(host: Host, scope: Scope, receive: Receive, send: Send) -> None:
    """A websocket session: authenticated, and counted against the cap while it lasts."""
    if host.state != "ready":
        await send({"type": "websocket.close", "code": 1013, "reason": "not ready"})
        return
    if host.auth.mode != "none":
        try:
            host.auth.check(scope, b"")
        except AuthError as exc:
            host.metrics.rejected["unauthenticated"] += 1
            await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
            return
    if host.in_flight >= host.limit:
        host.metrics.rejected["concurrency"] += 1
        await send({"type": "websocket.close", "code": 1013, "reason": host.busy[:120]})
        return
    stats = host.cord_stats.get(scope["path"]) or host.metrics.cord("websocket")
    host.in_flight += 1
    stats.in_flight += 1
    began = time.perf_counter()
    try:
        await host.chute(scope, receive, send)
    finally:
        host.in_flight -= 1
        stats.in_flight -= 1
        stats.finished(101, time.perf_counter() - began)


#: The status a request is counted with when its client left before the answer (nginx's).
CLIENT_LEFT = 499
_CHALLENGE = {"bearer": b"Bearer", "signature": b'Signature tag="chutes"'}
_REASONS = {
    401: "unauthenticated",
    408: "body_timeout",
    413: "body_too_large",
    429: "concurrency",
    431: "headers_too_large",
}


def _content_type(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"content-type":
            return value
    return None


async def refuse(
    host: Host,
    send: Send,
    status: int,
    detail: str,
    *extra: tuple[bytes, bytes],
    close: bool = False,
    reason: str | None = None,
) -> None:
    """Answer a request the host will not serve; counted in ``chutes_rejected``.

    ``close``: the body was not read to the end, so the connection cannot be reused.
    """
    host.metrics.rejected[reason or _REASONS[status]] += 1
    headers = [*extra, (b"connection", b"close")] if close else list(extra)
    await send_json(send, status, {"detail": detail}, extra=headers)


async def not_ready(host: Host, send: Send) -> None:
    host.metrics.rejected["not_ready"] += 1
    detail = {"detail": f"not ready: {host.unready_reason or host.state}"}
    await send_json(send, 503, detail, extra=[(b"retry-after", b"5")])


# Request ids: unique per process (a random prefix) and cheap (a counter).
_ID_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)


#: A caller's request id is kept only if it is this short and safe to log.
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def _request_id(scope: Scope) -> str:
    """The caller's ``x-request-id`` if it is short and of a safe character set
    (it goes into log lines verbatim), else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _SAFE_ID.fullmatch(value):
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
