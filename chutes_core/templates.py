"""The template registry: ``build_*_chute`` functions contributed by plugins."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chutes_core.errors import InvalidValueError, PluginConflictError, TemplateNotInstalledError

TEMPLATE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def distribution_for(template: str) -> str:
    """The distribution that conventionally provides ``template``: ``chutes-<name>``.

    Only a hint for "not installed" errors; a caller that knows better (the
    ``chutes.chute.template`` import names) says so with ``distribution=``.
    """
    return "chutes-" + template.replace("_", "-")


@dataclass(frozen=True)
class Template:
    """A registered template: ``builder`` makes a chute (or a ChutePack)."""

    name: str
    builder: Callable[..., Any]
    plugin: str
    description: str = ""

    @property
    def module(self) -> str:
        """The plugin module that defines the builder."""
        return str(self.builder.__module__)


class TemplateRegister(Protocol):
    """The callback ``register_templates`` receives."""

    def __call__(
        self, name: str, builder: Callable[..., Any], *, description: str = ""
    ) -> None: ...


class TemplateRegistry:
    def __init__(self) -> None:
        self._templates: dict[str, Template] = {}
        #: Names two plugins claimed, with the first claimant: refused to everyone after.
        self._contested: dict[str, str] = {}

    def register_for(self, plugin: str) -> TemplateRegister:
        """A ``register`` callback that records templates as coming from ``plugin``."""

        def register(name: str, builder: Callable[..., Any], *, description: str = "") -> None:
            if not isinstance(name, str) or not TEMPLATE_NAME_RE.match(name):
                raise InvalidValueError(
                    "template name", name, f"a lowercase identifier ({TEMPLATE_NAME_RE.pattern})"
                )
            if not callable(builder):
                raise InvalidValueError(f"template {name!r}: builder", builder, "a callable")
            contested = self._contested.get(name)
            if contested is not None:
                raise PluginConflictError("template", name, contested, plugin)
            existing = self._templates.get(name)
            if existing is not None and existing.plugin != plugin:
                raise PluginConflictError("template", name, existing.plugin, plugin)
            self._templates[name] = Template(name, builder, plugin, description)

        return register

    def get(self, name: str, *, distribution: str | None = None) -> Template:
        """The template ``name``; if missing, the error says to install ``distribution``
        (by default :func:`distribution_for` ``name``)."""
        try:
            return self._templates[name]
        except KeyError:
            raise TemplateNotInstalledError(
                name, distribution or distribution_for(name), list(self._templates)
            ) from None

    def by_plugin(self, plugin: str) -> list[str]:
        return sorted(t.name for t in self._templates.values() if t.plugin == plugin)

    def drop_plugin(self, plugin: str) -> None:
        for name in self.by_plugin(plugin):
            del self._templates[name]

    def contest(self, name: str, first: str) -> None:
        """Refuse ``name`` from now on: two plugins claimed it, first ``first``."""
        self._contested.setdefault(name, first)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._templates.values(), key=lambda t: t.name))

    def __contains__(self, name: object) -> bool:
        return name in self._templates


def get_template(name: str, *, distribution: str | None = None) -> Template:
    """The installed template ``name``, loading plugins on first use.

    ``distribution`` is what to ``pip install`` when it is missing (by
    default, :func:`distribution_for` ``name``).
    """
    from chutes_core.plugins import get_plugin_manager

    return get_plugin_manager().templates.get(name, distribution=distribution)
