"""The host, as the core sees it: how to reach it, and what it lets hooks control.

Dependencies run one way: the runtime imports the core, never the reverse.
Yet the SDK has to serve a chute (``Chute.run_local()``) and deploy targets
have to build the ASGI app a replica serves. Both ask :func:`get_runtime`,
which finds the installed host through the ``chutes.runtime`` entry-point
group (the ``chutes`` distribution names ``chutes_runtime.hosting``). A plugin
that needs the app calls ``get_runtime().build_app(chute)``; it never
imports ``chutes_runtime``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Protocol, cast

from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    from chutes_core.chute import Chute

ENTRY_POINT_GROUP = "chutes.runtime"
DEFAULT = "default"


class Runtime(Protocol):
    """What the host offers the core and plugins (a module satisfies it)."""

    def build_app(self, chute: Chute, *, dev: bool = False) -> Any:
        """The ASGI app that serves ``chute``; its lifespan runs the startup."""

    def serve(
        self,
        chute: Chute,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        dev: bool = False,
        log_level: str | None = None,
    ) -> int:
        """Serve ``chute`` with uvicorn until stopped; returns the exit code."""

    def run_local(
        self, chute: Chute, *, host: str, port: int, reload: bool, log_level: str
    ) -> None:
        """``Chute.run_local()``: serve in dev mode, restarting on code changes."""


class HostControl(Protocol):
    """What a running host lets plugins and hooks control.

    The host sets ``chute.runtime`` to an object with these methods while it
    serves the chute; outside a host it is ``None``. Engine drivers use it to
    report that the engine died: the host turns unready, drains, and exits
    with the given code. Hooks read ``address`` to tell users where to send
    requests.
    """

    #: Where the host listens (``http://127.0.0.1:8000``), or ``None`` when it
    #: listens on no socket (the in-process test client).
    address: str | None

    def set_unready(self, reason: str) -> None:
        """Answer readiness probes with "not ready" from now on, with ``reason``."""

    def clear_unready(self, reason: str) -> None:
        """Ready again, if ``reason`` (given to :meth:`set_unready`) is still why it is not."""

    def request_exit(self, code: int, reason: str) -> None:
        """Stop serving (gracefully: in-flight requests finish) and exit with ``code``."""


class RuntimeMissing(ChutesError):
    """No runtime host is installed."""


@functools.cache
def get_runtime(name: str = DEFAULT) -> Runtime:
    """The runtime host registered as ``name`` in the ``chutes.runtime`` group."""
    from stevedore import DriverManager
    from stevedore.exception import NoMatches

    try:
        manager: DriverManager[Runtime] = DriverManager(
            ENTRY_POINT_GROUP, name, invoke_on_load=False
        )
    except NoMatches:
        raise RuntimeMissing(
            f"no chutes runtime named {name!r} is installed (entry-point group "
            f"{ENTRY_POINT_GROUP!r}); reinstall the 'chutes' distribution"
        ) from None
    # invoke_on_load=False: the driver is the module the entry point names.
    return cast("Runtime", manager.driver)
