"""The hooks of a plugin that provides one chute template, written once.

A plugin module exposes them as its own names::

    register_templates, build_image, egress_policy = TemplateHooks(
        "mine",
        "chutes_mine.template:build_mine_chute",
        description="what it serves, for `chutes plugins`",
        requirements=["myengine==1.2.3"],
        egress=False,
    ).hooks()

or, for an :class:`~chutes_core.engines.template.OpenAIEngineTemplate`,
``TemplateHooks.for_engine("chutes_myengine.template:MYENGINE").hooks()``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from chutes_core.errors import InvalidValueError
from chutes_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.engines.template import OpenAIEngineTemplate
    from chutes_core.image import Image
    from chutes_core.templates import TemplateRegister

#: A callable, or ``"module:attribute"`` imported on first use (plugin modules stay light).
Ref = Callable[..., Any] | str


def _resolve(reference: Any, what: str) -> Any:
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidValueError(
            what, reference, f"a 'module:attribute' reference ({exc})"
        ) from None


class TemplateHooks:
    """``register_templates``, ``build_image`` and ``egress_policy`` for one template.

    - ``register_templates`` registers ``builder`` (a callable or a
      ``"module:attribute"`` reference, imported when plugins load) as ``name``.
    - ``build_image`` gives the template's chutes its default image when
      they name none: ``image(chute)``, or else an image that pip-installs
      ``requirements`` (a list, or ``requirements(chute)``) with chutes and
      the builder's own distribution, all pinned. A chute given an ``Image``
      or a prebuilt image reference keeps it.
    - ``egress_policy`` answers ``egress`` for the template's chutes
      (``False``: outbound network closed after startup; ``True``: open;
      ``None``: no opinion), unless the chute set ``allow_external_egress``.
    """

    def __init__(
        self,
        name: str,
        builder: Ref,
        *,
        description: str = "",
        image: Ref | None = None,
        requirements: Sequence[str] | Callable[[Chute], Sequence[str]] | None = None,
        egress: bool | None = None,
    ) -> None:
        self.name, self.description, self.egress = name, description, egress
        self._builder, self._image, self._requirements = builder, image, requirements

    @classmethod
    def for_engine(cls, template: OpenAIEngineTemplate | str) -> TemplateHooks:
        """The hooks of an :class:`OpenAIEngineTemplate` (or a ``"module:attribute"`` to one)."""
        from chutes_core.engines.template import OpenAIEngineTemplate

        found = _resolve(template, "TemplateHooks.for_engine(template)")
        if not isinstance(found, OpenAIEngineTemplate):
            raise InvalidValueError(
                "TemplateHooks.for_engine(template)",
                template,
                "a reference to an OpenAIEngineTemplate",
            )
        return cls(
            found.name,
            found.builder(),
            description=found.description,
            image=found.image,
            egress=found.egress,
        )

    @functools.cached_property
    def builder(self) -> Callable[..., Any]:
        found = _resolve(self._builder, f"template {self.name!r}: builder")
        if not callable(found):
            raise InvalidValueError(f"template {self.name!r}: builder", self._builder, "a callable")
        return found  # type: ignore[no-any-return]

    def hooks(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """``register_templates``, ``build_image`` and ``egress_policy``, for a plugin module."""
        return self.register_templates, self.build_image, self.egress_policy

    @hookimpl
    def register_templates(self, register: TemplateRegister) -> None:
        """Register the builder under the template's name."""
        register(self.name, self.builder, description=self.description)

    @hookimpl
    def build_image(self, chute: Chute, image: Image | str | None) -> Image | None:
        """The template's default image, for its chutes that name no image."""
        if chute.standard_template != self.name or image is not None:
            return None
        if self._image is not None:
            built: Image = _resolve(self._image, f"template {self.name!r}: image")(chute)
            return built
        if self._requirements is None:
            return None
        from chutes_core.engines.images import plugin_image

        wanted = self._requirements
        pins = wanted(chute) if callable(wanted) else wanted
        return plugin_image(chute, pins, module=self.builder.__module__)

    @hookimpl
    def egress_policy(self, chute: Chute) -> bool | None:
        """The template's egress default for its chutes; no opinion on others."""
        return self.egress if chute.standard_template == self.name else None


class TemplateSet:
    """The hooks of a plugin with several templates: each asks every template in turn.

    A plugin module can hold one function per hook, so a plugin that provides
    more than one template exposes a set's hooks::

        register_templates, build_image, egress_policy = TemplateSet(
            TemplateHooks("whisper", ...), TemplateHooks("tts", ...)
        ).hooks()

    Each template answers only for its own chutes, so the first answer is the one.
    """

    def __init__(self, *templates: TemplateHooks) -> None:
        self.templates = templates

    def hooks(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """``register_templates``, ``build_image`` and ``egress_policy``, for a plugin module."""
        return self.register_templates, self.build_image, self.egress_policy

    @hookimpl
    def register_templates(self, register: TemplateRegister) -> None:
        """Register every template's builder."""
        for template in self.templates:
            template.register_templates(register)

    @hookimpl
    def build_image(self, chute: Chute, image: Image | str | None) -> Image | None:
        """The default image of the template ``chute`` comes from, if it names none."""
        for template in self.templates:
            built = template.build_image(chute, image)
            if built is not None:
                return built
        return None

    @hookimpl
    def egress_policy(self, chute: Chute) -> bool | None:
        """The egress default of the template ``chute`` comes from; no opinion on others."""
        for template in self.templates:
            policy = template.egress_policy(chute)
            if policy is not None:
                return policy
        return None
