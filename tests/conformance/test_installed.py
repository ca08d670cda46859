"""Conformance checks run against whatever plugins are installed.

The nox matrix runs this module once per plugin (installed alone with the
core) and once with every plugin installed together. With
``CHUTES_EXPECT_PLUGINS=a,b`` it also checks that exactly those plugins load.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys

import pytest

import chutes_testing as testing
from chutes_core.plugins import PluginManager

MANAGER = PluginManager(strict=False).load()
NAMES = MANAGER.names


def test_expected_plugins_load_without_failures() -> None:
    expected = os.environ.get("CHUTES_EXPECT_PLUGINS")
    if expected is None:
        pytest.skip("CHUTES_EXPECT_PLUGINS is not set for this run")
    result = subprocess.run(
        [sys.executable, "-m", "chutes_cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    document = json.loads(result.stdout)
    assert document["failures"] == []
    listed = sorted(plugin["name"] for plugin in document["plugins"])
    assert listed == sorted(name for name in expected.split(",") if name)
    for plugin in document["plugins"]:
        assert plugin["distribution"], plugin
        assert plugin["hooks"], plugin


@pytest.mark.parametrize(
    "name", NAMES or [pytest.param(None, marks=pytest.mark.skip("no plugins"))]
)
def test_plugin_loads_through_its_entry_point(name: str) -> None:
    info = testing.check_plugin(name)
    assert info.name == name


@pytest.mark.parametrize(
    "template",
    [t.name for t in MANAGER.templates]
    or [pytest.param(None, marks=pytest.mark.skip("no templates"))],
)
def test_templates_import_from_the_documented_path(template: str) -> None:
    module = importlib.import_module(f"chutes.chute.template.{template}")
    builder = MANAGER.templates.get(template).builder
    assert getattr(module, builder.__name__) is builder
    assert builder.__name__ == f"build_{template}_chute"
    parameters = inspect.signature(builder).parameters
    assert "username" in parameters, f"{builder.__name__} takes no username"
    assert inspect.getdoc(builder), f"{builder.__name__} has no docstring"


@pytest.mark.parametrize(
    "kernel",
    [k.name for k in MANAGER.kernels] or [pytest.param(None, marks=pytest.mark.skip("no kernels"))],
)
def test_kernel_reference_implementations_resolve(kernel: str) -> None:
    pytest.importorskip("torch")
    implementation = MANAGER.kernels.get(kernel).implementation("torch")
    assert callable(implementation)


def test_plugin_modules_import_no_engine() -> None:
    heavy = (
        "torch",
        "transformers",
        "vllm",
        "sglang",
        "diffusers",
        "sentence_transformers",
        "triton",
    )
    code = (
        "import sys; from chutes_core.plugins import get_plugin_manager; get_plugin_manager();"
        f"print(','.join(sorted(m for m in {heavy!r} if m in sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "", f"loading plugins imported {loaded.stdout.strip()}"
