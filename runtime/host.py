"""The host: composes the installed plugins around a chute and serves it.

Startup, in order (each step is logged):

1. discover plugins;
2. resolve the egress policy (the chute's own setting, else the first plugin
   answer, else allowed);
3. run the startup hooks, the plugins' and the chute's, in priority order;
4. collect the cords plugins declare;
5. mount the routes;
6. lock egress when the policy forbids it;
7. report ready.

The host is an ASGI app wrapped around the chute's own FastAPI app. It serves
``/_chutes/live``, ``/_chutes/ready``, ``/_chutes/metrics`` and the job
endpoints itself, enforces the concurrency cap (429 beyond it), counts
metrics and tags each request with an id. Under ``chutes run`` the port is
bound first and startup runs in the background, so liveness answers while a
model downloads; cords answer 503 until ready.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chutes_core.chute import Chute
from chutes_core.cord import Cord, LifecycleHook
from chutes_core.plugins import PluginManager, get_plugin_manager
from chutes_core.refs import RefError, load_ref
from chutes_runtime import egress, logs
from chutes_runtime.jobs import JobRunner
from chutes_runtime.metrics import CONTENT_TYPE_LATEST, CordStats, Metrics
from chutes_runtime.passthrough import Forwarder
from chutes_runtime.routes import RESERVED_PREFIX, cord_routes, mount_cords, mount_websockets

__all__ = ["Host", "build_app", "run_local", "serve", "serve_ref"]

log = logging.getLogger("chutes.runtime")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UNLIMITED_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
STEPS = 7


class StartupError(Exception):
    """A startup step failed; the message names the hook or step."""


class Host:
    """Serves one chute. Implements :class:`chutes_core.host.HostControl`."""

    def __init__(
        self,
        chute: Chute,
        *,
        dev: bool = False,
        plugins: PluginManager | None = None,
        wait_for_startup: bool = True,
    ) -> None:
        self.chute = chute
        self.dev = dev
        self.wait_for_startup = wait_for_startup
        self._plugins = plugins
        self.metrics = Metrics()
        self.state = "created"
        self.unready_reason: str | None = "starting"
        self.exit_code = 0
        self.egress_allowed: bool | None = None
        #: Where the host listens, when it knows (for log lines).
        self.address: str | None = None
        self.limit = chute.concurrency
        self.in_flight = 0
        self.cord_paths: dict[str, str] = {}
        self._stats: dict[str, CordStats] = {}
        #: Passthrough routes the host forwards itself, skipping FastAPI's routing.
        self._direct: dict[tuple[str, str], Cord] = {}
        self.forwarder: Forwarder | None = None
        self.jobs = JobRunner(chute, self.metrics)
        self._server: Any = None
        self._startup_task: asyncio.Task[None] | None = None
        self._lifespan: AbstractAsyncContextManager[Any] | None = None
        self._shutdown_done = False
        self._internal = Starlette(
            routes=[
                Route(f"{RESERVED_PREFIX}/live", self._live),
                Route(f"{RESERVED_PREFIX}/ready", self._ready),
                Route(f"{RESERVED_PREFIX}/metrics", self._metrics),
                Route(f"{RESERVED_PREFIX}/jobs", self._list_jobs),
                Route(f"{RESERVED_PREFIX}/jobs/{{name}}", self._trigger_job, methods=["POST"]),
                Route(f"{RESERVED_PREFIX}/jobs/runs/{{run_id}}", self._job_run),
            ]
        )

    @property
    def plugins(self) -> PluginManager:
        if self._plugins is None:
            self._plugins = get_plugin_manager()
        return self._plugins

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # HostControl -------------------------------------------------------------
    def set_unready(self, reason: str) -> None:
        if self.state == "ready":
            self.state = "unready"
        self.unready_reason = reason
        self.metrics.ready = False
        log.warning("not ready: %s", reason)

    def request_exit(self, code: int, reason: str) -> None:
        self.exit_code = self.exit_code or code
        log.warning("exiting with code %d: %s", code, reason)
        if self._server is not None:
            self._server.should_exit = True

    def attach_server(self, server: Any) -> None:
        """Give the host the uvicorn server it runs in, so it can stop it."""
        self._server = server

    # Lifecycle ---------------------------------------------------------------
    async def startup(self) -> None:
        """Run the startup steps; raises :class:`StartupError` after cleaning up."""
        self.state = "starting"
        chute = self.chute
        started = time.perf_counter()
        try:
            step = _Steps()
            with step("discovering plugins"):
                plugins = self.plugins.load()
                log.info(
                    "plugins: %s%s",
                    ", ".join(plugins.names) or "none",
                    f" ({len(plugins.failures)} failed to load)" if plugins.failures else "",
                )
            with step("resolving the egress policy"):
                self.egress_allowed = chute.egress_allowed = plugins.egress_policy(chute)
                log.info(
                    "external egress %s (decided by %s)",
                    "allowed" if self.egress_allowed else "locked after startup",
                    plugins.egress_source(chute),
                )
                if not self.egress_allowed:
                    egress.prepare()
            chute.hosted = True
            chute.runtime = self
            hooks = sorted(
                [*plugins.startup_hooks(chute), *chute.startup_hooks], key=lambda h: h.priority
            )
            with step(f"running {len(hooks)} startup hook(s)"):
                self._lifespan = chute.router.lifespan_context(chute)
                await self._lifespan.__aenter__()
                for hook in hooks:
                    await self._run_hook(hook, "startup")
            with step("collecting declared cords"):
                for cord in plugins.declare_cords(chute):
                    chute.add_cord(cord)
            with step("mounting routes"):
                self.forwarder = Forwarder(chute, plugins)
                self.cord_paths = mount_cords(
                    chute, chute.cords, dev=self.dev, forwarder=self.forwarder
                )
                mount_websockets(chute, chute.websockets)
                if Exception not in chute.exception_handlers:
                    chute.add_exception_handler(Exception, _server_error)
                self._stats = {
                    path: self.metrics.cord(name) for path, name in self.cord_paths.items()
                }
                if not chute.user_middleware:  # no middleware of the user's to honour
                    self._direct = _direct_routes(chute.cords, dev=self.dev)
                mode = "dev: public paths" if self.dev else "public and internal paths"
                log.info("%d cord(s), %d job(s) (%s)", len(chute.cords), len(chute.jobs), mode)
            with step("locking egress" if not self.egress_allowed else "egress stays open"):
                if not self.egress_allowed:
                    egress.lock()
            self.jobs.start_schedules()
        except Exception as exc:
            self.state = "failed"
            self.unready_reason = f"startup failed: {exc}"
            log.error("startup failed: %s", exc)
            await self.shutdown()
            raise exc if isinstance(exc, StartupError) else StartupError(str(exc)) from exc
        if self.state == "starting":
            self.state = "ready"
            self.unready_reason = None
            self.metrics.ready = True
            where = f", serving on {self.address}" if self.address else ""
            log.info("step 7/%d: ready in %.2fs%s", STEPS, time.perf_counter() - started, where)

    async def _run_hook(self, hook: LifecycleHook, kind: str) -> None:
        log.info("%s hook %s (priority %d)", kind, hook.name, hook.priority)
        began = time.perf_counter()
        try:
            result = hook.fn(self.chute)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            raise StartupError(
                f"{kind} hook {hook.name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("%s hook %s done in %.2fs", kind, hook.fn.__name__, time.perf_counter() - began)

    async def shutdown(self) -> None:
        """Stop jobs, run the shutdown hooks (each failure logged), release resources."""
        if self._shutdown_done:
            return
        self._shutdown_done = True
        if self.state != "failed":
            self.state = "stopping"
        self.metrics.ready = False
        task = self._startup_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.jobs.stop()
        for hook in sorted(self.chute.shutdown_hooks, key=lambda h: h.priority):
            try:
                await self._run_hook(hook, "shutdown")
            except StartupError as exc:
                log.error("%s", str(exc).replace("startup", "shutdown", 1))
        if self._lifespan is not None:
            try:
                await self._lifespan.__aexit__(None, None, None)
            except Exception:
                log.exception("the chute's own lifespan failed to close")
        if self.forwarder is not None:
            await self.forwarder.close()
        self.chute.hosted = False
        self.chute.runtime = None
        egress.unlock()
        if self.state != "failed":
            self.state = "stopped"
        log.info("stopped")

    async def _background_startup(self) -> None:
        try:
            await self.startup()
        except StartupError:
            self.request_exit(1, "startup failed")
        except asyncio.CancelledError:
            pass

    # ASGI --------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):  # mounted under a prefix (Ray Serve, a proxy)
                path = path[len(root) :] or "/"
            if path.startswith(RESERVED_PREFIX):
                await self._internal(scope, receive, send)
            elif self.state != "ready":
                await self._not_ready(scope, receive, send)
            elif path in UNLIMITED_PATHS:
                await self.chute(scope, receive, send)
            else:
                await self._serve(scope, receive, send, path)
        elif kind == "websocket":
            if self.state != "ready":
                await send({"type": "websocket.close", "code": 1013, "reason": "not ready"})
                return
            await self.chute(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan_protocol(receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if self.in_flight >= self.limit:
            self.metrics.rejected["concurrency"] += 1
            await _send_json(
                send,
                429,
                {"detail": f"too many requests: this chute serves {self.limit} at a time"},
                extra=[(b"retry-after", b"1")],
            )
            return
        request_id = _request_id(scope)
        token = logs.request_id.set(request_id)
        stats = self._stats.get(path) or self.metrics.cord("other")
        status = 0  # until the response starts
        header = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        self.in_flight += 1
        stats.in_flight += 1
        began = time.perf_counter()
        direct = self._direct.get((scope["method"], path)) if self._direct else None
        try:
            if direct is not None and self.forwarder is not None:
                forwarded = await self.forwarder.forward(direct, Request(scope, receive))
                await forwarded(scope, receive, send_wrapper)
            else:
                await self.chute(scope, receive, send_wrapper)
        except Exception as exc:
            # The chute's app has sent its 500 (see _server_error); keep the log to one entry.
            log.exception("request to %s failed", path)
            if direct is not None and not status:
                await _send_json(send_wrapper, 500, {"detail": f"{type(exc).__name__}: {exc}"})
        finally:
            self.in_flight -= 1
            stats.in_flight -= 1
            stats.finished(status or 500, time.perf_counter() - began)
            logs.request_id.reset(token)

    async def _not_ready(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.rejected["not_ready"] += 1
        detail = {"detail": f"not ready: {self.unready_reason or self.state}"}
        await _send_json(send, 503, detail, extra=[(b"retry-after", b"5")])

    async def _lifespan_protocol(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.wait_for_startup:
                    try:
                        await self.startup()
                    except StartupError as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                else:
                    self._startup_task = asyncio.get_running_loop().create_task(
                        self._background_startup()
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # Internal endpoints --------------------------------------------------------
    async def _live(self, request: Request) -> Response:
        return JSONResponse({"status": "alive", "state": self.state})

    async def _ready(self, request: Request) -> Response:
        if self.state != "ready":
            return JSONResponse(
                {"status": "unready", "state": self.state, "reason": self.unready_reason}, 503
            )
        try:
            health = await self.chute.health_check()
        except Exception as exc:
            health = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        healthy = isinstance(health, dict) and health.get("status", "healthy") == "healthy"
        return JSONResponse({"state": self.state, **health}, 200 if healthy else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def _list_jobs(self, request: Request) -> Response:
        return JSONResponse(
            {
                "jobs": [job.to_dict() for job in self.jobs.jobs.values()],
                "runs": [run.to_dict() for run in self.jobs.runs.values()],
            }
        )

    async def _trigger_job(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.jobs.jobs:
            return JSONResponse(
                {"detail": f"no job named {name!r} (jobs: {', '.join(self.jobs.jobs) or 'none'})"},
                404,
            )
        if self.state != "ready":
            return JSONResponse({"detail": f"not ready: {self.unready_reason}"}, 503)
        body = await request.body()
        try:
            kwargs = (await request.json()) if body else {}
        except ValueError:
            return JSONResponse({"detail": "the job's arguments must be a JSON object"}, 422)
        if not isinstance(kwargs, dict):
            return JSONResponse({"detail": "the job's arguments must be a JSON object"}, 422)
        try:
            inspect.signature(self.jobs.jobs[name].fn).bind(self.chute, **kwargs)
        except TypeError as exc:
            return JSONResponse({"detail": f"job {name!r}: {exc}"}, 422)
        run = self.jobs.trigger(name, kwargs)
        return JSONResponse(
            run.to_dict(), 202, headers={"location": f"{RESERVED_PREFIX}/jobs/runs/{run.id}"}
        )

    async def _job_run(self, request: Request) -> Response:
        run = self.jobs.runs.get(request.path_params["run_id"])
        if run is None:
            return JSONResponse({"detail": "no such job run"}, 404)
        return JSONResponse(run.to_dict())


class _Steps:
    """``with step("..."):`` logs "step n/7: ..." and its duration."""

    def __init__(self) -> None:
        self.number = 0

    def __call__(self, title: str) -> _Step:
        self.number += 1
        return _Step(self.number, title)


class _Step:
    def __init__(self, number: int, title: str) -> None:
        self.number = number
        self.title = title

    def __enter__(self) -> None:
        self.began = time.perf_counter()
        log.info("step %d/%d: %s", self.number, STEPS, self.title)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            log.debug("step %d done in %.2fs", self.number, time.perf_counter() - self.began)


def _direct_routes(cords: list[Cord], *, dev: bool) -> dict[tuple[str, str], Cord]:
    """``(method, path)`` of every passthrough route, as mount_cords mounts them."""
    return {
        (method, path): cord
        for cord in cords
        if cord.passthrough
        for path, method in cord_routes(cord, dev=dev)
    }


async def _server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"detail": f"{type(exc).__name__}: {exc}", "request_id": logs.request_id.get()}, 500
    )


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


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    import json

    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# Entry points ------------------------------------------------------------------
def build_app(chute: Chute, *, dev: bool = False, plugins: PluginManager | None = None) -> Host:
    """The ASGI app serving ``chute``; startup runs in its lifespan (and completes first)."""
    return Host(chute, dev=dev, plugins=plugins, wait_for_startup=True)


def serve(
    chute: Chute,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dev: bool = False,
    log_level: str | None = None,
) -> int:
    """Serve until stopped; returns the process exit code."""
    import uvicorn

    app = Host(chute, dev=dev, wait_for_startup=False)
    app.address = f"http://{host}:{port}"
    try:
        loop = _event_loop(chute, app.plugins)
    except Exception as exc:  # plugins that conflict, or fail under CHUTES_STRICT_PLUGINS
        log.error("startup failed: %s", exc)
        return 1
    grace = int(float(os.environ.get("CHUTES_GRACE_SECONDS", "30")))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=grace,
        log_level=(log_level or "info").lower(),
    )
    server = _Server(config, app)
    app.attach_server(server)
    log.info(
        "chute %s/%s on http://%s:%d (%s mode)",
        chute.username,
        chute.name,
        host,
        port,
        "dev" if dev else "production",
    )
    server.run()
    if app.exit_code:
        return app.exit_code
    if not server.started:
        return 1
    return 0


def _event_loop(chute: Chute, plugins: PluginManager) -> str:
    """The uvicorn event loop to serve ``chute`` on.

    uvloop opens connections in C, out of sight of the audit hooks the egress
    lock relies on, so a chute whose egress will be locked runs on asyncio's own.
    """
    return "auto" if plugins.egress_policy(chute) else "asyncio"


class _Server:
    """uvicorn's server, with SIGTERM/SIGINT starting a graceful drain and the
    process then exiting with the host's exit code (uvicorn would re-raise the
    signal, killing the process with it)."""

    def __new__(cls, config: Any, host: Host) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                if not self.should_exit:
                    log.info("received %s: draining in-flight requests", signal.Signals(sig).name)
                    host.set_unready("shutting down")
                super().handle_exit(sig, frame)

            def capture_signals(self) -> Any:
                import contextlib

                @contextlib.contextmanager
                def capture() -> Any:
                    handled = (signal.SIGINT, signal.SIGTERM)
                    original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
                    try:
                        yield
                    finally:
                        for sig, handler in original.items():
                            signal.signal(sig, handler)

                return capture()

        return Server(config)


def serve_ref(ref: str, *, host: str = "127.0.0.1", port: int = 8000, dev: bool = False) -> int:
    """``chutes run``: load the reference and serve it; returns the exit code."""
    logs.configure()
    try:
        chute = load_ref(ref)
    except RefError as exc:
        print(f"chutes run: {exc}", file=sys.stderr)
        return 2
    return serve(chute, host=host, port=port, dev=dev)


def run_local(chute: Chute, *, host: str, port: int, reload: bool, log_level: str) -> None:
    """``chute.run_local()``: serve in dev mode; with ``reload``, restart on code changes."""
    logs.configure(log_level)
    if reload:
        ref = _ref_of(chute)
        if ref is not None:
            import uvicorn

            os.environ["CHUTES_RELOAD_REF"] = ref
            uvicorn.run(
                "chutes_runtime.host:_reload_factory",
                factory=True,
                host=host,
                port=port,
                loop=_event_loop(chute, get_plugin_manager()),
                reload=True,
                log_config=None,
                log_level=log_level,
            )
            return
        log.warning(
            "reload needs the chute to be a module-level name of a file; serving without it"
        )
    raise SystemExit(serve(chute, host=host, port=port, dev=True, log_level=log_level))


def _ref_of(chute: Chute) -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return None
    for name, value in vars(main).items():
        if value is chute or getattr(value, "chute", None) is chute:
            return f"{path}:{name}"
    return None


def _reload_factory() -> Host:
    chute = load_ref(os.environ["CHUTES_RELOAD_REF"])
    return Host(chute, dev=True, wait_for_startup=False)
