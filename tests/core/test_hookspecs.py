"""The plugin contract is documented and typed, hook by hook."""

from __future__ import annotations

import inspect

from chutes_core import hookspecs

SPECS = {
    name: fn
    for name, fn in vars(hookspecs).items()
    if callable(fn) and getattr(fn, "chutes_spec", None) is not None
}


def test_the_contract_has_the_designed_hooks() -> None:
    assert set(SPECS) == {
        "build_image",
        "declare_cords",
        "on_startup",
        "passthrough_headers",
        "passthrough",
        "passthrough_abort",
        "egress_policy",
        "register_templates",
        "register_kernels",
        "register_deploy_targets",
    }


def test_every_hook_spec_has_a_docstring() -> None:
    undocumented = [name for name, fn in SPECS.items() if len(inspect.getdoc(fn) or "") < 40]
    assert not undocumented, f"hook specs without a real docstring: {undocumented}"


def test_every_hook_spec_is_fully_annotated() -> None:
    for name, fn in SPECS.items():
        signature = inspect.signature(fn)
        assert signature.return_annotation is not inspect.Signature.empty, name
        for param in signature.parameters.values():
            assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name})"


def test_first_result_hooks_are_marked() -> None:
    first = {name for name, fn in SPECS.items() if fn.chutes_spec.get("firstresult")}
    assert first == {"build_image", "egress_policy"}
    for name in first:
        assert "First result wins" in inspect.getdoc(SPECS[name])
