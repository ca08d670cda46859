"""Forwarding passthrough cords to a server on loopback.

Requests go to the engine over pooled keep-alive connections
(:mod:`chutes_runtime.upstream`), each as one write of a head built from
the client's headers as they came and the body the host has read; the
engine's answer is relayed as it arrives. When the client goes away
mid-response the upstream connection is closed, so the engine sees the
disconnect and can abort the work; the same happens when the client leaves
before the engine has answered (the serving task is cancelled, see
:mod:`chutes_runtime.disconnect`), and plugins may add their engine's own
abort (the ``passthrough_abort`` hook). Connecting and each read from the
engine are bounded (504). Upstream errors keep their status and body;
the forwarder's own failures (502 unreachable, 504 timed out, 500 otherwise)
answer ``{"detail": ..., "request_id": ...}``, the shape of a failed cord.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chutes_core.passthrough import UpstreamRequest
from chutes_runtime import logs
from chutes_runtime import upstream as upstream_client
from chutes_runtime.upstream import (
    FRAMING,
    Pool,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    check_header,
    check_target,
    check_value,
    request_head,
)

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.cord import Cord
    from chutes_core.plugins import PluginManager

log = logging.getLogger("chutes.passthrough")

# Headers that describe one connection, not the message (RFC 9110 7.6.1), plus
# those the client sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
#: Not relayed from the engine's response: hop-by-hop, and what the server sets itself.
RESPONSE_SKIP = HOP_BY_HOP | {"date", "server"}
# The client's headers not forwarded, as they come off the wire (lower-cased), so that
# no header is decoded to be dropped: those the engine client sets itself (the framing
# and the connection's; the body goes with the head, its length the host's, so the
# client's expectation of a 100 Continue stays here too), and the proxy credentials.
_HOP_BY_HOP = FRAMING | {b"proxy-authenticate", b"proxy-authorization"}
# The engine's, as they come off the wire, so that none is decoded to be relayed.
_RESPONSE_SKIP = frozenset(name.encode() for name in RESPONSE_SKIP)
#: Seconds to connect to the engine, and to wait for each read from it (504 past them).
CONNECT_TIMEOUT = float(os.environ.get("CHUTES_PASSTHROUGH_CONNECT_TIMEOUT", "10"))
READ_TIMEOUT = float(os.environ.get("CHUTES_PASSTHROUGH_READ_TIMEOUT", "300"))
#: Responses at most this big (by Content-Length) are relayed in one piece.
SMALL_BODY = 256 * 1024


#: The one forwarding path of a cord: FastAPI calls it as the route's endpoint, and
#: the host calls it directly when the chute has no middleware (see dispatch).
Handler = Callable[[Request], Awaitable[Response]]


class Forwarder:
    """Forwards the passthrough cords of one chute, over pooled engine connections."""

    def __init__(self, chute: Chute, plugins: PluginManager) -> None:
        self.chute = chute
        self.plugins = plugins
        self._pools: dict[tuple[str, int], Pool] = {}
        self._handlers: dict[str, Handler] = {}
        # Per-request hooks only when an installed plugin has one: most chutes pay nothing.
        self._adjust = plugins.passthrough if plugins.implementers("passthrough") else None
        self._abort_hook = (
            plugins.passthrough_abort if plugins.implementers("passthrough_abort") else None
        )
        self._aborts: set[asyncio.Future[Any]] = set()

    def pool(self, host: str, port: int) -> Pool:
        """The connections to the engine at ``host``:``port`` (made on first use)."""
        made = self._pools.get((host, port))
        if made is None:
            made = self._pools[host, port] = Pool(host, port)
        return made

    def _abort(self, cord: Cord, upstream: UpstreamRequest) -> None:
        """The client left before the engine answered: closing the connection tells
        most engines; plugins that must do more (an abort endpoint) do it here."""
        if self._abort_hook is None:
            return
        try:
            pending = self._abort_hook(self.chute, cord, upstream, logs.request_id.get())
        except Exception:
            log.exception("the passthrough_abort hook failed")
            return
        for work in pending:
            task = asyncio.ensure_future(work)
            self._aborts.add(task)
            task.add_done_callback(self._abort_done)

    def _abort_done(self, task: asyncio.Future[Any]) -> None:
        self._aborts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("passthrough_abort failed: %s", task.exception())

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def handler(self, cord: Cord) -> Handler:
        """The handler forwarding ``cord``'s requests, made once per cord.

        The headers plugins add (an engine's API key) are resolved here, at
        mount time, as is everything else about the request that does not
        change per request. Whatever fails answers 500 in the same shape as a
        failed cord (``detail`` and ``request_id``), whichever way the request came in.
        """
        made = self._handlers.get(cord.name)
        if made is not None:
            return made
        assert cord.passthrough_port is not None and cord.passthrough_path is not None
        added = {
            name.lower(): value
            for name, value in self.plugins.passthrough_headers(self.chute, cord).items()
        }
        # The engine route's own method: the internal path is always POST, even
        # for a GET route such as /v1/models.
        target = UpstreamRequest(
            method=cord.method, path=cord.passthrough_path, port=cord.passthrough_port
        )
        route = _Route(cord, target, added, self.pool(target.host, target.port))

        async def forward(request: Request) -> Response:
            try:
                return await self._forward(route, request)
            except Exception as exc:
                log.exception("passthrough cord %s failed", cord.name)
                return error_response(
                    500, f"cord {cord.name!r} failed: {type(exc).__name__}: {exc}"
                )

        forward.__name__ = cord.name
        self._handlers[cord.name] = forward
        return forward

    async def _forward(self, route: _Route, request: Request) -> Response:
        scope = request.scope
        cord, target = route.cord, route.target
        hooked = self._adjust is not None or self._abort_hook is not None
        if hooked:
            upstream = route.upstream(scope)
            if self._adjust is not None:
                self._adjust(self.chute, cord, upstream)
                upstream.headers.pop("content-length", None)
            pool = self.pool(upstream.host, upstream.port)
            data = route.head_of(upstream, pool, await _body(upstream.method, request))
        else:
            upstream = target
            pool = route.pool
            data = route.head(scope, await _body(target.method, request))
        timeouts = route.timeouts
        try:
            response = await pool.request(data, *timeouts)
        except asyncio.CancelledError:
            if hooked:
                self._abort(cord, upstream)
            raise
        except UpstreamTimeout as exc:
            return _unavailable(504, cord, upstream, exc)
        except UpstreamUnreachable as exc:
            return _unavailable(502, cord, upstream, exc)
        # The engine's headers as sent, repeated ones (Set-Cookie) included.
        raw_headers: list[tuple[bytes, bytes]] = []
        for name, value in response.headers:
            name = name.lower()
            if name not in _RESPONSE_SKIP:
                raw_headers.append((name, value))
        length = response.length
        if length is not None and length <= SMALL_BODY:
            try:
                whole = await response.read()
            except UpstreamTimeout as exc:  # nothing was answered yet: still the host's to say
                return _unavailable(504, cord, upstream, exc)
            except UpstreamError as exc:
                return _unavailable(502, cord, upstream, exc)
            finally:
                response.close()
            return Relayed(response.status, raw_headers, whole)
        return Relayed(response.status, raw_headers, upstream=response)


async def _body(method: str, request: Request) -> bytes:
    """The body to forward: the one the host has read (within its limits), which goes
    with the request head in one write; none with a GET (an engine would not read it)."""
    if method == "GET":
        return b""
    if method == "HEAD":  # its answer has a length and no body: nothing could frame it
        raise ValueError("a HEAD request cannot be forwarded")
    return await request.body()


class _Route:
    """What forwarding one cord needs, worked out once: the request line's start,
    the headers plugins add (as bytes), the engine's connections and timeouts."""

    __slots__ = (
        "added",
        "added_names",
        "authority",
        "cord",
        "method",
        "path",
        "pool",
        "target",
        "timeouts",
    )

    def __init__(self, cord: Cord, target: UpstreamRequest, added: dict[str, str], pool: Pool):
        self.cord = cord
        self.target = target
        self.pool = pool
        self.method = target.method.encode("latin-1")
        self.path = target.path.encode("latin-1")
        try:
            check_target(self.path)
        except ValueError as exc:
            raise ValueError(f"cord {cord.name!r}: {exc}") from None
        self.added, self.authority = _plugin_headers(_encoded(added), pool.authority)
        # The client's own authorization (say) never reaches the engine when a plugin sets one.
        self.added_names = _HOP_BY_HOP | {name for name, _ in self.added}
        self.timeouts = (
            cord.passthrough_connect_timeout or CONNECT_TIMEOUT,
            cord.passthrough_read_timeout or READ_TIMEOUT,
        )

    def head(self, scope: Any, body: bytes) -> bytes:
        """The whole request: the client's headers as they came, less the hop-by-hop ones."""
        query = scope["query_string"]
        target = self.path + b"?" + query if query else self.path
        skip = self.added_names
        headers: list[tuple[bytes, bytes]] = []
        identity = True
        for name, value in scope["headers"]:
            if name not in skip:
                if name == b"accept-encoding":
                    identity = False
                headers.append((name, value))
        if identity:  # else the engine might compress what the caller never asked to be
            headers.append((b"accept-encoding", b"identity"))
        headers += self.added
        parts = request_head(
            self.method, target, self.authority, headers, _length(self.method, body)
        )
        parts.append(body)
        return b"".join(parts)

    def upstream(self, scope: Any) -> UpstreamRequest:
        """The request as plugins' ``passthrough`` hooks see it (and may change it)."""
        target = self.target
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name not in _HOP_BY_HOP
        }
        headers.setdefault("accept-encoding", "identity")
        headers.update(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in self.added
        )
        query = scope["query_string"].decode("latin-1")
        return UpstreamRequest(
            target.method, target.path, target.port, target.host, query=query, headers=headers
        )

    def head_of(self, upstream: UpstreamRequest, pool: Pool, body: bytes) -> bytes:
        """The whole request as a plugin left it (its headers checked: they are not the client's)."""
        same = (upstream.host, upstream.port) == (self.target.host, self.target.port)
        headers, authority = _plugin_headers(
            _encoded(upstream.headers), self.authority if same else pool.authority
        )
        method = upstream.method.encode("latin-1")
        target = (upstream.path + (f"?{upstream.query}" if upstream.query else "")).encode(
            "latin-1"
        )
        check_target(target)
        parts = request_head(method, target, authority, headers, _length(method, body))
        parts.append(body)
        return b"".join(parts)


def _encoded(headers: dict[str, str]) -> Iterator[tuple[bytes, bytes]]:
    for name, value in headers.items():
        yield name.lower().encode("latin-1"), value.encode("latin-1")


def _plugin_headers(
    pairs: Iterable[tuple[bytes, bytes]], authority: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers a plugin had a hand in, checked (the server parsed only the client's),
    and the authority: a plugin's Host replaces the engine's address there."""
    headers = []
    for name, value in pairs:
        if name == b"host":
            check_value(name, value)
            authority = value
        else:
            check_header(name, value)
            headers.append((name, value))
    return headers, authority


def _length(method: bytes, body: bytes) -> int | None:
    """A body's length to declare: none for GET and HEAD, which forward no body."""
    return None if method in (b"GET", b"HEAD") else len(body)


class Relayed(Response):
    """The engine's answer, straight onto ASGI: the head as the engine sent it, then
    its body in one piece, or each read from the engine as it comes (an SSE event as
    soon as it is there; whatever arrived meanwhile goes out in one write).

    Leaner than Starlette's ``StreamingResponse`` (no task group, no watcher of its
    own): the host's watcher (:mod:`chutes_runtime.disconnect`) cancels a request
    whose client left, and the upstream connection is then closed, so the engine
    stops too.
    """

    def __init__(
        self,
        status: int,
        raw_headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        upstream: upstream_client.Response | None = None,
    ) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.body = body
        self.upstream = upstream
        self.background = None  # FastAPI may attach its background tasks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        upstream = self.upstream
        if upstream is None:
            await send(start)
            await send({"type": "http.response.body", "body": self.body})
        else:
            try:
                await send(start)
                async for chunk in upstream.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                # On completion nothing is left to do; when the client left (the task
                # is cancelled) or the engine broke off, the connection is dropped, so
                # the engine stops.
                upstream.close()
        if self.background is not None:
            await self.background()


def _unavailable(status: int, cord: Cord, upstream: UpstreamRequest, exc: Exception) -> Response:
    log.warning("passthrough %s -> %s failed: %s", cord.name, upstream.url, exc)
    reason = "timed out" if status == 504 else "is not reachable"
    return error_response(
        status, f"upstream for cord {cord.name!r} on port {upstream.port} {reason}: {exc}"
    )


def error_response(status: int, detail: str) -> Response:
    """The body of every forwarding failure: the cause and the request id."""
    return JSONResponse({"detail": detail, "request_id": logs.request_id.get()}, status)
