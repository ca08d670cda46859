"""How a cord's Python signature maps to an HTTP request.

Shared by the runtime (which builds routes from it) and the Python client
(which builds requests from it), so the two can never disagree:

- a cord whose single input is a pydantic model (by annotation, or through
  ``input_schema``) takes that model as its JSON body;
- otherwise each parameter is a key of a JSON object body (or, for ``GET``
  cords, a query parameter);
- parameters annotated as ``fastapi.Request`` receive the request itself.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from chutes_core.cord import Cord


@dataclass(frozen=True)
class CordSignature:
    """The inputs of a cord, with ``self`` removed."""

    #: ``(parameter name, model)`` when the body is one pydantic model.
    model: tuple[str, type[BaseModel]] | None
    #: Every input parameter (the model parameter included, the request not).
    inputs: tuple[inspect.Parameter, ...]
    #: Name of a parameter that receives the ``Request``, if any.
    request_param: str | None
    #: Resolved annotations of every parameter and of the return value.
    hints: dict[str, Any]

    @property
    def fields(self) -> tuple[inspect.Parameter, ...]:
        """Plain parameters, each a body key (or a query parameter for GET)."""
        return () if self.model is not None else self.inputs

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Map a Python call's arguments to parameter names (``self`` excluded)."""
        bound = inspect.Signature(list(self.inputs)).bind(*args, **kwargs)
        return dict(bound.arguments)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_request(annotation: Any) -> bool:
    if not isinstance(annotation, type):
        return False
    from starlette.requests import Request

    return issubclass(annotation, Request)


@cache
def _analyse(fn: Any, input_schema: type[BaseModel] | None) -> CordSignature:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = dict(getattr(fn, "__annotations__", {}))
    params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
    request_param = None
    inputs = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if _is_request(hints.get(param.name)):
            request_param = param.name
        else:
            inputs.append(param)
    model = None
    if len(inputs) == 1:
        annotation = hints.get(inputs[0].name, inputs[0].annotation)
        if _is_model(annotation):
            model = (inputs[0].name, annotation)
        elif input_schema is not None:
            model = (inputs[0].name, input_schema)
    return CordSignature(
        model=model, inputs=tuple(inputs), request_param=request_param, hints=hints
    )


def cord_signature(cord: Cord) -> CordSignature:
    """The (cached) input description of ``cord``."""
    return _analyse(cord.fn, cord.input_schema)
