"""A chute template for an engine that serves an OpenAI-compatible API from a subprocess.

The vLLM and SGLang plugins are each a small subclass of
:class:`OpenAIEngineTemplate`; a third-party engine plugin is built the same
way::

    class MyEngineTemplate(OpenAIEngineTemplate):
        \"\"\"Serve a model with MyEngine.\"\"\"

        name = "myengine"
        engine_requirement = pinned_requirement("chutes-myengine", "myengine")
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
fetched at startup in a thread (or used in place when it is a local path),
the engine started offline with
:class:`~chutes_core.engines.process.OpenAIServerEngine`, and one passthrough
cord per route. Streaming needs nothing special: a passthrough cord relays
whatever the engine answers, Server-Sent Events included, chunk by chunk.

A builder with parameters of its own (an embeddings template choosing among
engines) builds its chute and calls :meth:`OpenAIEngineTemplate.serve`.

Nothing here imports the engine, torch or FastAPI at import time.
"""

from __future__ import annotations

import inspect
import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from typing_extensions import Unpack

from chutes_core.engines.devices import gpu_visible
from chutes_core.engines.flags import EngineArgs, engine_args_to_flags, flag_names
from chutes_core.engines.model import check_revision, chute_name_for
from chutes_core.engines.routes import OPENAI_ROUTES, OpenAIRoute, add_passthrough_cords
from chutes_core.engines.settings import (
    SETTINGS_DOC,
    ChuteSettings,
    chute_from_settings,
    settings_parameters,
)
from chutes_core.errors import InvalidValueError

if TYPE_CHECKING:
    from chutes_core.chute import Chute, ChutePack
    from chutes_core.engines.process import OpenAIServerEngine, Warmup
    from chutes_core.image import Image

log = logging.getLogger("chutes.templates")


@dataclass(frozen=True)
class EngineLaunch:
    """What a template's :meth:`~OpenAIEngineTemplate.command` gets at startup."""

    #: The local directory (or file) holding the weights.
    model_path: str
    #: The name clients use in ``"model"``: the ``model_name`` the user gave, unless renamed.
    served_model_name: str
    #: ``node_selector.gpu_count``.
    tensor_parallel_size: int
    #: The driver: ``engine.server_flags()`` gives ``--host/--port/--api-key``.
    engine: OpenAIServerEngine
    #: The user's ``engine_args``, as flags (append them last).
    flags: list[str]
    #: True when no GPU is visible (see :func:`~chutes_core.engines.devices.gpu_visible`).
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


#: The parameters of ``build_<name>_chute``, in the order of the upstream templates
#: (whose users pass the first ones positionally).
BUILDER_PARAMETERS = (
    "username", "model_name", "node_selector", "image", "tagline", "readme", "concurrency",
    "engine_args", "revision", "max_instances", "scaling_threshold", "shutdown_after_seconds",
    "allow_external_egress", "name",
)  # fmt: skip

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
    engine_args: extra engine flags, as a dict (``{"max_model_len": 4096,
        "enable_prefix_caching": True}``: underscores become dashes, ``True`` is
        a bare flag, ``False`` leaves it out, a list repeats it) or as a
        command-line string. Flags the template sets itself (model, served
        name, revision, host, port, API key, tensor-parallel size) are refused.
    revision: the model commit to serve; required for hub models.
    node_selector: the GPUs to run on; ``gpu_count`` is the tensor-parallel size.
    image: by default, an image with the engine installed.
{settings}
Cords: {cords}.
"""


class OpenAIEngineTemplate(ABC):
    """An engine that serves an OpenAI-compatible API, as a chute template.

    Subclasses set :attr:`name`, :attr:`engine_requirement` and
    :attr:`owned_flags`, and implement :meth:`command`; the class docstring
    becomes the docstring of the ``build_<name>_chute`` function that
    :meth:`builder` returns. The other attributes and methods are the
    engine's particulars, each with a default that fits vLLM and SGLang.
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
    #: The engine path that answers 200 once it serves.
    ready_path: ClassVar[str] = "/v1/models"
    #: The engine's own cache variables, kept beside the weights (see ``offline_env``).
    cache_env: ClassVar[tuple[str, ...]] = ()
    #: Whether the template's chutes keep outbound network after startup (``None``: no opinion).
    egress: ClassVar[bool | None] = False
    #: The loopback port the engine listens on (an instance may choose another).
    port: int = 10101
    #: The chute's concurrency unless the caller gives one.
    default_concurrency: ClassVar[int] = 32

    @abstractmethod
    def command(self, launch: EngineLaunch) -> list[str]:
        """The engine's command line; ``launch.flags`` (the user's) should come last."""

    def environment(self, launch: EngineLaunch) -> dict[str, str]:
        """Extra environment for the engine, on top of
        :func:`~chutes_core.engines.hub.offline_env`."""
        return {}

    def working_directory(self, launch: EngineLaunch) -> str | None:
        """The engine's working directory (this may create it); ``None``: the host's."""
        return None

    def warmup(self, served_model_name: str) -> Warmup | None:
        """What to run once the engine answers, before the chute is ready: a one-token completion."""
        from chutes_core.engines.process import completion_warmup

        return completion_warmup(served_model_name)

    def check_engine_args(self, engine_args: EngineArgs, *, where: str) -> list[str]:
        """``engine_args`` as flags, with :attr:`owned_flags` refused (``where`` names the caller)."""
        return engine_args_to_flags(
            engine_args, owned=self.owned_flags, field=f"{where}(engine_args)"
        )

    def build(
        self,
        username: str,
        model_name: str,
        *,
        engine_args: EngineArgs = None,
        **settings: Unpack[ChuteSettings],
    ) -> ChutePack:
        """Build the chute: settings checked now, the engine started at startup."""
        where = f"build_{self.name}_chute"
        if not isinstance(model_name, str) or not model_name.strip():
            raise InvalidValueError(f"{where}(model_name)", model_name, "a model name or path")
        revision = check_revision(where, model_name, settings.get("revision"))
        flags = self.check_engine_args(engine_args, where=where)
        chute = chute_from_settings(
            where,
            username,
            settings,
            template=self.name,
            name=settings.get("name") or chute_name_for(model_name),
            concurrency=self.default_concurrency,
        )
        return self.serve(chute, model_name, revision=revision, flags=flags)

    def serve(
        self,
        chute: Chute,
        model_name: str,
        *,
        revision: str | None,
        flags: Sequence[str] = (),
        served_model_name: str | None = None,
        port: int | None = None,
    ) -> ChutePack:
        """Make ``chute`` serve ``model_name`` with this engine; its cords by route name.

        At startup the model is fetched in a thread, then the engine is
        started with :meth:`command`; at shutdown it is stopped. ``flags``
        are checked already (see :meth:`check_engine_args`).
        """
        from chutes_core.chute import ChutePack
        from chutes_core.engines.process import OpenAIServerEngine

        served = served_model_name or model_name
        engine = OpenAIServerEngine(
            self.name,
            port=self.port if port is None else port,
            ready_path=self.ready_path,
            warmup=self.warmup(served),
        ).attach(chute)
        template = self

        @chute.on_startup()
        async def start_engine(chute: Chute) -> None:
            from chutes_core.engines.hub import fetch_model_async, offline_env

            path = await fetch_model_async(model_name, revision)
            launch = EngineLaunch(
                model_path=str(path),
                served_model_name=served,
                tensor_parallel_size=chute.node_selector.gpu_count,
                engine=engine,
                flags=list(flags),
                cpu=not gpu_visible(),
            )
            if launch.cpu:
                log.info("no GPU visible: %s runs in CPU mode", template.name)
            env = {**offline_env(template.cache_env), **template.environment(launch)}
            await engine.start(
                chute,
                template.command(launch),
                env=env,
                cwd=template.working_directory(launch),
            )

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
        empty = inspect.Parameter.empty
        parameters = settings_parameters(
            BUILDER_PARAMETERS,
            username=empty,
            model_name=empty,
            engine_args=None,
            concurrency=self.default_concurrency,
        )
        parameters["username"] = parameters["username"].replace(annotation="str")
        parameters["model_name"] = parameters["model_name"].replace(annotation="str")
        parameters["engine_args"] = parameters["engine_args"].replace(annotation="EngineArgs")
        signature = inspect.Signature(list(parameters.values()), return_annotation="ChutePack")

        def build(*args: Any, **kwargs: Any) -> ChutePack:
            try:
                arguments = signature.bind(*args, **kwargs).arguments
            except TypeError as exc:
                raise TypeError(f"{function_name}(): {exc}") from None
            return self.build(**arguments)

        build.__signature__ = signature  # type: ignore[attr-defined]
        build.__name__ = build.__qualname__ = function_name
        build.__module__ = type(self).__module__
        cords = ", ".join(f"{r.name} ({r.method} {r.path})" for r in self.routes)
        intro = (type(self).__doc__ or "").strip()
        documented = _PARAMETERS.replace("{settings}", SETTINGS_DOC).replace("{cords}", cords)
        build.__doc__ = f"{intro}\n{documented}"
        self.__dict__["_builder"] = build
        return build

    def image(self, chute: Chute) -> Image:
        """An image with the engine, chutes and the template's own distribution, all pinned."""
        from chutes_core.engines.images import plugin_image

        tag = self.engine_requirement.rpartition("==")[2] or "latest"
        return plugin_image(
            chute, [self.engine_requirement], module=type(self).__module__, name=self.name, tag=tag
        )
