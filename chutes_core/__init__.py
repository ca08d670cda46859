"""chutes_core: the SDK, the plugin contract and plugin discovery.

Importing this package is cheap: the SDK classes are loaded on first access,
and no engine (torch, transformers, vLLM, diffusers) is ever imported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chutes_core.hookspecs import hookimpl

__version__ = "0.1.0"

_LAZY = {
    "Chute": "chutes_core.chute",
    "ChutePack": "chutes_core.chute",
    "ChuteConfig": "chutes_core.chute",
    "Cord": "chutes_core.cord",
    "Job": "chutes_core.cord",
    "LifecycleHook": "chutes_core.cord",
    "Image": "chutes_core.image",
    "NodeSelector": "chutes_core.node_selector",
    "UpstreamRequest": "chutes_core.passthrough",
    "get_plugin_manager": "chutes_core.plugins",
    "get_template": "chutes_core.templates",
    "get_kernel": "chutes_core.kernels",
    "OpenAIServerEngine": "chutes_core.engines.process",
}

__all__ = [
    "Chute",
    "ChuteConfig",
    "ChutePack",
    "Cord",
    "Image",
    "Job",
    "LifecycleHook",
    "NodeSelector",
    "OpenAIServerEngine",
    "UpstreamRequest",
    "__version__",
    "get_kernel",
    "get_plugin_manager",
    "get_template",
    "hookimpl",
]

if TYPE_CHECKING:
    from chutes_core.chute import Chute, ChuteConfig, ChutePack
    from chutes_core.cord import Cord, Job, LifecycleHook
    from chutes_core.engines.process import OpenAIServerEngine
    from chutes_core.image import Image
    from chutes_core.kernels import get_kernel
    from chutes_core.node_selector import NodeSelector
    from chutes_core.passthrough import UpstreamRequest
    from chutes_core.plugins import get_plugin_manager
    from chutes_core.templates import get_template


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chutes_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
