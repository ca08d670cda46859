"""The plugin contract: every hook a chutes plugin can implement.

A plugin is a module (or object) named by an entry point in the
``chutes.plugins`` group. It implements any of the hooks below with functions
of the same name decorated by :data:`hookimpl`, taking any subset of the
arguments listed here. Hooks are called by the host, never by plugins.

Registration hooks (``register_templates``, ``register_kernels``,
``register_deploy_targets``) receive a ``register`` callback instead of returning a value, so their signatures can
grow new keyword arguments without breaking plugins.

The other hooks are called for **every chute** the host builds or serves,
not only chutes built from the plugin's own template. A plugin that cares
about its own chutes only checks (typically ``chute.standard_template``) and
returns ``None`` or does nothing for the rest.

Hooks marked "first result wins" stop at the first implementation that
returns something other than ``None``. The built-in defaults
(:mod:`chutes_core.builtin`) are registered before any plugin, but every one
of them is marked ``trylast``, so pluggy calls them after all plugins: any
installed plugin can override them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from chutes_core.chute import Chute
    from chutes_core.cord import Cord, LifecycleHook
    from chutes_core.deploy_targets import DeployTargetRegister
    from chutes_core.image import Image
    from chutes_core.kernels import KernelRegister
    from chutes_core.passthrough import UpstreamRequest
    from chutes_core.templates import TemplateRegister

PROJECT = "chutes"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_templates(register: TemplateRegister) -> None:
    """Register the chute templates this plugin provides.

    Called once, when plugins are loaded. Call
    ``register(name, builder, description=...)`` for each template; ``name``
    becomes importable as ``chutes.chute.template.<name>`` and ``builder`` is
    the ``build_<name>_chute`` function users call. When two plugins register
    the same name, both are disabled with a warning that names them (an error
    under ``CHUTES_STRICT_PLUGINS``); the rest of chutes keeps working.

    :param register: the callback that records a template.
    """


@hookspec
def register_kernels(register: KernelRegister) -> None:
    """Register the compute kernels this plugin provides.

    Called once, when plugins are loaded. Call
    ``register(name, reference=..., triton=..., description=...)``: ``reference``
    is the plain torch implementation (always required, used on CPU) and
    ``triton`` the fused Triton implementation, chosen on CUDA. Either may be a
    callable or a ``"module:attribute"`` string, imported on first use so that
    registering a kernel never imports torch or triton. A name two plugins
    register disables both, as for templates.

    :param register: the callback that records a kernel.
    """


@hookspec
def register_deploy_targets(register: DeployTargetRegister) -> None:
    """Register the deploy targets this plugin provides.

    Called once, when plugins are loaded. Call ``register(name, target)`` for
    each target: ``target`` is a :class:`~chutes_core.deploy_targets.DeployTarget`
    instance and ``name`` what ``chutes deploy REF --target NAME`` takes; the
    target's ``options`` become that command's flags. Keep the target's module
    light (import its client library inside ``deploy``). Two plugins
    registering the same name is reported and neither is used under it; the
    built-in ``platform`` target keeps its name.

    :param register: the callback that records a deploy target.
    """


@hookspec(firstresult=True)
def build_image(chute: Chute, image: Image | str | None) -> Image | str | None:
    """Return the image ``chutes build`` should build for ``chute``.

    ``image`` is what the chute was given (``chute.image``): an
    :class:`~chutes_core.image.Image` to build, a ``str`` naming a prebuilt
    image (nothing to build: ``chutes build`` refuses it, and the chute runs
    in that image), or ``None`` when it named no image. A plugin that owns
    the chute's template returns its engine image when ``image`` is ``None``,
    and returns ``None`` otherwise, so that an image the user gave, built or
    prebuilt, is kept. Return ``None`` to leave the choice to other plugins.

    First result wins. The built-in default returns ``image`` when there is
    one, else a plain Python image with chutes installed.
    """


@hookspec
def declare_cords(chute: Chute) -> list[Cord] | None:
    """Return extra cords to serve with ``chute``, or ``None``.

    Called once at startup for every chute, after the startup hooks have run
    and before routes are mounted. Cords returned here are mounted as if the
    chute declared them; a path clash with the chute's own cords is an error.
    """


@hookspec
def on_startup(chute: Chute) -> list[LifecycleHook] | LifecycleHook | None:
    """Return startup work to run for ``chute``, or ``None``.

    Called once at startup for every chute, before any startup hook runs.
    Each returned
    :class:`~chutes_core.cord.LifecycleHook` is merged with the chute's own
    ``@chute.on_startup`` hooks and run in priority order (lower first; sync
    or async). A hook that needs cleanup registers it with
    ``chute.on_shutdown()``. A failing hook stops the startup and is named in
    the error.
    """


@hookspec
def passthrough_headers(chute: Chute, cord: Cord) -> dict[str, str] | None:
    """Return headers that every request ``cord`` forwards carries, or ``None``.

    Called once per passthrough cord, when routes are mounted at startup
    (after the startup hooks ran, so an engine they started is known), so
    headers cost nothing per request. Names are lower-cased. When several
    plugins answer the same header, the first answer in call order wins;
    installed plugins are called before the built-in, which answers
    ``authorization: Bearer <key>`` for cords forwarding to the port of an
    engine attached with ``OpenAIServerEngine``. The per-request
    ``passthrough`` hooks run after these headers are set.
    """


@hookspec
def passthrough(chute: Chute, cord: Cord, request: UpstreamRequest) -> None:
    """Adjust a request that a passthrough cord is about to forward.

    Called for every request any chute's passthrough cord forwards, and only
    when an installed plugin implements it, so keep it cheap and leave requests
    of other plugins' chutes alone; headers known at startup belong in
    ``passthrough_headers``. ``request`` is mutable: add headers, or change
    ``request.path`` or ``request.port``. The body is streamed and cannot be
    changed here.
    """


@hookspec
def passthrough_abort(
    chute: Chute, cord: Cord, request: UpstreamRequest, request_id: str | None
) -> Awaitable[None] | None:
    """A forwarded request's client left before the engine answered: stop its work.

    The host has already dropped the connection to the engine, which is enough
    for engines that watch their connections. An engine that does not (or
    that keeps work queued) can be told here, for example SGLang's
    ``POST /abort_request`` with the request's id. Called on the event loop
    for every such request of any chute, only when an installed plugin
    implements it: return quickly, leave other plugins' chutes alone, and
    return a coroutine for any I/O (the host runs it as a background task and
    logs its failure). ``request`` is what was forwarded (port, path, headers);
    ``request_id`` is the host's id of the request.
    """


@hookspec(firstresult=True)
def egress_policy(chute: Chute) -> bool | None:
    """Say whether ``chute`` may open connections beyond loopback after startup.

    Called once at startup, and only when the chute did not set
    ``allow_external_egress`` itself (an explicit setting always wins).
    Return ``False`` to lock egress, ``True`` to allow it, or ``None`` when
    the plugin has no opinion (typically: the chute is not built from its
    template).

    First result wins. The built-in default answers ``True``.
    """
