"""Dev mode: ``chute.run_local()``, with uvicorn's code reload when asked."""

from __future__ import annotations

import logging
import os
import sys

from chutes_core.chute import Chute
from chutes_core.plugins import get_plugin_manager
from chutes_core.refs import load_ref
from chutes_runtime import logs
from chutes_runtime.host import Host
from chutes_runtime.server import event_loop, serve

__all__ = ["run_local"]

log = logging.getLogger("chutes.runtime")

RELOAD_REF = "CHUTES_RELOAD_REF"


def run_local(chute: Chute, *, host: str, port: int, reload: bool, log_level: str) -> None:
    """``chute.run_local()``: serve in dev mode; with ``reload``, restart on code changes."""
    logs.configure(log_level)
    if reload:
        ref = _ref_of(chute)
        if ref is not None:
            import uvicorn

            os.environ[RELOAD_REF] = ref
            uvicorn.run(
                f"{__name__}:reload_factory",
                factory=True,
                host=host,
                port=port,
                # The reloaded worker is another process: its startup decides for itself.
                loop=event_loop(get_plugin_manager().egress_policy(chute)),
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
    """``path/to/file.py:name`` of ``chute`` in the ``__main__`` module, if it is there."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return None
    for name, value in vars(main).items():
        if value is chute or getattr(value, "chute", None) is chute:
            return f"{path}:{name}"
    return None


def reload_factory() -> Host:
    """What uvicorn's reloaded worker serves: the chute named in ``CHUTES_RELOAD_REF``."""
    chute = load_ref(os.environ[RELOAD_REF])
    return Host(chute, dev=True, wait_for_startup=False)
