"""chutes_testing: the one testing kit, for chute and plugin authors.

Everything a plugin's own test suite needs, in one place:

- :class:`ChuteClient` serves a chute in process (startup and shutdown
  included) behind an ``httpx.AsyncClient``; no port is opened.
- :func:`run_chute` runs a real ``chutes run`` in a subprocess, on a free
  loopback port or the one you give, until the block ends.
- The conformance checks (:func:`check_plugin`, :func:`check_template`,
  :func:`check_dockerfile`, :func:`check_kernel`, ...) raise
  :class:`ConformanceError` with a message that reads well as a failing test.
- :func:`check_openai_api` drives a served OpenAI API with the official
  ``openai`` client; ``chutes_testing.openai_standin`` is a stand-in engine
  for routing tests where a real engine cannot run.
- :func:`build_tiny_llama` writes a tiny random model real engines load, so
  no test downloads anything. Engine-specific builders live with their plugin.

The kit sits above the runtime (it composes the host), so a plugin imports
it from its tests only, never from its own package. Importing it is cheap:
names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "ChuteClient": "chutes_testing.client",
    "RunningChute": "chutes_testing.running",
    "free_port": "chutes_testing.running",
    "run_chute": "chutes_testing.running",
    "write_template_app": "chutes_testing.running",
    "ConformanceError": "chutes_testing.conformance",
    "HEAVY_MODULES": "chutes_testing.conformance",
    "check_dockerfile": "chutes_testing.conformance",
    "check_hook_signatures": "chutes_testing.conformance",
    "check_kernel": "chutes_testing.conformance",
    "check_light_import": "chutes_testing.conformance",
    "check_plugin": "chutes_testing.conformance",
    "check_template": "chutes_testing.conformance",
    "check_openai_api": "chutes_testing.openai_checks",
    "openai_client": "chutes_testing.openai_checks",
    "build_tiny_llama": "chutes_testing.tiny_models",
}

__all__ = [
    "HEAVY_MODULES",
    "ChuteClient",
    "ConformanceError",
    "RunningChute",
    "build_tiny_llama",
    "check_dockerfile",
    "check_hook_signatures",
    "check_kernel",
    "check_light_import",
    "check_openai_api",
    "check_plugin",
    "check_template",
    "free_port",
    "openai_client",
    "run_chute",
    "write_template_app",
]

if TYPE_CHECKING:
    from chutes_testing.client import ChuteClient
    from chutes_testing.conformance import (
        HEAVY_MODULES,
        ConformanceError,
        check_dockerfile,
        check_hook_signatures,
        check_kernel,
        check_light_import,
        check_plugin,
        check_template,
    )
    from chutes_testing.openai_checks import check_openai_api, openai_client
    from chutes_testing.running import RunningChute, free_port, run_chute, write_template_app
    from chutes_testing.tiny_models import build_tiny_llama


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chutes_testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
