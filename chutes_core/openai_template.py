"""Templates for engines that serve an OpenAI-compatible API from a subprocess.

The vLLM and SGLang plugins are each a small subclass of
:class:`OpenAIEngineTemplate`; a third-party engine plugin is built the same
way::

    class MyEngineTemplate(OpenAIEngineTemplate):
        \"\"\"Serve a model with MyEngine.\"\"\"

        name = "myengine"
        engine_requirement = "myengine==1.2.3"
        owned_flags = standard_owned_flags(model=["--model"], tensor_parallel=["--tp"])

        def command(self, launch: EngineLaunch) -> list[str]:
            return launch.python_command(
                "myengine.server", model_flag="--model", tensor_parallel_flag="--tp"
            )

    MYENGINE = MyEngineTemplate()
    build_myengine_chute = MYENGINE.builder()

The template owns what every such engine needs: the chute and its settings,
``engine_args`` turned into command-line flags (with the flags the template
sets itself refused), a required ``revision`` for hub models, the model
fetched at startup (or used in place when it is a local path), the engine
started offline with :class:`~chutes_core.engine.OpenAIServerEngine`, and one
passthrough cord per OpenAI route. Streaming needs nothing special: a
passthrough cord relays whatever the engine answers, Server-Sent Events
included, chunk by chunk.

Nothing here imports the engine, torch or FastAPI at import time.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import json
import logging
import os
import re
import shlex
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from chutes_core.errors import InvalidValueError
from chutes_core.hookspecs import hookimpl
from chutes_core.hub import is_local

if TYPE_CHECKING:
    from chutes_core.chute import Chute, ChutePack
    from chutes_core.cord import Cord
    from chutes_core.engine import OpenAIServerEngine
    from chutes_core.image import Image
    from chutes_core.node_selector import NodeSelector
    from chutes_core.templates import TemplateRegister

log = logging.getLogger("chutes.templates")

#: What ``engine_args`` may be: flag names to values, a command-line string, or nothing.
EngineArgs = Mapping[str, Any] | str | None

#: Where the tensor-parallel size comes from, for owned-flag errors.
TP_FROM_GPUS = "node_selector.gpu_count"

#: The flags :meth:`OpenAIServerEngine.server_flags` sets, and why users may not.
SERVER_FLAGS: Mapping[str, str] = {
    "--host": "the template (the engine listens on loopback only)",
    "--port": "the template (the chute forwards to that port)",
    "--api-key": "the template (a random key shared by the chute and the engine)",
}


def standard_owned_flags(*, model: Sequence[str], tensor_parallel: Sequence[str]) -> dict[str, str]:
    """The flags an OpenAI engine template sets, spelled as the engine spells them.

    ``model`` and ``tensor_parallel`` list every spelling (aliases included)
    of the engine's model flag and tensor-parallel flag; ``--served-model-name``,
    ``--revision`` and :data:`SERVER_FLAGS` are added.
    """
    owned = dict(SERVER_FLAGS)
    owned.update(dict.fromkeys([*model, "--served-model-name"], "model_name"))
    owned["--revision"] = "revision (the model is fetched before the engine starts)"
    owned.update(dict.fromkeys(tensor_parallel, TP_FROM_GPUS))
    return owned


_FLAG_RE = re.compile(r"^--?[A-Za-z][A-Za-z0-9_.-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_NEGATIVE_NUMBER_RE = re.compile(r"^-[0-9.]")


# engine_args -> flags -------------------------------------------------------------
def engine_args_to_flags(
    engine_args: EngineArgs,
    *,
    owned: Mapping[str, str] | None = None,
    field: str = "engine_args",
) -> list[str]:
    """Turn ``engine_args`` into command-line flags, refusing the ``owned`` ones.

    A mapping becomes ``--name value`` pairs: underscores in names become
    dashes; ``True`` is a bare flag; ``False`` and ``None`` leave the flag
    out; a list or tuple repeats the flag once per item; a dict is passed as
    JSON. A name that already starts with ``-`` is used as written. A string
    is split like a shell command line.

    ``owned`` maps the flags the template sets itself to where their value
    comes from; giving one (even abbreviated, or with underscores) is an
    :class:`~chutes_core.errors.InvalidValueError` naming that source.
    """
    if engine_args is None:
        return []
    if isinstance(engine_args, str):
        try:
            argv = shlex.split(engine_args)
        except ValueError as exc:
            raise InvalidValueError(
                field, engine_args, f"a command line that splits into flags ({exc})"
            ) from None
    elif isinstance(engine_args, Mapping):
        argv = []
        for key, value in engine_args.items():
            argv += _mapped_flag(field, key, value)
    else:
        raise InvalidValueError(
            field,
            engine_args,
            "a dict of flag names to values (e.g. {'max_model_len': 4096}), "
            "a command-line string (e.g. '--max-model-len 4096') or None",
        )
    check_owned_flags(argv, owned or {}, field=field)
    return argv


def _mapped_flag(field: str, key: Any, value: Any) -> list[str]:
    if not isinstance(key, str) or not _FLAG_RE.match(key if key.startswith("-") else f"--{key}"):
        raise InvalidValueError(
            f"{field} key", key, "a flag name such as 'max_model_len' or '--max-model-len'"
        )
    flag = key if key.startswith("-") else "--" + key.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        flags: list[str] = []
        for item in value:
            flags += [flag, _scalar(f"{field}[{key!r}] item", item)]
        return flags
    if isinstance(value, Mapping):
        return [flag, json.dumps(value, separators=(",", ":"))]
    return [flag, _scalar(f"{field}[{key!r}]", value)]


def _scalar(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidValueError(field, value, "a string or a number")
    return str(value)


def flag_names(argv: Iterable[str]) -> list[str]:
    """The flags in ``argv`` (values skipped), normalised: ``--max_model_len=8`` → ``--max-model-len``."""
    names = []
    for token in argv:
        if not token.startswith("-") or _NEGATIVE_NUMBER_RE.match(token):
            continue
        name = token.split("=", 1)[0]
        dashes = len(name) - len(name.lstrip("-"))
        names.append(name[:dashes] + name[dashes:].replace("_", "-"))
    return names


def check_owned_flags(argv: Sequence[str], owned: Mapping[str, str], *, field: str) -> None:
    """Refuse any flag in ``argv`` that the template sets itself.

    Abbreviations count too (argparse would expand ``--served-model`` to
    ``--served-model-name``).
    """
    for name in flag_names(argv):
        if name in owned:
            raise InvalidValueError(
                field,
                name,
                f"a flag the template does not set itself; {name} comes from {owned[name]}",
            )
        if name.startswith("--") and len(name) > 2:
            for full in owned:
                if full.startswith(name):
                    raise InvalidValueError(
                        field,
                        name,
                        f"a flag the template does not set itself; {name} abbreviates {full}, "
                        f"which comes from {owned[full]}",
                    )


# The model ----------------------------------------------------------------------
def check_revision(template: str, model_name: str, revision: str | None) -> str | None:
    """The revision to serve: required for a hub model, optional for a local path."""
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise InvalidValueError(f"{template}(revision)", revision, "a commit hash (a string)")
    if revision is None and not is_local(model_name):
        raise InvalidValueError(
            f"{template}(revision)",
            None,
            f"the commit of {model_name!r} to serve, so that every instance serves the same "
            f"weights. Find it on https://huggingface.co/{model_name}/commits/main, or with "
            f"`python -c \"import huggingface_hub; print(huggingface_hub.model_info('{model_name}').sha)\"`",
        )
    if revision is not None and not _SHA_RE.match(revision):
        log.warning(
            "%s: revision %r of %s is not a commit hash; a branch or tag can move, so "
            "instances started later may serve other weights",
            template,
            revision,
            model_name,
        )
    return revision


def chute_name_for(model_name: str, *, default: str | None = None) -> str:
    """A valid chute name from a model name: ``org/Model-1.5B`` → ``org-model-1-5b``.

    A local path contributes only its last component. When nothing usable is
    left, ``default`` if given, else an error.
    """
    source = os.path.basename(model_name.rstrip("/")) if is_local(model_name) else model_name
    name = re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-")[:63].rstrip("-")
    if not name and default is not None:
        return default
    if not name:
        raise InvalidValueError("model_name", model_name, "a model name; or pass name= explicitly")
    return name


def gpu_visible() -> bool:
    """Whether a CUDA or ROCm device is visible to this process (torch is not imported).

    ``CUDA_VISIBLE_DEVICES`` set to an empty string or ``-1`` hides every
    device; otherwise the device nodes decide.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


# Cords --------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenAIRoute:
    """One engine route a template exposes as a passthrough cord named ``name``."""

    name: str
    path: str
    method: str = "POST"
    stream: bool = False
    doc: str = ""


CHAT = OpenAIRoute(
    "chat",
    "/v1/chat/completions",
    stream=True,
    doc="OpenAI chat completions; streams Server-Sent Events when the request sets stream.",
)
COMPLETION = OpenAIRoute(
    "completion",
    "/v1/completions",
    stream=True,
    doc="OpenAI text completions; streams Server-Sent Events when the request sets stream.",
)
MODELS = OpenAIRoute("models", "/v1/models", method="GET", doc="The served model, OpenAI style.")
OPENAI_ROUTES = (CHAT, COMPLETION, MODELS)


def add_passthrough_cords(
    chute: Chute, port: int, routes: Iterable[OpenAIRoute]
) -> dict[str, Cord]:
    """Add one passthrough cord per route, forwarding to ``port``; returns them by name.

    A cord's public path is the engine's path; its internal path is
    ``/<name>``. The engine's answer is relayed as it comes, so one cord
    serves both plain and streamed requests.
    """
    from chutes_core.cord import Cord

    cords = {}
    for route in routes:
        cords[route.name] = chute.add_cord(
            Cord(
                _forwarded(route),
                path=f"/{route.name}",
                public_api_path=route.path,
                method=route.method,
                stream=route.stream,
                passthrough=True,
                passthrough_path=route.path,
                passthrough_port=port,
            )
        )
    return cords


def _forwarded(route: OpenAIRoute) -> Callable[..., Any]:
    async def forwarded(self: Any, *args: Any, **kwargs: Any) -> None:
        """Never called: the host forwards the request to the engine."""

    forwarded.__name__ = forwarded.__qualname__ = route.name
    forwarded.__doc__ = route.doc or f"{route.method} {route.path}, answered by the engine."
    return forwarded


# The template ---------------------------------------------------------------------
@dataclass(frozen=True)
class EngineLaunch:
    """What a template's :meth:`~OpenAIEngineTemplate.command` gets at startup."""

    #: The local directory (or file) holding the weights.
    model_path: str
    #: The name clients use in ``"model"``: the ``model_name`` the user gave.
    served_model_name: str
    #: ``node_selector.gpu_count``.
    tensor_parallel_size: int
    #: The driver: ``engine.server_flags()`` gives ``--host/--port/--api-key``.
    engine: OpenAIServerEngine
    #: The user's ``engine_args``, as flags (append them last).
    flags: list[str]
    #: True when no GPU is visible (see :func:`gpu_visible`).
    cpu: bool

    def python_command(
        self,
        module: str,
        *,
        model_flag: str,
        tensor_parallel_flag: str,
        defaults: Sequence[str] = (),
    ) -> list[str]:
        """``python -m <module>`` with the model, its served name, the tensor-parallel
        size, :meth:`OpenAIServerEngine.server_flags`, ``defaults``, then the user's flags."""
        return [
            sys.executable,
            "-m",
            module,
            model_flag,
            self.model_path,
            "--served-model-name",
            self.served_model_name,
            tensor_parallel_flag,
            str(self.tensor_parallel_size),
            *self.engine.server_flags(),
            *defaults,
            *self.flags,
        ]

    def unless_given(self, *defaults: Sequence[str]) -> list[str]:
        """The default flag groups (``["--dtype", "float32"]``) the user did not set."""
        given = set(flag_names(self.flags))
        # ``--no-enforce-eager`` decides about ``--enforce-eager`` too.
        given |= {"--" + name[5:] for name in given if name.startswith("--no-")}
        chosen: list[str] = []
        for group in defaults:
            if not set(flag_names(group[:1])) & given:
                chosen += group
        return chosen


_PARAMETERS = """
At startup the model is fetched (or used in place when it is a local path)
and the engine is started on loopback with a random API key, offline
(``HF_HUB_OFFLINE=1``). The chute is ready once the engine answers and a
one-token warm-up completes; if the engine dies, the chute turns unready
and exits non-zero. Its outbound network is closed after startup unless
``allow_external_egress=True``.

Parameters:
    username: your chutes username.
    model_name: a Hugging Face model (``org/name``), downloaded at startup with
        retries, or a local directory used as it is.
    node_selector: the GPUs to run on; ``gpu_count`` is the tensor-parallel size.
    image: the image to run in; by default, one with the engine installed.
    tagline, readme: shown with the chute.
    concurrency: requests in flight per instance (the engine batches them).
    engine_args: extra engine flags, as a dict (``{"max_model_len": 4096,
        "enable_prefix_caching": True}``: underscores become dashes, ``True`` is
        a bare flag, ``False`` leaves it out, a list repeats it) or as a
        command-line string. Flags the template sets itself (model, served
        name, revision, host, port, API key, tensor-parallel size) are refused.
    revision: the model commit to serve; required for hub models.
    max_instances, scaling_threshold, shutdown_after_seconds: scaling knobs.
    allow_external_egress: ``None`` (default) keeps outbound network closed
        after startup; ``True`` opens it (e.g. for image URLs).
    name: the chute's name; derived from ``model_name`` by default.

Cords: {cords}.
"""


class OpenAIEngineTemplate(ABC):
    """An engine that serves an OpenAI-compatible API, as a chute template.

    Subclasses set :attr:`name`, :attr:`engine_requirement` and
    :attr:`owned_flags`, and implement :meth:`command`; the class docstring
    becomes the docstring of the ``build_<name>_chute`` function that
    :meth:`builder` returns.
    """

    #: The template name (``standard_template``) and the engine's log prefix.
    name: ClassVar[str]
    #: One line for ``chutes plugins``.
    description: ClassVar[str] = ""
    #: The pip requirement that installs the engine, e.g. ``"vllm==0.32.0"``.
    engine_requirement: ClassVar[str]
    #: Flags the template sets, mapped to where their value comes from.
    owned_flags: ClassVar[Mapping[str, str]]
    #: The engine's routes exposed as cords.
    routes: ClassVar[tuple[OpenAIRoute, ...]] = OPENAI_ROUTES
    #: The loopback port the engine listens on (an instance may choose another).
    port: int = 10101
    #: The chute's concurrency unless the caller gives one.
    default_concurrency: ClassVar[int] = 32

    @abstractmethod
    def command(self, launch: EngineLaunch) -> list[str]:
        """The engine's command line; ``launch.flags`` (the user's) should come last."""

    def environment(self, launch: EngineLaunch) -> dict[str, str]:
        """Extra environment for the engine, on top of :func:`~chutes_core.hub.offline_env`."""
        return {}

    def build(
        self,
        username: str,
        model_name: str,
        node_selector: NodeSelector | None = None,
        image: str | Image | None = None,
        tagline: str = "",
        readme: str = "",
        concurrency: int | None = None,
        engine_args: EngineArgs = None,
        revision: str | None = None,
        max_instances: int = 1,
        scaling_threshold: float = 0.75,
        shutdown_after_seconds: int = 300,
        allow_external_egress: bool | None = None,
        name: str | None = None,
    ) -> ChutePack:
        """Build the chute: settings checked now, the engine started at startup."""
        from chutes_core.chute import Chute, ChutePack
        from chutes_core.engine import OpenAIServerEngine, completion_warmup

        where = f"build_{self.name}_chute"
        if not isinstance(model_name, str) or not model_name.strip():
            raise InvalidValueError(f"{where}(model_name)", model_name, "a model name or path")
        revision = check_revision(where, model_name, revision)
        flags = engine_args_to_flags(
            engine_args, owned=self.owned_flags, field=f"{where}(engine_args)"
        )
        chute = Chute(
            username=username,
            name=name if name is not None else chute_name_for(model_name),
            image=image,
            tagline=tagline,
            readme=readme,
            standard_template=self.name,
            revision=revision,
            node_selector=node_selector,
            concurrency=self.default_concurrency if concurrency is None else concurrency,
            max_instances=max_instances,
            scaling_threshold=scaling_threshold,
            shutdown_after_seconds=shutdown_after_seconds,
            allow_external_egress=allow_external_egress,
        )
        engine = OpenAIServerEngine(
            self.name, port=self.port, warmup=completion_warmup(model_name)
        ).attach(chute)
        template = self

        @chute.on_startup()
        async def start_engine(chute: Chute) -> None:
            from chutes_core.hub import fetch_model, offline_env

            # In a thread: a download must not stall the liveness probe.
            path = await asyncio.to_thread(fetch_model, model_name, revision)
            launch = EngineLaunch(
                model_path=str(path),
                served_model_name=model_name,
                tensor_parallel_size=chute.node_selector.gpu_count,
                engine=engine,
                flags=flags,
                cpu=not gpu_visible(),
            )
            if launch.cpu:
                log.info("no GPU visible: %s runs in CPU mode", template.name)
            env = {**offline_env(), **template.environment(launch)}
            await engine.start(chute, template.command(launch), env=env)

        @chute.on_shutdown()
        async def stop_engine(chute: Chute) -> None:
            await engine.stop()

        cords = add_passthrough_cords(chute, engine.port, self.routes)
        return ChutePack(chute, **cords)

    def builder(self) -> Callable[..., ChutePack]:
        """The ``build_<name>_chute`` function to register and export.

        It is :meth:`build` under the plugin's name and module, documented
        with the subclass's docstring plus the shared parameter list. Every
        call returns the same function.
        """
        existing: Callable[..., ChutePack] | None = self.__dict__.get("_builder")
        if existing is not None:
            return existing
        function_name = f"build_{self.name}_chute"

        @functools.wraps(self.build)
        def build(*args: Any, **kwargs: Any) -> ChutePack:
            return self.build(*args, **kwargs)

        build.__name__ = build.__qualname__ = function_name
        build.__module__ = type(self).__module__
        cords = ", ".join(f"{r.name} ({r.method} {r.path})" for r in self.routes)
        intro = (type(self).__doc__ or "").strip()
        build.__doc__ = f"{intro}\n{_PARAMETERS.replace('{cords}', cords)}"
        self.__dict__["_builder"] = build
        return build

    def image(self, chute: Chute) -> Image:
        """An image with the engine, chutes and the template's own distribution, all pinned."""
        from chutes_core import __version__
        from chutes_core.image import Image

        requirements = [self.engine_requirement, f"chutes=={__version__}"]
        plugin = _distribution_of(type(self).__module__)
        if plugin is not None:
            requirements.append(plugin)
        tag = self.engine_requirement.rpartition("==")[2] or "latest"
        return (
            Image(username=chute.username, name=self.name, tag=tag)
            .with_env("PYTHONUNBUFFERED", "1")
            .run_command("pip install --no-cache-dir " + " ".join(map(shlex.quote, requirements)))
        )


def _distribution_of(module: str) -> str | None:
    """``name==version`` of the installed distribution that provides ``module``."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for name in packages_distributions().get(module.split(".")[0], []):
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    return None


class TemplateHooks:
    """The hooks of a plugin that provides one :class:`OpenAIEngineTemplate`.

    ``template`` is the template itself or ``"module:attribute"``, imported
    when plugins load. A plugin module exposes the hooks as its own names::

        register_templates, build_image, egress_policy = TemplateHooks(
            "chutes_myengine.template:MYENGINE"
        ).hooks()

    They register the template, give its chutes the engine image unless
    they name an image, and keep its chutes off the network after startup
    unless they set ``allow_external_egress``.
    """

    def __init__(self, template: OpenAIEngineTemplate | str) -> None:
        self.reference = template

    @functools.cached_property
    def template(self) -> OpenAIEngineTemplate:
        import importlib

        if isinstance(self.reference, OpenAIEngineTemplate):
            return self.reference
        module, _, attribute = self.reference.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if not isinstance(found, OpenAIEngineTemplate):
            raise InvalidValueError(
                "TemplateHooks(template)", self.reference, "a reference to an OpenAIEngineTemplate"
            )
        return found

    def hooks(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        """``register_templates``, ``build_image`` and ``egress_policy``, for a plugin module."""
        return self.register_templates, self.build_image, self.egress_policy

    @hookimpl
    def register_templates(self, register: TemplateRegister) -> None:
        """Register ``build_<name>_chute``."""
        register(self.template.name, self.template.builder(), description=self.template.description)

    @hookimpl
    def build_image(self, chute: Chute, image: Image | None) -> Image | None:
        """The engine image, for this template's chutes that name no image."""
        if chute.standard_template != self.template.name or chute.image is not None:
            return None
        return self.template.image(chute)

    @hookimpl
    def egress_policy(self, chute: Chute) -> bool | None:
        """No outbound network after startup for this template's chutes: weights are local."""
        return False if chute.standard_template == self.template.name else None
