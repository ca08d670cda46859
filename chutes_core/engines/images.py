"""A template's default image: its pinned requirements installed with pip.

Each plugin states its engine pin once: an OpenAI engine plugin in its
``engine`` extra (read back with :func:`pinned_requirement`), any other in a
constant of its own.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import TYPE_CHECKING

from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.image import Image


def pip_image(
    chute: Chute, requirements: Iterable[str], *, name: str | None = None, tag: str | None = None
) -> Image:
    """An image that pip-installs ``requirements``; named after the chute unless told.

    The tag defaults to the chute's revision (``latest`` without one).
    """
    from chutes_core.image import Image

    return (
        Image(
            username=chute.username, name=name or chute.name, tag=tag or chute.revision or "latest"
        )
        .with_env("PYTHONUNBUFFERED", "1")
        .run_command("pip install --no-cache-dir " + " ".join(map(shlex.quote, requirements)))
    )


def plugin_image(
    chute: Chute,
    requirements: Iterable[str],
    *,
    module: str,
    name: str | None = None,
    tag: str | None = None,
) -> Image:
    """:func:`pip_image` of ``requirements``, chutes and the plugin that provides
    ``module``, each pinned to the version installed here."""
    from chutes_core import __version__

    pins = [*requirements, f"chutes=={__version__}"]
    plugin = distribution_of(module)
    if plugin is not None:
        pins.append(plugin)
    return pip_image(chute, pins, name=name, tag=tag)


def distribution_of(module: str) -> str | None:
    """``name==version`` of the installed distribution that provides ``module``."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for name in packages_distributions().get(module.split(".")[0], []):
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirement(distribution: str, project: str, *, extra: str = "engine") -> str:
    """The requirement on ``project`` in the ``extra`` of installed ``distribution``.

    ``pinned_requirement("chutes-vllm", "vllm")`` is ``"vllm==0.32.0"`` when
    chutes-vllm's ``pyproject.toml`` says ``engine = ["vllm==0.32.0"]``: the
    pin is written once, where pip reads it, and the image follows.
    """
    from importlib.metadata import PackageNotFoundError, requires

    try:
        declared = requires(distribution) or []
    except PackageNotFoundError:
        raise ChutesError(f"{distribution} is not installed; its engine pin is unknown") from None
    for line in declared:
        requirement, _, marker = line.partition(";")
        if re.sub(r"\s|'", "", marker).replace('"', "") != f"extra=={extra}":
            continue
        found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
        if found and _canonical(found.group()) == _canonical(project):
            return requirement.strip()
    raise ChutesError(f"{distribution} declares no {project} requirement in its {extra!r} extra")
