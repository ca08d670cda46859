"""``Chute``: a FastAPI application that describes one deployable AI service.

Longer than most modules on purpose: ``Chute`` is the seeds' public class,
and its settings, its decorators (``cord``, ``job``, ``websocket``,
``on_startup``, ``on_shutdown``) and its deploy description belong together
where a user reading the API looks for them. What a cord, job or hook *is*
lives in ``cord.py``; serving them lives in the runtime.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel

from chutes_core.cord import (
    DEFAULT_BATCH_WAIT_TIMEOUT_S,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_PRIORITY,
    Cord,
    Job,
    LifecycleHook,
    WebsocketRoute,
    check_priority,
)
from chutes_core.errors import InvalidValueError
from chutes_core.hosting import HostControl
from chutes_core.image import Image
from chutes_core.node_selector import NodeSelector
from chutes_core.validation import check_bool, check_int, check_name, check_number, check_str

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ChuteConfig:
    """A read-only snapshot of a chute's settings (``self.config`` in hooks)."""

    username: str
    name: str
    uid: str
    image: str
    tagline: str
    readme: str
    standard_template: str | None
    revision: str | None
    node_selector: NodeSelector
    concurrency: int
    max_instances: int
    shutdown_after_seconds: int
    scaling_threshold: float
    allow_external_egress: bool | None


class Chute(FastAPI):
    """A deployable AI application: a FastAPI app plus cords, jobs and hooks.

    ``allow_external_egress`` left as ``None`` lets the installed plugins
    decide (engine templates default to ``False``), falling back to ``True``.
    Extra keyword arguments go to :class:`fastapi.FastAPI`.
    """

    def __init__(
        self,
        username: str,
        name: str,
        image: str | Image | None = None,
        tagline: str = "",
        readme: str = "",
        standard_template: str | None = None,
        revision: str | None = None,
        node_selector: NodeSelector | None = None,
        concurrency: int = 1,
        max_instances: int = 1,
        shutdown_after_seconds: int = 300,
        scaling_threshold: float = 0.75,
        allow_external_egress: bool | None = None,
        **fastapi_kwargs: Any,
    ) -> None:
        check_name("Chute.username", username)
        check_name("Chute.name", name)
        if image is not None and not isinstance(image, (str, Image)):
            raise InvalidValueError(
                "Chute.image", image, "an Image, an image reference string or None"
            )
        if isinstance(image, str) and not image.strip():
            raise InvalidValueError("Chute.image", image, "a non-empty image reference")
        if node_selector is None:
            node_selector = NodeSelector()
        elif not isinstance(node_selector, NodeSelector):
            raise InvalidValueError("Chute.node_selector", node_selector, "a NodeSelector or None")
        for field_name, value in (("standard_template", standard_template), ("revision", revision)):
            if value is not None:
                check_str(f"Chute.{field_name}", value, max_length=256)
        self._username = username
        self._name = name
        self._image = image
        self._tagline = check_str("Chute.tagline", tagline, max_length=1024)
        self._readme = check_str("Chute.readme", readme)
        self._standard_template = standard_template
        self._revision = revision
        self._node_selector = node_selector
        self._concurrency = check_int("Chute.concurrency", concurrency, low=1, high=4096)
        self._max_instances = check_int("Chute.max_instances", max_instances, low=1, high=1000)
        self._shutdown_after_seconds = check_int(
            "Chute.shutdown_after_seconds", shutdown_after_seconds, low=0, high=7 * 86400
        )
        self._scaling_threshold = check_number(
            "Chute.scaling_threshold", scaling_threshold, low=0.01, high=1.0
        )
        self._allow_external_egress = (
            None
            if allow_external_egress is None
            else check_bool("Chute.allow_external_egress", allow_external_egress)
        )
        self._cords: list[Cord] = []
        self._jobs: list[Job] = []
        self._websockets: list[WebsocketRoute] = []
        self._startup_hooks: list[LifecycleHook] = []
        self._shutdown_hooks: list[LifecycleHook] = []
        #: Set by the runtime while it hosts this chute: cords then run in place.
        self.hosted = False
        #: The egress decision the runtime made at startup (None until then).
        self.egress_allowed: bool | None = None
        #: Control over the serving host, set by the runtime while it serves.
        self.runtime: HostControl | None = None
        self.logger = logging.getLogger(f"chutes.chute.{name}")
        #: The keyword arguments this chute passed on to FastAPI (read them, don't change them).
        self.fastapi_options: dict[str, Any] = dict(fastapi_kwargs)
        fastapi_kwargs.setdefault("title", name)
        if tagline:
            fastapi_kwargs.setdefault("summary", tagline)
        if readme:
            fastapi_kwargs.setdefault("description", readme)
        super().__init__(**fastapi_kwargs)

    # Read-only description -------------------------------------------------
    @property
    def username(self) -> str:
        return self._username

    @property
    def name(self) -> str:
        return self._name

    @property
    def uid(self) -> str:
        """``uuid5(NAMESPACE_OID, "<username>::chute::<name>")``, stable across deploys."""
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self._username}::chute::{self._name}"))

    @property
    def image(self) -> str | Image | None:
        return self._image

    @property
    def tagline(self) -> str:
        return self._tagline

    @property
    def readme(self) -> str:
        return self._readme

    @property
    def standard_template(self) -> str | None:
        return self._standard_template

    @property
    def revision(self) -> str | None:
        return self._revision

    @property
    def node_selector(self) -> NodeSelector:
        return self._node_selector

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def max_instances(self) -> int:
        return self._max_instances

    @property
    def shutdown_after_seconds(self) -> int:
        return self._shutdown_after_seconds

    @property
    def scaling_threshold(self) -> float:
        return self._scaling_threshold

    @property
    def allow_external_egress(self) -> bool | None:
        """The egress setting as given; ``None`` means "let plugins decide"."""
        return self._allow_external_egress

    @property
    def cords(self) -> list[Cord]:
        return list(self._cords)

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    @property
    def websockets(self) -> list[WebsocketRoute]:
        return list(self._websockets)

    @property
    def startup_hooks(self) -> list[LifecycleHook]:
        return list(self._startup_hooks)

    @property
    def shutdown_hooks(self) -> list[LifecycleHook]:
        return list(self._shutdown_hooks)

    @property
    def app(self) -> Chute:
        """The FastAPI application: the chute itself."""
        return self

    @property
    def config(self) -> ChuteConfig:
        image = self._image
        return ChuteConfig(
            username=self._username,
            name=self._name,
            uid=self.uid,
            image=image.reference if isinstance(image, Image) else (image or ""),
            tagline=self._tagline,
            readme=self._readme,
            standard_template=self._standard_template,
            revision=self._revision,
            node_selector=self._node_selector,
            concurrency=self._concurrency,
            max_instances=self._max_instances,
            shutdown_after_seconds=self._shutdown_after_seconds,
            scaling_threshold=self._scaling_threshold,
            allow_external_egress=self._allow_external_egress,
        )

    # Decorators --------------------------------------------------------------
    def cord(
        self,
        path: str | None = None,
        public_api_path: str | None = None,
        public_api_method: str | None = None,
        method: str | None = None,
        stream: bool = False,
        passthrough: bool = False,
        passthrough_path: str | None = None,
        passthrough_port: int | None = None,
        input_schema: type[BaseModel] | None = None,
        minimal_input_schema: type[BaseModel] | None = None,
        output_schema: type[BaseModel] | None = None,
        output_content_type: str | None = None,
        provision_timeout: int = 180,
        batch: bool = False,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
        max_body_bytes: int | None = None,
        passthrough_connect_timeout: float | None = None,
        passthrough_read_timeout: float | None = None,
        responses: dict[int, dict[str, Any]] | None = None,
    ) -> Callable[[Callable[..., Any]], Cord]:
        """Declare an HTTP endpoint. The function receives the chute as ``self``.

        With ``batch=True`` it receives a list of inputs and returns a list of
        outputs; the host batches concurrent requests (see :class:`Cord`).
        """

        def decorator(fn: Callable[..., Any]) -> Cord:
            cord = Cord(
                fn,
                path=path,
                public_api_path=public_api_path,
                method=method,
                public_api_method=public_api_method,
                stream=stream,
                passthrough=passthrough,
                passthrough_path=passthrough_path,
                passthrough_port=passthrough_port,
                input_schema=input_schema,
                minimal_input_schema=minimal_input_schema,
                output_schema=output_schema,
                output_content_type=output_content_type,
                provision_timeout=provision_timeout,
                batch=batch,
                max_batch_size=max_batch_size,
                batch_wait_timeout_s=batch_wait_timeout_s,
                max_body_bytes=max_body_bytes,
                passthrough_connect_timeout=passthrough_connect_timeout,
                passthrough_read_timeout=passthrough_read_timeout,
                responses=responses,
            )
            self.add_cord(cord)
            return cord

        return decorator

    def add_cord(self, cord: Cord) -> Cord:
        """Attach a cord built elsewhere (a template or a plugin's ``declare_cords``)."""
        for other in self._cords:
            if other.path == cord.path:
                raise InvalidValueError(
                    f"cord {cord.name!r}: path",
                    cord.path,
                    f"a path not already used by cord {other.name!r}",
                )
            if (other.public_api_path, other.method) == (cord.public_api_path, cord.method):
                raise InvalidValueError(
                    f"cord {cord.name!r}: public_api_path",
                    f"{cord.method} {cord.public_api_path}",
                    f"a path and method not already used by cord {other.name!r}",
                )
        cord.chute = self
        self._cords.append(cord)
        return cord

    def job(
        self,
        name: str | None = None,
        schedule: str | None = None,
        retry_count: int = 3,
        timeout: int | None = None,
        ports: list[int] | None = None,
        upload: bool = True,
    ) -> Callable[[Callable[..., Any]], Job]:
        """Declare a background job, run on demand or on a cron ``schedule``."""

        def decorator(fn: Callable[..., Any]) -> Job:
            job = Job(
                fn,
                name=name,
                schedule=schedule,
                retry_count=retry_count,
                timeout=timeout,
                ports=ports,
                upload=upload,
            )
            if any(other.name == job.name for other in self._jobs):
                raise InvalidValueError("job name", job.name, "a name not used by another job")
            job.chute = self
            self._jobs.append(job)
            return job

        return decorator

    def websocket(self, path: str) -> Callable[[F], F]:  # type: ignore[override]
        """Declare a websocket endpoint; the function receives ``(self, websocket)``."""

        def decorator(fn: F) -> F:
            route = WebsocketRoute(fn, path)
            if any(other.path == path for other in self._websockets):
                raise InvalidValueError(
                    "websocket path", path, "a path not used by another websocket"
                )
            self._websockets.append(route)
            return fn

        return decorator

    def on_startup(self, priority: int = DEFAULT_PRIORITY) -> Callable[[F], F]:  # type: ignore[override]
        """Run the function (sync or async) at startup; lower priority runs first."""
        check_priority("on_startup(priority)", priority)

        def decorator(fn: F) -> F:
            self._startup_hooks.append(LifecycleHook(fn, priority))
            return fn

        return decorator

    def on_shutdown(self, priority: int = DEFAULT_PRIORITY) -> Callable[[F], F]:  # type: ignore[override]
        """Run the function (sync or async) at shutdown; lower priority runs first."""
        check_priority("on_shutdown(priority)", priority)

        def decorator(fn: F) -> F:
            self._shutdown_hooks.append(LifecycleHook(fn, priority))
            return fn

        return decorator

    # Runtime helpers -----------------------------------------------------------
    def fatal(self, reason: str, exit_code: int = 1) -> None:
        """Report an unrecoverable failure (an engine died): go unready and exit.

        Outside a host this only logs, so templates can call it unconditionally.
        """
        self.logger.error("fatal: %s", reason)
        if self.runtime is not None:
            self.runtime.set_unready(reason)
            self.runtime.request_exit(exit_code, reason)

    async def health_check(self) -> dict[str, Any]:
        """The default health answer; a startup hook may replace it on the instance."""
        return {"status": "healthy", "timestamp": datetime.now(timezone.utc).isoformat()}

    def run_local(
        self,
        host: str = "0.0.0.0",
        port: int = 8000,
        reload: bool = True,
        log_level: str = "info",
    ) -> None:
        """Serve this chute in dev mode (public paths) with the installed runtime host."""
        from chutes_core.hosting import get_runtime

        get_runtime().run_local(self, host=host, port=port, reload=reload, log_level=log_level)

    def to_dict(self) -> dict[str, Any]:
        """The chute as the deploy payload describes it (code is added by the deployer)."""
        image = self._image
        return {
            "username": self._username,
            "name": self._name,
            "uid": self.uid,
            "tagline": self._tagline,
            "readme": self._readme,
            "image": image.to_dict() if isinstance(image, Image) else image,
            "standard_template": self._standard_template,
            "revision": self._revision,
            "node_selector": self._node_selector.model_dump(),
            "concurrency": self._concurrency,
            "max_instances": self._max_instances,
            "shutdown_after_seconds": self._shutdown_after_seconds,
            "scaling_threshold": self._scaling_threshold,
            "allow_external_egress": self._allow_external_egress,
            "cords": [cord.to_dict() for cord in self._cords],
            "jobs": [job.to_dict() for job in self._jobs],
        }

    def __repr__(self) -> str:
        return f"<Chute {self._username}/{self._name} cords={[c.name for c in self._cords]}>"


class ChutePack:
    """What a ``build_*_chute`` template returns: the chute plus its named cords.

    Attribute access falls through to the chute, so a pack can be used where a
    chute is expected (``pack.cord(...)``, ``pack.name``), and the runtime
    unwraps it when it is the target of ``chutes run``.
    """

    def __init__(self, chute: Chute, **cords: Cord) -> None:
        if not isinstance(chute, Chute):
            raise InvalidValueError("ChutePack.chute", chute, "a Chute")
        self.chute = chute
        self.named_cords = dict(cords)

    def __getattr__(self, name: str) -> Any:
        cords = self.__dict__.get("named_cords", {})
        if name in cords:
            return cords[name]
        return getattr(self.__dict__["chute"], name)

    def __iter__(self) -> Iterator[Any]:
        yield self.chute
        yield from self.named_cords.values()

    def __repr__(self) -> str:
        return f"<ChutePack {self.chute!r} {sorted(self.named_cords)}>"


def unwrap(obj: Any) -> Chute:
    """The chute behind ``obj`` (a Chute or a ChutePack), or a clear error."""
    if isinstance(obj, Chute):
        return obj
    if isinstance(obj, ChutePack):
        return obj.chute
    # Template results written as NamedTuples (chute, cord, ...) also work.
    inner = getattr(obj, "chute", None)
    if isinstance(obj, tuple) and isinstance(inner, Chute):
        return inner
    raise InvalidValueError(
        "chute reference", type(obj).__name__, "a Chute or the result of a build_*_chute template"
    )
