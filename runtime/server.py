"""Serving with uvicorn: ``chutes run``, signals, and the event loop.

SIGTERM or SIGINT turns the host unready and starts a graceful drain
(``CHUTES_GRACE_SECONDS``, 30 by default); the process then exits with the
host's exit code (uvicorn would re-raise the signal, killing the process).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from chutes_core.chute import Chute
from chutes_core.refs import RefError, load_ref
from chutes_runtime import egress, logs, netns
from chutes_runtime.coalesce import coalescing
from chutes_runtime.host import Host
from chutes_runtime.limits import header_deadline
from chutes_runtime.warmup import attach_display

__all__ = ["event_loop", "serve", "serve_ref"]

log = logging.getLogger("chutes.runtime")

#: Serve beyond loopback with no authentication (as ``--no-auth`` does).
NO_AUTH_ENV = "CHUTES_NO_AUTH"


def serve(
    chute: Chute,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dev: bool = False,
    log_level: str | None = None,
    sock: socket.socket | None = None,
    handed_back: bool = False,
    no_auth: bool = False,
) -> int:
    """Serve until stopped; returns the process exit code.

    ``sock``: the listening socket, bound already (by the namespace supervisor).
    ``handed_back``: the host in the namespace found egress allowed; refuse if
    this process finds otherwise.

    In production mode on an address beyond loopback, serving with no
    authentication configured needs ``no_auth`` (``--no-auth``, or
    ``CHUTES_NO_AUTH=1``): otherwise anyone reaching the port would get the
    chute, and its engine, for free.
    """
    import uvicorn

    try:
        app = Host(chute, dev=dev, wait_for_startup=False)
    except ValueError as exc:  # a limit or an auth setting that makes no sense
        log.error("configuration: %s", exc)
        return 2
    no_auth = no_auth or os.environ.get(NO_AUTH_ENV, "").strip().lower() in {"1", "true", "yes"}
    if app.auth.mode == "none" and not dev and not no_auth and not is_loopback(host):
        log.error(
            "refusing to serve on %s with no authentication: set CHUTES_API_KEYS (bearer "
            "keys) or CHUTES_SIGNATURE_KEYS (Ed25519 public keys for signed requests), "
            "or pass --no-auth to serve anyone who reaches the port (see docs/security.md)",
            host,
        )
        return 2
    app.address = f"http://{host}:{port}"
    try:
        allowed = app.decide_egress()
    except Exception as exc:  # plugins that conflict, or fail under CHUTES_STRICT_PLUGINS
        log.error("startup failed: %s", exc)
        return 1
    if allowed and netns.status.active:
        netns.hand_back()
        return int(netns.HANDED_BACK)
    if handed_back and not allowed:
        log.error("refusing to serve: the chute was handed back as allowed egress but is locked")
        return 1
    if allowed:
        egress.stand_down()
    loop = event_loop(allowed, kernel_layer=netns.status.active)
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
        # h11's cap on an incomplete request head (uvicorn's httptools has its own).
        h11_max_incomplete_event_size=app.limits.max_header_bytes,
        # uvicorn has no deadline for a request head: this protocol adds one (408);
        # under load, its writes leave at the end of the loop's turn (coalesce).
        http=header_deadline(app.limits.header_timeout, base=coalescing()),
        log_level=(log_level or "info").lower(),
    )
    server = _draining_server(config, app)
    app.attach_server(server)
    attach_display(app.warmup)  # Rich bars on a terminal, log lines in a pipe
    log.info(
        "chute %s/%s on http://%s:%d (%s mode)",
        chute.username,
        chute.name,
        host,
        port,
        "dev" if dev else "production",
    )
    log.info("authentication: %s", app.auth.mode)
    server.run(sockets=[sock] if sock is not None else None)
    if app.exit_code:
        return int(app.exit_code)
    if not server.started:
        return 1
    return 0


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_ref(
    ref: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dev: bool = False,
    no_auth: bool = False,
) -> int:
    """``chutes run``: load the reference and serve it; returns the exit code.

    Outside dev mode the chute runs in its own network namespace where the
    machine allows (:mod:`chutes_runtime.netns`): this process supervises, a
    child serves. ``no_auth`` reaches the child as ``CHUTES_NO_AUTH=1``.
    """
    if no_auth:
        os.environ[NO_AUTH_ENV] = "1"
    logs.configure()
    try:
        mode = netns.mode()
    except ValueError as exc:
        print(f"chutes run: {exc}", file=sys.stderr)
        return 2
    if not dev and mode != "off" and not netns.inside():
        return int(
            netns.supervise(
                ref,
                host,
                port,
                lambda sock: _load_and_serve(ref, host, port, sock=sock, handed_back=True),
            )
        )
    sock = None
    if netns.inside():
        sock = netns.enter()
        if netns.status.active:
            log.debug("egress: the chute runs in its own network namespace (%s)", netns.status.how)
        elif mode == "require":
            log.error(
                "refusing to start: %s=require, but no network namespace can be had: %s",
                netns.ISOLATION_ENV,
                netns.status.reason,
            )
            return 1
        else:
            log.warning(
                "egress: NO network namespace layer (%s); continuing with the seccomp and audit "
                "layers only (set %s=require to refuse instead)",
                netns.status.reason,
                netns.ISOLATION_ENV,
            )
    if not dev:
        egress.prepare()  # before the import, so children started at import are covered too
    return _load_and_serve(ref, host, port, dev=dev, sock=sock)


def _load_and_serve(
    ref: str,
    host: str,
    port: int,
    *,
    dev: bool = False,
    sock: socket.socket | None = None,
    handed_back: bool = False,
) -> int:
    try:
        chute = load_ref(ref)
    except RefError as exc:
        print(f"chutes run: {exc}", file=sys.stderr)
        return 2
    return serve(chute, host=host, port=port, dev=dev, sock=sock, handed_back=handed_back)


def event_loop(egress_allowed: bool, kernel_layer: bool = False) -> str:
    """The uvicorn event loop for a chute with this egress policy.

    uvloop opens connections in C, out of sight of the audit hooks, so a chute
    whose egress will be locked runs on asyncio's own, unless it runs in its own
    network namespace (``kernel_layer``): the kernel then refuses what uvloop
    would open, and uvloop's cheaper I/O is worth having on every relayed chunk.
    """
    return "auto" if egress_allowed or kernel_layer else "asyncio"


def _draining_server(config: Any, host: Host) -> Any:
    """uvicorn's server, with SIGTERM/SIGINT turning the host unready before the drain."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                log.info("received %s: draining in-flight requests", signal.Signals(sig).name)
                host.set_unready("shutting down")
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(config)
