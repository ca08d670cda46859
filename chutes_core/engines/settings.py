"""The chute's own settings, shared by every template builder.

A builder takes its model's parameters by name and the chute's settings as
``**settings: Unpack[ChuteSettings]``; :func:`chute_from_settings` turns them
into the :class:`~chutes_core.chute.Chute`, with the template's defaults for
whatever the caller left out::

    def build_my_chute(
        username: str, model_name: str, **settings: Unpack[ChuteSettings]
    ) -> ChutePack:
        chute = chute_from_settings(
            "build_my_chute", username, settings, template="my",
            name=settings.get("name") or chute_name_for(model_name), concurrency=8,
        )
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import TypedDict

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.image import Image
    from chutes_core.node_selector import NodeSelector


class ChuteOptions(TypedDict, total=False):
    """The settings no template gives a meaning of its own (see :data:`SETTINGS_DOC`)."""

    image: str | Image | None
    tagline: str
    readme: str
    max_instances: int
    scaling_threshold: float
    shutdown_after_seconds: int
    allow_external_egress: bool | None


class ChuteSettings(ChuteOptions, total=False):
    """Every chute setting a template builder accepts by keyword (see :data:`SETTINGS_DOC`).

    A builder that takes some of them positionally (``name``, ``revision``
    ...) names those itself and unpacks :class:`ChuteOptions` instead.
    """

    name: str | None
    node_selector: NodeSelector | None
    concurrency: int | None
    revision: str | None


#: The settings, documented once; builders append it to their docstrings.
SETTINGS_DOC = """
Chute settings (keywords):
    name: the chute's name; derived from the model by default.
    image: the image to run in: an ``Image`` to build, a prebuilt image
        reference (``"org/image:tag"``, used as it is), or ``None`` for the
        template's default image.
    tagline, readme: shown with the chute.
    node_selector: the GPUs to run on.
    concurrency: requests in flight per instance; the template's default if left out.
    revision: the model commit to serve.
    max_instances, scaling_threshold, shutdown_after_seconds: scaling knobs.
    allow_external_egress: ``None`` (default) lets the template decide whether
        outbound network closes after startup; ``True`` or ``False`` decides.
"""

F = TypeVar("F", bound=Callable[..., Any])


def documents_settings(builder: F) -> F:
    """Append :data:`SETTINGS_DOC` to ``builder``'s docstring (a decorator)."""
    builder.__doc__ = inspect.cleandoc(builder.__doc__ or "") + "\n" + SETTINGS_DOC
    return builder


def settings_parameters(names: Sequence[str], **defaults: Any) -> dict[str, inspect.Parameter]:
    """Positional-or-keyword parameters for chute settings and others, in ``names`` order.

    For a builder that must keep a positional shape (``__signature__``).
    A chute setting shows the :class:`~chutes_core.chute.Chute` default
    unless ``defaults`` names it; another name needs its default there
    (:data:`inspect.Parameter.empty` for a required one).
    """
    from chutes_core.chute import Chute

    chute = inspect.signature(Chute.__init__).parameters
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = {}
    for name in names:
        if name in defaults:
            default = defaults[name]
        else:
            default = chute[name].default if name in chute else None
            default = None if default is inspect.Parameter.empty else default
        annotation = ChuteSettings.__annotations__.get(name, inspect.Parameter.empty)
        # Shown as written (``str | None``), not as a ForwardRef.
        annotation = getattr(annotation, "__forward_arg__", annotation)
        parameters[name] = inspect.Parameter(name, kind, default=default, annotation=annotation)
    return parameters


_KEYS = frozenset(ChuteSettings.__optional_keys__ | ChuteSettings.__required_keys__)


def chute_from_settings(
    builder: str, username: str, settings: ChuteOptions, *, template: str, **defaults: Any
) -> Chute:
    """The chute for ``settings``, a builder's ``**settings``.

    ``defaults`` are the template's own values (a derived ``name``, its
    ``concurrency``...), used for settings left out or given as ``None``. A
    key that is no chute setting is a ``TypeError`` naming ``builder``, as
    Python's own for an unknown keyword argument.
    """
    from chutes_core.chute import Chute

    for key in settings:
        if key not in _KEYS:
            raise TypeError(f"{builder}() got an unexpected keyword argument {key!r}")
    values = {k: v for k, v in defaults.items() if v is not None}
    # ``None`` means "the default": the template's, else the Chute's own.
    values.update({k: v for k, v in settings.items() if v is not None})
    return Chute(username=username, standard_template=template, **values)
