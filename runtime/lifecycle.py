"""The host's startup steps and its shutdown.

Startup, in order (each step is logged):

1. discover plugins;
2. resolve the egress policy (the chute's own setting, else the first plugin
   answer, else allowed), unless ``serve()`` already decided it;
3. run the startup hooks, the plugins' and the chute's, in priority order;
4. collect the cords plugins declare;
5. mount the routes (passthrough headers are resolved here, once per cord);
6. lock egress when the policy forbids it;
7. report ready.

Shutdown stops the jobs, runs every shutdown hook (a failure is logged and the
next one runs), closes the chute's own lifespan and releases what startup took.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

from fastapi.exception_handlers import (
    request_validation_exception_handler as default_validation_error,
)
from fastapi.exceptions import RequestValidationError

from chutes_core import progress
from chutes_core.cord import LifecycleHook
from chutes_runtime import batching, direct, egress, netns
from chutes_runtime.passthrough import Forwarder
from chutes_runtime.routes import (
    cord_routes,
    mount_cords,
    mount_websockets,
    server_error,
    validation_error,
)

if TYPE_CHECKING:
    from chutes_runtime.host import Host

log = logging.getLogger("chutes.runtime")

STEPS = 7


class StartupError(Exception):
    """A startup step failed; the message names the hook or step."""


class ShutdownError(Exception):
    """A shutdown hook failed; the message names the hook. Logged, never fatal."""


async def startup(host: Host) -> None:
    """Run the startup steps; raises :class:`StartupError` after cleaning up."""
    host.state = "starting"
    chute = host.chute
    started = time.perf_counter()
    # Hooks and engines report their phases to this host (see chutes_core.progress).
    token = progress.activate(host.warmup)
    try:
        step = _Steps()
        with step("discovering plugins"):
            plugins = host.plugins.load()
            log.info(
                "plugins: %s%s",
                ", ".join(plugins.names) or "none",
                f" ({len(plugins.failures)} failed to load)" if plugins.failures else "",
            )
        with step("resolving the egress policy"):
            allowed = chute.egress_allowed = host.decide_egress()
            log.info(
                "external egress %s (decided by %s)",
                "allowed" if allowed else "locked after startup",
                host.egress_source,
            )
            if not allowed:
                egress.prepare()
                if netns.status.startup_egress:  # until the lock
                    log.info("egress: startup egress through %s", netns.status.startup_egress)
        chute.hosted = True
        chute.runtime = host
        hooks = sorted(
            [*plugins.startup_hooks(chute), *chute.startup_hooks], key=lambda h: h.priority
        )
        with step(f"running {len(hooks)} startup hook(s)"):
            host.chute_lifespan = chute.router.lifespan_context(chute)
            await host.chute_lifespan.__aenter__()
            for hook in hooks:
                await run_hook(host, hook, "startup")
        with step("collecting declared cords"):
            for cord in plugins.declare_cords(chute):
                chute.add_cord(cord)
        with step("mounting routes"):
            _mount(host)
        with step("locking egress" if not allowed else "egress stays open"):
            if not allowed:
                layers = netns.lock_layers(kernel=host.server is not None)
                host.egress_layers = host.metrics.egress_layers = layers
                log.info("egress locked; layers: %s", ", ".join(layers))
        host.jobs.start_schedules()
    except Exception as exc:
        host.state = "failed"
        host.unready_reason = f"startup failed: {exc}"
        log.error("startup failed: %s", exc)
        running = host.warmup.running
        if running is not None:  # the phase it failed in
            running.fail(exc.__cause__ or exc)
        host.warmup.settle()
        await shutdown(host)
        raise exc if isinstance(exc, StartupError) else StartupError(str(exc)) from exc
    finally:
        progress.deactivate(token)
    if host.state == "starting":
        host.state = "ready"
        host.unready_reason = None
        host.metrics.ready = True
        host.warmup.event("ready")
        host.warmup.settle()
        where = f", serving on {host.address}" if host.address else ""
        log.info("step 7/%d: ready in %.2fs%s", STEPS, time.perf_counter() - started, where)


def _mount(host: Host) -> None:
    chute = host.chute
    host.forwarder = forwarder = Forwarder(chute, host.plugins)
    host.batchers = batching.start_batchers(chute, host.batch_metrics)
    host.cord_paths = mount_cords(
        chute,
        chute.cords,
        dev=host.dev,
        forwarder=forwarder,
        batchers=host.batchers,
        authenticated=host.auth.mode != "none",
    )
    mount_websockets(chute, chute.websockets)
    if Exception not in chute.exception_handlers:
        chute.add_exception_handler(Exception, server_error)
    if chute.exception_handlers.get(RequestValidationError) in (None, default_validation_error):
        chute.add_exception_handler(RequestValidationError, validation_error)
    host.cord_stats = {path: host.metrics.cord(name) for path, name in host.cord_paths.items()}
    for route in chute.websockets:  # sessions show in chutes_in_flight under their name
        host.cord_stats.setdefault(route.path, host.metrics.cord(route.name))
    for cord in chute.cords:
        for path, _ in cord_routes(cord, dev=host.dev):
            if cord.max_body_bytes is not None:
                host.body_limits[path] = cord.max_body_bytes
            if not cord.passthrough and not _cancellable(cord.fn):
                host.uncancellable.add(path)
    if not chute.user_middleware:  # no middleware of the user's to honour
        host.direct = {
            (method, path): forwarder.handler(cord)
            for cord in chute.cords
            if cord.passthrough
            for path, method in cord_routes(cord, dev=host.dev)
        }
    host.direct_cords = direct.plan(chute, chute.cords, dev=host.dev)
    mode = "dev: public paths" if host.dev else "public and internal paths"
    log.info("%d cord(s), %d job(s) (%s)", len(chute.cords), len(chute.jobs), mode)


def _cancellable(fn: Any) -> bool:
    """Whether a cord's work stops when its task is cancelled (not a function run in a thread)."""
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


async def run_hook(host: Host, hook: LifecycleHook, kind: Literal["startup", "shutdown"]) -> None:
    """Run one lifecycle hook; a failure raises :class:`StartupError` or
    :class:`ShutdownError` (by ``kind``), naming the hook."""
    log.info("%s hook %s (priority %d)", kind, hook.name, hook.priority)
    began = time.perf_counter()
    try:
        result = hook.fn(host.chute)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        error = StartupError if kind == "startup" else ShutdownError
        raise error(f"{kind} hook {hook.name} failed: {type(exc).__name__}: {exc}") from exc
    log.info("%s hook %s done in %.2fs", kind, hook.fn.__name__, time.perf_counter() - began)


async def shutdown(host: Host) -> None:
    """Stop jobs, run the shutdown hooks (each failure logged), release resources."""
    if host.shutdown_done:
        return
    host.shutdown_done = True
    if host.state != "failed":
        host.state = "stopping"
    host.metrics.ready = False
    task = host.startup_task
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await host.jobs.stop()
    for hook in sorted(host.chute.shutdown_hooks, key=lambda h: h.priority):
        try:
            await run_hook(host, hook, "shutdown")
        except ShutdownError as exc:
            log.error("%s", exc)
    if host.chute_lifespan is not None:
        try:
            await host.chute_lifespan.__aexit__(None, None, None)
        except Exception:
            log.exception("the chute's own lifespan failed to close")
    await batching.stop_batchers(host.batchers)
    if host.forwarder is not None:
        await host.forwarder.close()
    host.chute.hosted = False
    host.chute.runtime = None
    egress.unlock()
    if host.state != "failed":
        host.state = "stopped"
    log.info("stopped")


async def background_startup(host: Host) -> None:
    """Startup after the port is bound (``chutes run``): a failure exits with 1."""
    try:
        await startup(host)
    except StartupError:
        host.request_exit(1, "startup failed")
    except asyncio.CancelledError:
        pass


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
