"""The conformance kit: checks a plugin author runs in their own test suite.

>>> import chutes_testing as testing
>>> testing.check_plugin("my_engine")                     # loads, light to import
>>> chute = testing.check_template("my_engine", username="me", model_name="/tmp/model")
>>> testing.check_kernel("my_engine.fused_op", make_inputs)  # Triton vs torch

Each check raises :class:`ConformanceError` with a message that says what is
wrong, so it reads well as a failing test. Nothing here imports torch or
triton unless a kernel check asks for it.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chutes_core import hookspecs
from chutes_core.errors import ChutesError

__all__ = [
    "ConformanceError",
    "check_dockerfile",
    "check_hook_signatures",
    "check_kernel",
    "check_light_import",
    "check_plugin",
    "check_template",
]


class ConformanceError(ChutesError, AssertionError):
    """A plugin does not meet the contract."""


DOCKERFILE_INSTRUCTIONS = frozenset(
    [
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "MAINTAINER",
    ]
)


def check_hook_signatures(plugin: object) -> list[str]:
    """Every hook implementation in ``plugin`` names a real hook and only its arguments.

    Returns the implemented hook names.
    """
    specs = {
        name: inspect.signature(fn)
        for name, fn in vars(hookspecs).items()
        if callable(fn) and getattr(fn, "chutes_spec", None) is not None
    }
    implemented = []
    for name, fn in inspect.getmembers(plugin):
        if not callable(fn) or getattr(fn, "chutes_impl", None) is None:
            continue
        if name not in specs:
            raise ConformanceError(
                f"{name} is marked @hookimpl but is not a chutes hook (known: {', '.join(sorted(specs))})"
            )
        allowed = set(specs[name].parameters)
        extra = set(inspect.signature(fn).parameters) - allowed
        if extra:
            raise ConformanceError(
                f"hook {name} takes {sorted(extra)}, which the spec does not pass "
                f"(it passes {sorted(allowed)})"
            )
        implemented.append(name)
    return sorted(implemented)


#: Modules a plugin imports at startup, never when it is loaded (every chutes
#: process loads plugins, ``chutes --help`` included).
HEAVY_MODULES = (
    "torch",
    "transformers",
    "diffusers",
    "sentence_transformers",
    "vllm",
    "sglang",
    "triton",
)


def check_light_import(module: str) -> None:
    """Importing ``module`` in a fresh interpreter imports none of :data:`HEAVY_MODULES`.

    A fresh interpreter, because in the test process something else (a test,
    another plugin) may have imported them already.
    """
    import subprocess

    code = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        f"print(' '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise ConformanceError(f"importing {module} fails: {tail[0]}")
    heavy = result.stdout.split()
    if heavy:
        raise ConformanceError(
            f"importing {module} imports {', '.join(heavy)}; import them inside the hooks "
            "or startup code that need them, not at module level"
        )


def check_plugin(name: str) -> Any:
    """Load the installed plugin ``name`` through its entry point, as the host does.

    Fails when it is not installed, fails to load, implements an unknown or
    mis-typed hook, or imports an engine (:data:`HEAVY_MODULES`) when its
    module is imported. Returns its :class:`~chutes_core.plugins.PluginInfo`.
    """
    from chutes_core.plugins import PluginManager

    manager = PluginManager(strict=False, only=[name], disabled=[]).load()
    for failure in manager.failures:
        raise ConformanceError(f"plugin {name!r} does not load: {failure.error}")
    for info in manager.info():
        if info.name == name:
            module_name = info.target.split(":")[0]
            module = sys.modules.get(module_name)
            if module is not None:
                check_hook_signatures(module)
            check_light_import(module_name)
            return info
    raise ConformanceError(f"no plugin named {name!r} in the chutes.plugins entry-point group")


def check_template(template: str, /, **kwargs: Any) -> Any:
    """Build ``template`` with ``kwargs`` and check the result is a servable chute.

    Checks: the builder returns a Chute or ChutePack; its cords are valid and
    unique; the plugins produce an image whose Dockerfile is well formed; the
    egress policy resolves to a bool. Returns the chute.
    """
    from chutes_core.chute import unwrap
    from chutes_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    try:
        builder = manager.templates.get(template).builder
    except ChutesError as exc:
        raise ConformanceError(str(exc)) from exc
    try:
        built = builder(**kwargs)
    except Exception as exc:
        raise ConformanceError(
            f"template {template!r}: {builder.__name__}(**{kwargs!r}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        chute = unwrap(built)
    except ChutesError as exc:
        raise ConformanceError(f"template {template!r} returned {built!r}: {exc}") from None
    if chute.standard_template is None:
        raise ConformanceError(f"template {template!r} should set standard_template on its chute")
    if not chute.cords and not chute.websockets:
        raise ConformanceError(f"template {template!r} built a chute with no cords")
    try:
        dockerfile = str(manager.build_image(chute))
        egress = manager.egress_policy(chute)
    except Exception as exc:
        raise ConformanceError(
            f"template {template!r}: a plugin hook raised {type(exc).__name__}: {exc}"
        ) from exc
    check_dockerfile(dockerfile)
    if not isinstance(egress, bool):
        raise ConformanceError(f"egress policy for template {template!r} is not a bool")
    return chute


def check_dockerfile(dockerfile: str, context: str | None = None) -> list[tuple[str, str]]:
    """Parse ``dockerfile`` and check every instruction; returns ``(instruction, args)``.

    With ``context`` (a directory), also checks that every ``ADD``/``COPY``
    source exists in it.
    """
    lines = dockerfile.replace("\\\n", " ").splitlines()
    parsed = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() not in DOCKERFILE_INSTRUCTIONS or instruction != instruction.upper():
            raise ConformanceError(f"Dockerfile line {number}: unknown instruction {instruction!r}")
        if not args.strip():
            raise ConformanceError(f"Dockerfile line {number}: {instruction} has no arguments")
        parsed.append((instruction, args.strip()))
    if not parsed or parsed[0][0] not in ("FROM", "ARG"):
        raise ConformanceError("a Dockerfile must start with FROM")
    if context is not None:
        import json

        for instruction, args in parsed:
            if instruction not in ("ADD", "COPY"):
                continue
            words = [w for w in re.split(r"\s+", args) if not w.startswith("--")]
            sources = json.loads(" ".join(words))[:-1] if words[0].startswith("[") else words[:-1]
            for source in sources:
                if not os.path.exists(os.path.join(context, source)):
                    raise ConformanceError(f"{instruction} source {source!r} is not in {context}")
    return parsed


def check_kernel(
    name: str,
    make_inputs: Callable[[], Sequence[Any]],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    kwargs: dict[str, Any] | None = None,
) -> float:
    """Compare kernel ``name``'s Triton implementation with its torch reference.

    ``make_inputs()`` returns the positional arguments (tensors). It is called
    once; each implementation gets its own copy of the tensors, so random
    inputs need no seed and an in-place kernel cannot spoil the other's. Without a
    GPU the Triton kernel runs under ``TRITON_INTERPRET=1`` on CPU tensors,
    which must be set before triton is first imported (this function sets it
    when it can). Returns the largest absolute difference seen.
    """
    import torch

    from chutes_core.kernels import get_kernel

    if not torch.cuda.is_available():
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise ConformanceError(
                "triton was imported before TRITON_INTERPRET=1 was set; set it in the environment"
            )
        os.environ["TRITON_INTERPRET"] = "1"
    kernel = get_kernel(name)
    if not kernel.has_triton:
        raise ConformanceError(f"kernel {name!r} has no Triton implementation to check")
    extra = kwargs or {}
    inputs = list(make_inputs())

    def copy() -> list[Any]:
        return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]

    expected = kernel.implementation("torch")(*copy(), **extra)
    actual = kernel.implementation("triton")(*copy(), **extra)
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        raise ConformanceError(
            f"kernel {name!r}: Triton gives {tuple(actual.shape)} {actual.dtype}, "
            f"torch gives {tuple(expected.shape)} {expected.dtype}"
        )
    diff = (actual.double() - expected.double()).abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    if not torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol):
        raise ConformanceError(
            f"kernel {name!r}: Triton and torch differ by up to {worst:.3g} (atol={atol}, rtol={rtol})"
        )
    return worst
