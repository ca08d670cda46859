"""Templates contributed by plugins: ``chutes.chute.template.<name>``.

Each installed template plugin makes a submodule here, created on import,
that exposes the names of the module defining its builder (for example
``build_vllm_chute`` from ``chutes-vllm``). A template whose plugin is not
installed fails to import with an error that says what to ``pip install``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

from chutes_core.templates import get_template

_PREFIX = __name__ + "."

#: The documented template modules whose plugin's name is not ``chutes-<template>``,
#: for the "pip install" hint when it is missing.
_DISTRIBUTIONS = {
    "diffusion": "chutes-diffusers",
    "embedding": "chutes-embeddings",
    "rerank": "chutes-embeddings",
    "whisper": "chutes-audio",
    "tts": "chutes-audio",
}


class _TemplateLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        name = spec.name[len(_PREFIX) :]
        template = get_template(name, distribution=_DISTRIBUTIONS.get(name))
        source = importlib.import_module(template.module)
        # A view of the plugin's module: every public name it defines is reachable.
        module = types.ModuleType(spec.name, source.__doc__)
        module.__getattr__ = lambda name: getattr(source, name)  # type: ignore[method-assign]
        module.__dir__ = lambda: dir(source)  # type: ignore[method-assign]
        module.__all__ = list(getattr(source, "__all__", [template.builder.__name__]))
        setattr(module, template.builder.__name__, template.builder)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _TemplateFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_PREFIX) or "." in fullname[len(_PREFIX) :]:
            return None
        return importlib.machinery.ModuleSpec(fullname, _TemplateLoader())


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    return importlib.import_module(_PREFIX + name)


if not any(isinstance(finder, _TemplateFinder) for finder in sys.meta_path):
    sys.meta_path.append(_TemplateFinder())
