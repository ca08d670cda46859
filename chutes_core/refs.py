"""Finding the chute a ``chutes run`` reference names."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from chutes_core.chute import Chute, unwrap
from chutes_core.errors import ChutesError


class RefError(ChutesError):
    """A reference that does not lead to a chute; the message is one line."""


def load_ref(ref: str) -> Chute:
    """Load ``module:attr``, ``path/to/file.py:attr`` or ``pkg.module:attr``.

    ``attr`` defaults to ``chute`` and may be dotted; a template result is
    unwrapped to its chute.
    """
    target, _, attr = ref.partition(":")
    attr = attr or "chute"
    if not target:
        raise RefError(f"{ref!r} is not a reference; use module:attr or path/to/file.py:attr")
    module = _import_file(target) if target.endswith(".py") or os.sep in target else _import(target)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = sorted(name for name, value in vars(module).items() if _looks_like_chute(value))
            hint = f" (chutes it defines: {', '.join(names)})" if names else ""
            raise RefError(f"module {module.__name__!r} has no attribute {attr!r}{hint}") from None
    try:
        return unwrap(obj)
    except ChutesError:
        raise RefError(
            f"{ref!r} is a {type(obj).__name__}, not a Chute or a template result"
        ) from None


def _looks_like_chute(value: Any) -> bool:
    try:
        unwrap(value)
    except ChutesError:
        return False
    return True


def _import(name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        raise RefError(_syntax(exc)) from None
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise RefError(f"no module named {name!r} (looked in {cwd} and sys.path)") from None
        raise RefError(f"importing {name!r} failed: {exc}") from None
    except Exception as exc:
        raise RefError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None


def _import_file(target: str) -> Any:
    path = Path(target).resolve()
    if not path.is_file():
        raise RefError(f"file {target!r} does not exist")
    # Sibling imports in the chute's file work as they would with `python file.py`.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = path.stem if path.stem.isidentifier() else "chute_module"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RefError(f"cannot import {target!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise RefError(_syntax(exc)) from None
    except Exception as exc:
        del sys.modules[name]
        raise RefError(f"importing {target!r} failed: {type(exc).__name__}: {exc}") from None
    return module


def _syntax(exc: SyntaxError) -> str:
    return f"syntax error in {exc.filename} line {exc.lineno}: {exc.msg}"
