"""The kernel registry: fused Triton kernels with plain torch references.

A plugin registers a kernel under a name with two implementations taking the
same arguments. Calling the kernel picks one per call:

- ``CHUTES_KERNELS=torch`` or ``=triton`` forces that implementation;
- ``auto`` (the default) uses Triton when the first tensor argument is on a
  CUDA device and Triton is importable, and the torch reference otherwise.

Implementations may be given as ``"module:attribute"`` strings; they are
imported on first use, so registering kernels costs no torch or triton import.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeVar

from chutes_core.errors import ChutesError, InvalidValueError, PluginConflictError

KERNEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_.]*$")
Impl = Callable[..., Any] | str
Choice = Literal["torch", "triton"]
T = TypeVar("T")


class KernelRegister(Protocol):
    """The callback ``register_kernels`` receives."""

    def __call__(
        self, name: str, *, reference: Impl, triton: Impl | None = None, description: str = ""
    ) -> None: ...


def _resolve(impl: Impl) -> Callable[..., Any]:
    if callable(impl):
        return impl
    module, _, attr = impl.partition(":")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ChutesError(f"kernel implementation {impl!r} is not callable")
    return target  # type: ignore[no-any-return]


def _triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except Exception:
        return False
    return True


class Kernel:
    """A named kernel. Call it like either implementation."""

    def __init__(
        self, name: str, plugin: str, reference: Impl, triton: Impl | None, description: str
    ) -> None:
        self.name = name
        self.plugin = plugin
        self.description = description
        self._sources: dict[Choice, Impl | None] = {"torch": reference, "triton": triton}
        self._resolved: dict[Choice, Callable[..., Any]] = {}

    @property
    def has_triton(self) -> bool:
        return self._sources["triton"] is not None

    def implementation(self, which: Choice) -> Callable[..., Any]:
        """The torch or Triton implementation, imported on first use."""
        impl = self._resolved.get(which)
        if impl is None:
            source = self._sources[which]
            if source is None:
                raise ChutesError(f"kernel {self.name!r} has no {which} implementation")
            impl = self._resolved[which] = _resolve(source)
        return impl

    def choose(self, *args: Any) -> Choice:
        """Which implementation a call with these arguments would use."""
        mode = os.environ.get("CHUTES_KERNELS", "auto").strip().lower() or "auto"
        if mode == "torch":
            return "torch"
        if mode == "triton":
            if not self.has_triton:
                raise ChutesError(
                    f"CHUTES_KERNELS=triton, but kernel {self.name!r} has no Triton implementation"
                )
            return "triton"
        if mode != "auto":
            raise InvalidValueError("CHUTES_KERNELS", mode, "one of torch, triton, auto")
        on_cuda = any(getattr(a, "is_cuda", False) for a in args)
        if on_cuda and self.has_triton and _triton_available():
            return "triton"
        return "torch"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.implementation(self.choose(*args))(*args, **kwargs)

    def __repr__(self) -> str:
        impls = "torch+triton" if self.has_triton else "torch"
        return f"<Kernel {self.name} ({impls}) from {self.plugin}>"


class KernelRegistry:
    def __init__(self) -> None:
        self._kernels: dict[str, Kernel] = {}
        #: Names two plugins claimed, with the first claimant: refused to everyone after.
        self._contested: dict[str, str] = {}

    def register_for(self, plugin: str) -> KernelRegister:
        """A ``register`` callback that records kernels as coming from ``plugin``."""

        def register(
            name: str, *, reference: Impl, triton: Impl | None = None, description: str = ""
        ) -> None:
            if not isinstance(name, str) or not KERNEL_NAME_RE.match(name):
                raise InvalidValueError(
                    "kernel name", name, f"a lowercase dotted name ({KERNEL_NAME_RE.pattern})"
                )
            for label, impl in (("reference", reference), ("triton", triton)):
                if impl is None and label == "triton":
                    continue
                if not callable(impl) and not (isinstance(impl, str) and ":" in impl):
                    raise InvalidValueError(
                        f"kernel {name!r}: {label}",
                        impl,
                        "a callable or a 'module:attribute' string",
                    )
            contested = self._contested.get(name)
            if contested is not None:
                raise PluginConflictError("kernel", name, contested, plugin)
            existing = self._kernels.get(name)
            if existing is not None and existing.plugin != plugin:
                raise PluginConflictError("kernel", name, existing.plugin, plugin)
            self._kernels[name] = Kernel(name, plugin, reference, triton, description)

        return register

    def get(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except KeyError:
            have = ", ".join(sorted(self._kernels)) or "none"
            raise ChutesError(f"no kernel named {name!r} is registered (have: {have})") from None

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(k.name for k in self._kernels.values() if k.plugin == plugin)

    def drop_plugin(self, plugin: str) -> None:
        for name in self.by_plugin(plugin):
            del self._kernels[name]

    def contest(self, name: str, first: str) -> None:
        """Refuse ``name`` from now on: two plugins claimed it, first ``first``."""
        self._contested.setdefault(name, first)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._kernels.values(), key=lambda k: k.name))

    def __contains__(self, name: object) -> bool:
        return name in self._kernels


def get_kernel(name: str) -> Kernel:
    """The registered kernel ``name``, loading plugins on first use."""
    from chutes_core.plugins import get_plugin_manager

    return get_plugin_manager().kernels.get(name)


# Helpers for kernel authors ------------------------------------------------------
def kernel_hook(name: str, implementations: str, *, description: str) -> Callable[..., None]:
    """A ``register_kernels`` hook that registers one kernel by convention.

    ``implementations`` is ``"module:stem"``: the torch reference is
    ``module:stem_torch`` and the Triton implementation ``module:stem_triton``,
    both imported on first use. In a plugin module::

        register_kernels = kernel_hook(
            "myengine.fused_norm", "chutes_myengine.kernels:fused_norm", description="..."
        )
    """
    from chutes_core.hookspecs import hookimpl

    module, _, stem = implementations.partition(":")
    if not module or not stem:
        raise InvalidValueError("kernel_hook(implementations)", implementations, "'module:stem'")

    @hookimpl
    def register_kernels(register: KernelRegister) -> None:
        register(
            name,
            reference=f"{module}:{stem}_torch",
            triton=f"{module}:{stem}_triton",
            description=description,
        )

    return register_kernels


def triton_jit(build: Callable[[Any, Any], T]) -> Callable[[], T]:
    """Compile a Triton kernel once, on first use, so importing its module needs no triton.

    ``build(triton, tl)`` defines and returns the ``@triton.jit`` function;
    calling the result returns it, built on the first call only::

        @triton_jit
        def _scale(triton, tl):
            @triton.jit
            def scale_kernel(x, out, n, BLOCK: tl.constexpr): ...

            return scale_kernel

        _scale()[grid](x, out, n, BLOCK=1024)
    """

    @functools.cache
    def compiled() -> T:
        import triton
        import triton.language as tl

        return build(triton, tl)

    return compiled
