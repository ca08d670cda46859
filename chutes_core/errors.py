"""Exceptions raised by chutes.

Every error a user can cause says which field was wrong, what was given and
what is allowed, so it can be fixed without reading the source.
"""

from __future__ import annotations

from typing import Any


class ChutesError(Exception):
    """Base class for every error chutes raises on purpose."""


class InvalidValueError(ChutesError, ValueError):
    """A value given to the SDK is not acceptable.

    ``field`` names the argument, ``value`` is what was given and ``allowed``
    describes what would have been accepted.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: got {value!r}; {allowed}")


class PluginError(ChutesError):
    """A plugin could not be loaded, validated or used."""

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class PluginConflictError(ChutesError):
    """Two plugins claim the same name (a template or a kernel)."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        self.kind = kind
        self.name = name
        self.plugins = (first, second)
        super().__init__(
            f"{kind} {name!r} is registered by both plugin {first!r} and plugin "
            f"{second!r}; uninstall one of them or disable it with "
            "CHUTES_DISABLE_PLUGINS"
        )


class TemplateNotInstalledError(ChutesError, ModuleNotFoundError):
    """A template was asked for whose plugin is not installed."""

    def __init__(self, template: str, distribution: str | None, installed: list[str]) -> None:
        self.template = template
        self.distribution = distribution
        if distribution:
            hint = f"install its plugin: pip install {distribution}"
        else:
            hint = "no installed plugin registers it"
        have = ", ".join(sorted(installed)) or "none"
        super().__init__(
            f"template {template!r} is not available; {hint} (installed templates: {have})",
            name=f"chutes.chute.template.{template}",
        )
