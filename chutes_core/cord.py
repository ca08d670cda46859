"""What a chute is made of: cords (HTTP endpoints), jobs, websockets and hooks.

These are plain descriptions. The runtime (``chutes_runtime``) turns them into
routes; the deploy client turns them into a payload. Calling a cord from
Python runs it in place when the chute is being hosted, and otherwise sends
the request to a running dev server (``CHUTES_DEV_URL``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from chutes_core.errors import InvalidValueError
from chutes_core.validation import (
    JOB_NAME_RE,
    check_bool,
    check_cord_path,
    check_int,
    check_method,
    check_number,
)

if TYPE_CHECKING:
    from chutes_core.chute import Chute

HookFn = Callable[..., Any | Awaitable[Any]]

DEFAULT_PRIORITY = 50
#: Batched cords, unless told otherwise: Ray Serve's names, LitServe-like values.
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_BATCH_WAIT_TIMEOUT_S = 0.01


def describe(fn: Callable[..., Any]) -> str:
    """``module.qualname (file:line)``, for messages that must point at user code."""
    code = getattr(fn, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}{where}"


@dataclass(frozen=True)
class LifecycleHook:
    """A startup or shutdown function and where it sorts.

    Lower ``priority`` runs first; equal priorities keep registration order.
    ``fn`` receives the chute and may be sync or async. ``owner`` says who
    registered it (``"chute"`` or a plugin name), for error messages.
    """

    fn: HookFn
    priority: int = DEFAULT_PRIORITY
    owner: str = "chute"

    @property
    def name(self) -> str:
        return f"{self.owner}: {describe(self.fn)}"


def _check_seconds(field_name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
        raise InvalidValueError(field_name, value, "a number of seconds in (0, 86400], or None")
    return float(value)


def _check_schema(field_name: str, value: Any) -> type[BaseModel] | None:
    if value is None or (isinstance(value, type) and issubclass(value, BaseModel)):
        return value
    raise InvalidValueError(field_name, value, "a pydantic BaseModel subclass or None")


class Cord:
    """One HTTP endpoint of a chute.

    ``path`` is the internal path (default: ``/<function name>``);
    ``public_api_path`` and ``method`` are what users call (default: ``path``
    and ``POST``). A passthrough cord forwards the request to a server the
    chute runs on loopback (``passthrough_port``, ``passthrough_path``); its
    function body is never called.

    A cord with ``batch=True`` takes one parameter annotated ``list[Model]``
    and returns a list with one output per input (an ``Exception`` in a slot
    fails only that request). Each request carries one ``Model``; the host
    gathers concurrent requests into lists of at most ``max_batch_size``,
    waiting at most ``batch_wait_timeout_s`` for a list to fill (see
    :mod:`chutes_core.batching`).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        path: str | None = None,
        public_api_path: str | None = None,
        method: str | None = None,
        public_api_method: str | None = None,
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
    ) -> None:
        if not callable(fn):
            raise InvalidValueError("cord function", fn, "a function")
        self.fn = fn
        self.name: str = fn.__name__
        where = f"cord {self.name!r}"
        self.path = check_cord_path(f"{where}: path", path or f"/{self.name}")
        self.public_api_path = check_cord_path(
            f"{where}: public_api_path", public_api_path or self.path
        )
        if public_api_method is not None:
            warnings.warn(
                f"{where}: public_api_method is deprecated; use method=",
                DeprecationWarning,
                stacklevel=3,
            )
            if method is not None and method != public_api_method:
                raise InvalidValueError(
                    f"{where}: public_api_method",
                    public_api_method,
                    f"the same value as method ({method!r}), or leave it out",
                )
        self.method = check_method(f"{where}: method", method or public_api_method or "POST")
        self.stream = check_bool(f"{where}: stream", stream)
        self.passthrough = check_bool(f"{where}: passthrough", passthrough)
        self.passthrough_path: str | None = None
        self.passthrough_port: int | None = None
        if passthrough:
            if passthrough_port is None:
                raise InvalidValueError(
                    f"{where}: passthrough_port",
                    None,
                    "the loopback port of the server to forward to (passthrough=True needs it)",
                )
            self.passthrough_port = check_int(
                f"{where}: passthrough_port", passthrough_port, low=1, high=65535
            )
            pt_path = passthrough_path or self.public_api_path
            if not isinstance(pt_path, str) or not pt_path.startswith("/"):
                raise InvalidValueError(
                    f"{where}: passthrough_path", pt_path, "a path starting with '/'"
                )
            self.passthrough_path = pt_path
        elif passthrough_path is not None or passthrough_port is not None:
            raise InvalidValueError(
                f"{where}: passthrough",
                passthrough,
                "True when passthrough_path or passthrough_port is given",
            )
        self.input_schema = _check_schema(f"{where}: input_schema", input_schema)
        self.minimal_input_schema = _check_schema(
            f"{where}: minimal_input_schema", minimal_input_schema
        )
        self.output_schema = _check_schema(f"{where}: output_schema", output_schema)
        if output_content_type is not None and (
            not isinstance(output_content_type, str) or "/" not in output_content_type
        ):
            raise InvalidValueError(
                f"{where}: output_content_type",
                output_content_type,
                "a MIME type such as 'image/png'",
            )
        self.output_content_type = output_content_type
        self.provision_timeout = check_int(
            f"{where}: provision_timeout", provision_timeout, low=1, high=86400
        )
        self.batch = check_bool(f"{where}: batch", batch)
        self.max_batch_size = check_int(
            f"{where}: max_batch_size", max_batch_size, low=1, high=65536
        )
        self.batch_wait_timeout_s = check_number(
            f"{where}: batch_wait_timeout_s", batch_wait_timeout_s, low=0, high=60
        )
        if batch:
            self.input_schema = _check_batch(where, fn, self)
        #: The largest request body this cord takes (413 beyond); ``None``: the host's
        #: ``CHUTES_MAX_BODY_BYTES``.
        self.max_body_bytes = (
            None
            if max_body_bytes is None
            else check_int(f"{where}: max_body_bytes", max_body_bytes, low=1, high=2**40)
        )
        #: Passthrough: seconds to connect to the engine, and to wait for each read
        #: from it (its headers, then each body chunk); 504 past them. ``None``: the
        #: host's ``CHUTES_PASSTHROUGH_CONNECT_TIMEOUT`` (10) and
        #: ``CHUTES_PASSTHROUGH_READ_TIMEOUT`` (300).
        self.passthrough_connect_timeout = _check_seconds(
            f"{where}: passthrough_connect_timeout", passthrough_connect_timeout
        )
        self.passthrough_read_timeout = _check_seconds(
            f"{where}: passthrough_read_timeout", passthrough_read_timeout
        )
        #: Answers besides success the cord may give, for its OpenAPI schema, in
        #: FastAPI's ``responses=`` form (``{400: {"description": ..., "model": ...}}``).
        if responses is not None and not (
            isinstance(responses, dict) and all(isinstance(k, int) for k in responses)
        ):
            raise InvalidValueError(
                f"{where}: responses", responses, "a dict of HTTP status -> OpenAPI response"
            )
        self.responses = responses
        self.chute: Chute | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = self.name
        self.__wrapped__ = fn

    @property
    def public_api_method(self) -> str:
        """Deprecated alias of :attr:`method`."""
        return self.method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        chute = self.chute
        if chute is not None and chute.hosted:
            return self.fn(chute, *args, **kwargs)
        from chutes_core.client import call_cord

        return call_cord(self, args, kwargs)

    def __repr__(self) -> str:
        kind = " passthrough" if self.passthrough else ""
        return f"<Cord{kind} {self.name} {self.method} {self.public_api_path}>"

    def to_dict(self) -> dict[str, Any]:
        """The cord as the deploy payload describes it (``batch`` only for batched cords)."""

        def schema(model: type[BaseModel] | None) -> dict[str, Any] | None:
            return model.model_json_schema() if model is not None else None

        described = {
            "function": self.name,
            "path": self.path,
            "public_api_path": self.public_api_path,
            "public_api_method": self.method,
            "method": self.method,
            "stream": self.stream,
            "passthrough": self.passthrough,
            "passthrough_path": self.passthrough_path,
            "passthrough_port": self.passthrough_port,
            "input_schema": schema(self.input_schema),
            "minimal_input_schema": schema(self.minimal_input_schema),
            "output_schema": schema(self.output_schema),
            "output_content_type": self.output_content_type,
            "provision_timeout": self.provision_timeout,
            "doc": inspect.getdoc(self.fn),
        }
        if self.batch:
            described["batch"] = {
                "max_batch_size": self.max_batch_size,
                "batch_wait_timeout_s": self.batch_wait_timeout_s,
            }
        return described


def _check_batch(where: str, fn: Callable[..., Any], cord: Cord) -> type[BaseModel]:
    """The model of one input of a batched cord (from ``list[Model]`` or ``input_schema``)."""
    if cord.stream or cord.passthrough or cord.method == "GET":
        raise InvalidValueError(
            f"{where}: batch", True, "False for stream, passthrough and GET cords"
        )
    from chutes_core.batching import list_item

    params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
    hints = _hints(fn)
    inputs = [p for p in params if not _is_request_type(hints.get(p.name))]
    item = list_item(hints.get(inputs[0].name)) if len(inputs) == 1 else None
    model = cord.input_schema or item
    if len(inputs) != 1 or not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise InvalidValueError(
            f"{where}: batch",
            True,
            "a function with one input parameter annotated list[Model] (a pydantic model), "
            "or input_schema=Model",
        )
    return model


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return dict(getattr(fn, "__annotations__", {}))


def _is_request_type(annotation: Any) -> bool:
    from starlette.requests import Request

    return isinstance(annotation, type) and issubclass(annotation, Request)


class Job:
    """A background job: triggered over HTTP or by a cron ``schedule``.

    A failed run is retried up to ``retry_count`` times; ``timeout`` (seconds)
    bounds each attempt.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        schedule: str | None = None,
        retry_count: int = 3,
        timeout: int | None = None,
        ports: list[int] | None = None,
        upload: bool = True,
    ) -> None:
        self.fn = fn
        self.name = name if name is not None else fn.__name__
        where = f"job {self.name!r}"
        if not isinstance(self.name, str) or not JOB_NAME_RE.match(self.name):
            raise InvalidValueError(
                f"{where}: name",
                self.name,
                f"lowercase letters, digits and '_' ({JOB_NAME_RE.pattern})",
            )
        if schedule is not None:
            schedule = _check_cron(f"{where}: schedule", schedule)
        self.schedule = schedule
        self.retry_count = check_int(f"{where}: retry_count", retry_count, low=0, high=100)
        self.timeout = (
            None if timeout is None else check_int(f"{where}: timeout", timeout, low=1, high=86400)
        )
        self.ports = [check_int(f"{where}: ports[]", p, low=1, high=65535) for p in ports or []]
        self.upload = check_bool(f"{where}: upload", upload)
        self.chute: Chute | None = None
        self.__doc__ = fn.__doc__
        self.__name__ = self.name
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.chute is None:
            raise RuntimeError(f"job {self.name!r} is not attached to a chute")
        return self.fn(self.chute, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<Job {self.name} schedule={self.schedule!r}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule,
            "retry_count": self.retry_count,
            "timeout": self.timeout,
            "ports": self.ports,
            "upload": self.upload,
            "doc": inspect.getdoc(self.fn),
        }


@dataclass
class WebsocketRoute:
    """A websocket endpoint; ``fn(self, websocket)`` owns the connection."""

    fn: Callable[..., Any]
    path: str
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.fn.__name__
        check_cord_path(f"websocket {self.name!r}: path", self.path)


def _check_cron(field_name: str, expression: Any) -> str:
    if not isinstance(expression, str):
        raise InvalidValueError(field_name, expression, "a cron expression such as '0 2 * * *'")
    from datetime import datetime

    from cronsim import CronSim, CronSimError

    try:
        CronSim(expression, datetime.now())
    except CronSimError as exc:
        raise InvalidValueError(
            field_name, expression, f"a five-field cron expression such as '0 2 * * *' ({exc})"
        ) from None
    return expression


def check_priority(field_name: str, priority: Any) -> int:
    return check_int(field_name, priority, low=0, high=1000)
