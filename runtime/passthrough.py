"""Forwarding passthrough cords to a server on loopback.

One pooled aiohttp client session per host (its connection pool stays cheap
per request however many connections are open, unlike httpx's). Request and
response bodies are streamed in both directions; when the client goes away
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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chutes_core.passthrough import UpstreamRequest
from chutes_runtime import logs

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

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
# The same, as they come off the wire (lower-cased), so that no header is decoded to be
# dropped, nor the engine's decoded to be relayed.
_HOP_BY_HOP = frozenset(name.encode() for name in HOP_BY_HOP) | {b"content-length"}
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
    """Forwards the passthrough cords of one chute, over one pooled client session."""

    def __init__(self, chute: Chute, plugins: PluginManager) -> None:
        self.chute = chute
        self.plugins = plugins
        self._session: aiohttp.ClientSession | None = None
        self._handlers: dict[str, Handler] = {}
        # Per-request hooks only when an installed plugin has one: most chutes pay nothing.
        self._adjust = plugins.passthrough if plugins.implementers("passthrough") else None
        self._abort_hook = (
            plugins.passthrough_abort if plugins.implementers("passthrough_abort") else None
        )
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}
        self._aborts: set[asyncio.Future[Any]] = set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp  # only chutes with passthrough cords pay for it

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,  # relay bodies exactly as the engine encoded them
                trust_env=False,
            )
        return self._session

    def _timeout(self, cord: Cord) -> aiohttp.ClientTimeout:
        """Connect and idle-read timeouts of ``cord`` (the cord's own, else the host's)."""
        import aiohttp

        key = cord.name
        made = self._timeouts.get(key)
        if made is None:
            connect = cord.passthrough_connect_timeout or CONNECT_TIMEOUT
            read = cord.passthrough_read_timeout or READ_TIMEOUT
            made = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, sock_connect=connect, sock_read=read
            )
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
        if self._session is not None:
            await self._session.close()
            self._session = None

    def handler(self, cord: Cord) -> Handler:
        """The handler forwarding ``cord``'s requests, made once per cord.

        The headers plugins add (an engine's API key) are resolved here, at
        mount time. Whatever fails answers 500 in the same shape as a failed
        cord (``detail`` and ``request_id``), whichever way the request came in.
        """
        made = self._handlers.get(cord.name)
        if made is not None:
            return made
        assert cord.passthrough_port is not None and cord.passthrough_path is not None
        added = self.plugins.passthrough_headers(self.chute, cord)
        # The engine route's own method: the internal path is always POST, even
        # for a GET route such as /v1/models.
        target = UpstreamRequest(
            method=cord.method, path=cord.passthrough_path, port=cord.passthrough_port
        )
        from yarl import URL  # aiohttp's own; parsed once here, not per request

        url = URL(target.url)

        async def forward(request: Request) -> Response:
            try:
                return await self._forward(cord, target, url, added, request)
            except Exception as exc:
                log.exception("passthrough cord %s failed", cord.name)
                return error_response(
                    500, f"cord {cord.name!r} failed: {type(exc).__name__}: {exc}"
                )

        forward.__name__ = cord.name
        self._handlers[cord.name] = forward
        return forward

    async def _forward(
        self,
        cord: Cord,
        target: UpstreamRequest,
        url: URL,
        added: dict[str, str],
        request: Request,
    ) -> Response:
        import aiohttp

        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in request.scope["headers"]
            if name not in _HOP_BY_HOP
        }
        # Otherwise the client library would ask for gzip the caller never asked for.
        headers.setdefault("accept-encoding", "identity")
        headers.update(added)  # the client's own authorization never reaches the engine
        query = request.scope["query_string"].decode("latin-1")
        upstream = UpstreamRequest(
            target.method, target.path, target.port, query=query, headers=headers
        )
        where: URL | str = url  # parsed at mount time, when nothing changes it
        if self._adjust is not None:
            self._adjust(self.chute, cord, upstream)
            upstream.headers.pop("content-length", None)
            where = upstream.url
        elif query:
            where = upstream.url
        # The host has read the whole body already (within its limits): handing it over
        # as bytes sends it with the request head in one write, with its length.
        body = None
        if upstream.method not in ("GET", "HEAD"):
            body = await request.body()
        try:
            response = await self.session.request(
                upstream.method,
                where,
                headers=upstream.headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(cord),
            )
        except asyncio.CancelledError:
            self._abort(cord, upstream)
            raise
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return _unavailable(504, cord, upstream, exc)
        except aiohttp.ClientError as exc:
            return _unavailable(502, cord, upstream, exc)
        # The engine's headers as sent, repeated ones (Set-Cookie) included.
        raw_headers: list[tuple[bytes, bytes]] = []
        for name, value in response.raw_headers:
            name = name.lower()
            if name not in _RESPONSE_SKIP:
                raw_headers.append((name, value))
        length = response.content_length
        if length is not None and length <= SMALL_BODY:
            try:
                whole = await response.read()
            finally:
                response.release()
            return Relayed(response.status, raw_headers, whole)
        return Relayed(response.status, raw_headers, upstream=response)


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
        upstream: aiohttp.ClientResponse | None = None,
    ) -> None:
        self.status_code = status
        self.raw_headers = raw_headers
        self.body = body
        self.upstream = upstream
        self.background = None  # FastAPI may attach its background tasks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        upstream = self.upstream
        if upstream is None:
            await send({"type": "http.response.body", "body": self.body})
        else:
            try:
                async for chunk in upstream.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            finally:
                # On completion and when the client left (the task is cancelled):
                # closing the upstream connection tells the engine to stop.
                _close(upstream)
        if self.background is not None:
            await self.background()


def _close(response: aiohttp.ClientResponse) -> None:
    if response.content.at_eof():
        response.release()  # the connection goes back to the pool
    else:
        response.close()  # mid-body: drop the connection so the engine notices


def _unavailable(status: int, cord: Cord, upstream: UpstreamRequest, exc: Exception) -> Response:
    log.warning("passthrough %s -> %s failed: %s", cord.name, upstream.url, exc)
    reason = "timed out" if status == 504 else "is not reachable"
    return error_response(
        status, f"upstream for cord {cord.name!r} on port {upstream.port} {reason}: {exc}"
    )


def error_response(status: int, detail: str) -> Response:
    """The body of every forwarding failure: the cause and the request id."""
    return JSONResponse({"detail": detail, "request_id": logs.request_id.get()}, status)
