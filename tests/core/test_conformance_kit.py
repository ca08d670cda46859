"""The conformance kit fails with a ConformanceError that says what is wrong."""

from __future__ import annotations

import types

import pytest

import chutes_testing as testing
from chutes.chute import Chute
from chutes_core import hookimpl
from chutes_core.plugins import PluginManager


def build_flaky_chute(username: str = "me", fail: bool = False) -> Chute:
    """A template builder that raises when asked to."""
    if fail:
        raise RuntimeError("no model given")
    chute = Chute(username=username, name="flaky", standard_template="flaky")

    @chute.cord()
    async def echo(self, text: str) -> str:
        return text

    return chute


@pytest.fixture
def installed(monkeypatch) -> PluginManager:
    """The kit checks what the process-wide manager has: here, one in-process plugin."""
    module = types.ModuleType("flaky_plugin")

    @hookimpl
    def register_templates(register):
        register("flaky", build_flaky_chute)

    module.register_templates = register_templates
    manager = PluginManager(entry_points=False, plugins=[("flaky", module)], strict=True).load()
    monkeypatch.setattr("chutes_core.plugins.get_plugin_manager", lambda: manager)
    return manager


def test_check_template_passes_a_good_template(installed) -> None:
    assert testing.check_template("flaky", username="me").name == "flaky"


def test_a_raising_builder_is_a_conformance_error(installed) -> None:
    with pytest.raises(
        testing.ConformanceError, match=r"build_flaky_chute.*RuntimeError: no model"
    ):
        testing.check_template("flaky", fail=True)


def test_a_template_that_is_not_installed_is_a_conformance_error(installed) -> None:
    with pytest.raises(testing.ConformanceError, match="template 'nope' is not available"):
        testing.check_template("nope")


def test_a_module_that_imports_an_engine_is_caught(tmp_path, monkeypatch) -> None:
    (tmp_path / "triton.py").write_text('"""Stands in for triton."""\n')
    (tmp_path / "eager_plugin.py").write_text("import triton\n")
    (tmp_path / "lazy_plugin.py").write_text("def start():\n    import triton\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(testing.ConformanceError, match="eager_plugin imports triton"):
        testing.check_light_import("eager_plugin")
    testing.check_light_import("lazy_plugin")


def test_check_kernel_gives_both_implementations_the_same_unseeded_inputs(monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    module = types.ModuleType("kernel_plugin")

    @hookimpl
    def register_kernels(register):
        # The "triton" side is plain torch too: what matters is the inputs they get.
        register("demo.scale", reference=lambda x, w: x * w, triton=lambda x, w: x.mul_(w))

    module.register_kernels = register_kernels
    manager = PluginManager(entry_points=False, plugins=[("k", module)], strict=True).load()
    monkeypatch.setattr("chutes_core.kernels.get_kernel", manager.kernels.get)
    # As in docs/plugins.md: random inputs, no seed; the triton side works in place.
    worst = testing.check_kernel("demo.scale", lambda: (torch.randn(3, 17), torch.randn(17)))
    assert worst == 0.0


def test_the_guides_kernel_test_passes(monkeypatch) -> None:
    """docs/plugins.md's check_kernel example, run as written against a stand-in kernel."""
    import re
    from pathlib import Path

    pytest.importorskip("torch")
    guide = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    (block,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", guide, re.S)
        if "def test_kernel_matches_its_reference" in b
    ]
    module = types.ModuleType("norm_plugin")

    @hookimpl
    def register_kernels(register):
        register(
            "myengine.fused_norm",
            reference=lambda x, w: x * w / x.norm(dim=-1, keepdim=True),
            triton=lambda x, w: x.div_(x.norm(dim=-1, keepdim=True)).mul_(w),
        )

    module.register_kernels = register_kernels
    manager = PluginManager(entry_points=False, plugins=[("myengine", module)], strict=True)
    monkeypatch.setattr("chutes_core.kernels.get_kernel", manager.load().kernels.get)
    namespace: dict = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)
    namespace["test_kernel_matches_its_reference"]()
