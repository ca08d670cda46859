"""The runtime as the core sees it: the module the ``chutes.runtime`` entry point names.

It satisfies :class:`chutes_core.hosting.Runtime`: ``build_app`` (an ASGI app,
for deploy targets), ``serve`` and ``run_local``.
"""

from __future__ import annotations

from chutes_core.chute import Chute
from chutes_core.plugins import PluginManager
from chutes_runtime.dev import run_local
from chutes_runtime.host import Host
from chutes_runtime.server import serve

__all__ = ["build_app", "run_local", "serve"]


def build_app(chute: Chute, *, dev: bool = False, plugins: PluginManager | None = None) -> Host:
    """The ASGI app serving ``chute``; startup runs in its lifespan (and completes first)."""
    return Host(chute, dev=dev, plugins=plugins, wait_for_startup=True)
