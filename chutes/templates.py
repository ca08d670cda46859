"""``from chutes.templates import build_vllm_chute``: every installed builder by name.

The chutes API reference imports templates this way; the documented home is
``chutes.chute.template.<name>``, and this module only looks builders up there.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from chutes_core.plugins import get_plugin_manager

    for template in get_plugin_manager().templates:
        if template.builder.__name__ == name:
            return template.builder
    if name.startswith("build_") and name.endswith("_chute"):
        from chutes_core.templates import get_template

        get_template(name[len("build_") : -len("_chute")])  # raises "pip install ..."
    raise AttributeError(f"module 'chutes.templates' has no attribute {name!r}")
