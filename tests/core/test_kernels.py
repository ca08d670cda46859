"""Kernel registration and the torch/Triton choice (no torch needed here)."""

from __future__ import annotations

import sys
import types

import pytest

from chutes_core import hookimpl
from chutes_core.errors import ChutesError, InvalidValueError, PluginConflictError
from chutes_core.plugins import PluginManager


class FakeTensor:
    """Stands in for a tensor: only the device matters to the choice."""

    def __init__(self, is_cuda: bool) -> None:
        self.is_cuda = is_cuda


def double_reference(x):
    return ("torch", x)


def double_triton(x):
    return ("triton", x)


def kernel_plugin(triton=double_triton) -> types.ModuleType:
    module = types.ModuleType("kernels")

    @hookimpl
    def register_kernels(register):
        register("demo.double", reference=double_reference, triton=triton, description="x2")

    module.register_kernels = register_kernels
    return module


def registry(*plugins):
    return PluginManager(entry_points=False, plugins=plugins, strict=True).load().kernels


def test_auto_uses_torch_on_cpu_and_triton_on_cuda(monkeypatch) -> None:
    monkeypatch.delenv("CHUTES_KERNELS", raising=False)
    kernel = registry(("k", kernel_plugin())).get("demo.double")
    assert kernel(FakeTensor(False))[0] == "torch"
    monkeypatch.setattr("chutes_core.kernels._triton_available", lambda: True)
    assert kernel(FakeTensor(True))[0] == "triton"
    monkeypatch.setattr("chutes_core.kernels._triton_available", lambda: False)
    assert kernel(FakeTensor(True))[0] == "torch"


def test_environment_overrides_the_choice(monkeypatch) -> None:
    kernel = registry(("k", kernel_plugin())).get("demo.double")
    monkeypatch.setenv("CHUTES_KERNELS", "triton")
    assert kernel(FakeTensor(False))[0] == "triton"
    monkeypatch.setenv("CHUTES_KERNELS", "torch")
    assert kernel(FakeTensor(True))[0] == "torch"
    monkeypatch.setenv("CHUTES_KERNELS", "fastest")
    with pytest.raises(InvalidValueError, match="CHUTES_KERNELS"):
        kernel(FakeTensor(False))


def test_forcing_triton_without_an_implementation_is_an_error(monkeypatch) -> None:
    kernel = registry(("k", kernel_plugin(triton=None))).get("demo.double")
    monkeypatch.setenv("CHUTES_KERNELS", "triton")
    with pytest.raises(ChutesError, match="no Triton implementation"):
        kernel(FakeTensor(False))


def test_string_implementations_are_imported_on_first_use() -> None:
    module = types.ModuleType("lazy")

    @hookimpl
    def register_kernels(register):
        register("demo.join", reference="os.path:join")

    module.register_kernels = register_kernels
    kernel = registry(("lazy", module)).get("demo.join")
    assert kernel("a", "b") == "a/b"


def test_conflicting_kernel_names() -> None:
    with pytest.raises(PluginConflictError, match=r"kernel 'demo\.double'"):
        registry(("a", kernel_plugin()), ("b", kernel_plugin()))


def test_a_kernel_clash_disables_both_plugins_without_strict_mode() -> None:
    manager = PluginManager(
        entry_points=False, plugins=[("a", kernel_plugin()), ("b", kernel_plugin())], strict=False
    ).load()
    assert manager.names == [] and "demo.double" not in manager.kernels
    assert [f.name for f in manager.failures] == ["a", "b"]
    assert all("kernel 'demo.double'" in f.error and "'a'" in f.error for f in manager.failures)


def test_unknown_kernel_lists_what_exists() -> None:
    with pytest.raises(ChutesError, match=r"have: demo\.double"):
        registry(("k", kernel_plugin())).get("nope")


def test_kernel_hook_registers_the_torch_and_triton_pair_by_convention(monkeypatch) -> None:
    from chutes_core.kernels import kernel_hook

    impls = types.ModuleType("convention_kernels")
    impls.double_torch = lambda x: 2 * x  # type: ignore[attr-defined]
    impls.double_triton = lambda x: x + x  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "convention_kernels", impls)
    plugin = types.ModuleType("convention_plugin")
    plugin.register_kernels = kernel_hook(  # type: ignore[attr-defined]
        "demo.double", "convention_kernels:double", description="twice the input"
    )
    pm = PluginManager(entry_points=False, plugins=[("conv", plugin)]).load()
    kernel = pm.kernels.get("demo.double")
    assert kernel.plugin == "conv" and kernel.description == "twice the input"
    assert kernel.implementation("torch") is impls.double_torch
    assert kernel.implementation("triton") is impls.double_triton
    with pytest.raises(InvalidValueError):
        kernel_hook("demo.bad", "no-stem", description="")


def test_triton_jit_builds_once_on_first_call() -> None:
    from chutes_core.kernels import triton_jit

    built = []

    @triton_jit
    def kernel(triton, tl):
        built.append((triton.__name__, tl.__name__))
        return "compiled"

    assert built == []  # nothing is compiled (or imported) at definition
    pytest.importorskip("triton")
    assert kernel() == kernel() == "compiled"
    assert built == [("triton", "triton.language")]
