"""The host of one chute: its state, and the controls hooks and engines use.

The host is an ASGI app wrapped around the chute's own FastAPI app. This
module holds what the host *is*; what it *does* lives beside it, one concern
per module:

==================  ============================================================
``lifecycle``       the startup steps and the shutdown
``dispatch``        ASGI dispatch: internal paths, 503 until ready, the
                    concurrency cap (429), request ids, metrics, passthrough
``limits``          header and body limits (431, 413, 408), unanswerable JSON
``auth``            bearer keys or signed requests (401)
``disconnect``      cancelling the work of a client that left (499)
``lifespan``        the ASGI lifespan protocol (startup inline or in background)
``internal``        ``/_chutes/live``, ``ready``, ``metrics`` and the job endpoints
``warmup``          ``/_chutes/warmup`` (the warm-up status), OIP health, the terminal view
``batching``        cords that take a batch: the host gathers requests into batches
``passthrough``     forwarding passthrough cords to an engine
``direct``          plain cords served without FastAPI's per-request machinery
``server``          uvicorn, signals (SIGTERM drains), ``chutes run``
``dev``             ``chute.run_local()`` and code reload
``hosting``         what the core reaches through the ``chutes.runtime`` entry point
==================  ============================================================
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from chutes_core.batching import Batcher
from chutes_core.chute import Chute
from chutes_core.plugins import PluginManager, get_plugin_manager
from chutes_core.progress import Tracker
from chutes_runtime import dispatch, lifecycle
from chutes_runtime.auth import Authenticator
from chutes_runtime.auth import from_env as auth_from_env
from chutes_runtime.batching import BatchMetrics
from chutes_runtime.direct import DirectCord
from chutes_runtime.dispatch import Receive, Scope, Send
from chutes_runtime.internal import internal_app
from chutes_runtime.jobs import JobRunner
from chutes_runtime.limits import Limits
from chutes_runtime.metrics import CordStats, Metrics
from chutes_runtime.passthrough import Forwarder, Handler

__all__ = ["Host"]

log = logging.getLogger("chutes.runtime")


class Host:
    """Serves one chute. Implements :class:`chutes_core.hosting.HostControl`.

    ``wait_for_startup``: run the startup inside the ASGI lifespan (``build_app``,
    the test client) or in the background once the port is bound (``chutes run``,
    so liveness answers while a model downloads).
    """

    def __init__(
        self,
        chute: Chute,
        *,
        dev: bool = False,
        plugins: PluginManager | None = None,
        wait_for_startup: bool = True,
        limits: Limits | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        self.chute = chute
        self.dev = dev
        self.wait_for_startup = wait_for_startup
        self._plugins = plugins
        self.metrics = Metrics()
        self.batch_metrics = BatchMetrics()
        self.metrics.collectors.append(self.batch_metrics)
        #: The batcher of each batched cord, by cord name (made when routes are mounted).
        self.batchers: dict[str, Batcher[Any, Any]] = {}
        #: The warm-up phases startup reports (see :mod:`chutes_core.progress`).
        self.warmup = Tracker()
        #: created -> starting -> ready <-> unready -> stopping -> stopped; or failed.
        self.state = "created"
        self.unready_reason: str | None = "starting"
        self.exit_code = 0
        #: Decided once (see :meth:`decide_egress`); ``None`` until then.
        self.egress_allowed: bool | None = None
        self.egress_source: str | None = None
        #: The egress layers in force once locked, outermost first (``chutes_runtime.netns``).
        self.egress_layers: list[str] = []
        #: Where the host listens, when it knows (for log lines).
        self.address: str | None = None
        self.limit = chute.concurrency
        self.in_flight = 0
        #: Request limits (``CHUTES_MAX_BODY_BYTES`` and the rest, read now).
        self.limits = limits if limits is not None else Limits.from_env()
        #: Who may call (``CHUTES_AUTH`` and the keys, read now).
        self.auth = auth if auth is not None else auth_from_env()
        #: ``{path: max body bytes}`` of the cords with a limit of their own.
        self.body_limits: dict[str, int] = {}
        #: Paths of cords that run in a thread: their work outlives a client that leaves.
        self.uncancellable: set[str] = set()
        #: ``{path: cord name}`` of every mounted cord route.
        self.cord_paths: dict[str, str] = {}
        #: Metrics of each mounted path.
        self.cord_stats: dict[str, CordStats] = {}
        #: ``(method, path)`` -> forwarding handler, for the passthrough routes the
        #: host forwards itself, skipping FastAPI's routing (only when the chute has
        #: no middleware of its own, which that would bypass).
        self.direct: dict[tuple[str, str], Handler] = {}
        #: ``(method, path)`` -> the cord routes the host serves with FastAPI's semantics
        #: but without its per-request machinery (``chutes_runtime.direct``).
        self.direct_cords: dict[tuple[str, str], DirectCord] = {}
        self.forwarder: Forwarder | None = None
        self.jobs = JobRunner(chute, self.metrics)
        self.internal = internal_app(self)
        self.server: Any = None
        self.startup_task: asyncio.Task[None] | None = None
        #: The chute's own FastAPI lifespan, entered during startup.
        self.chute_lifespan: AbstractAsyncContextManager[Any] | None = None
        self.shutdown_done = False

    @property
    def plugins(self) -> PluginManager:
        if self._plugins is None:
            self._plugins = get_plugin_manager()
        return self._plugins

    @property
    def busy(self) -> str:
        return f"too many requests: this chute serves {self.limit} at a time"

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

    def clear_unready(self, reason: str) -> None:
        if self.state == "unready" and self.unready_reason == reason:
            self.state = "ready"
            self.unready_reason = None
            self.metrics.ready = True
            log.info("ready again (was: %s)", reason)

    def request_exit(self, code: int, reason: str) -> None:
        self.exit_code = self.exit_code or code
        log.warning("exiting with code %d: %s", code, reason)
        if self.server is not None:
            self.server.should_exit = True

    def attach_server(self, server: Any) -> None:
        """Give the host the uvicorn server it runs in, so it can stop it."""
        self.server = server

    # Decisions taken once ----------------------------------------------------
    def decide_egress(self) -> bool:
        """Whether the chute may reach beyond loopback after startup, decided once.

        ``serve()`` asks first (the event loop depends on it); startup reuses the answer.
        """
        if self.egress_allowed is None:
            self.egress_allowed, self.egress_source = self.plugins.egress_decision(self.chute)
        return self.egress_allowed

    # What the host does, each in its module ------------------------------------
    async def startup(self) -> None:
        """Run the startup steps; raises :class:`~chutes_runtime.lifecycle.StartupError`."""
        await lifecycle.startup(self)

    async def shutdown(self) -> None:
        """Stop jobs, run the shutdown hooks (each failure logged), release resources."""
        await lifecycle.shutdown(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await dispatch.dispatch(self, scope, receive, send)
