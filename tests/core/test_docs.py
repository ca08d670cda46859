"""The plugin guide stays true to the hook specs."""

from __future__ import annotations

import inspect
from pathlib import Path

from chutes_core import hookspecs

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
SPECS = {
    name: fn
    for name, fn in vars(hookspecs).items()
    if callable(fn) and getattr(fn, "chutes_spec", None) is not None
}


def test_the_guide_lists_every_hook_with_its_summary() -> None:
    for name, fn in SPECS.items():
        summary = inspect.getdoc(fn).splitlines()[0]
        assert f"- **{name}**: {summary}" in GUIDE, f"docs/plugins.md is out of date for {name}"
        assert f"`{name}(" in GUIDE, f"docs/plugins.md has no table row for {name}"


def test_the_guide_shows_hook_arguments_as_the_spec_defines_them() -> None:
    for name, fn in SPECS.items():
        arguments = ", ".join(inspect.signature(fn).parameters)
        assert f"`{name}({arguments})`" in GUIDE, f"{name}({arguments}) is not in docs/plugins.md"
