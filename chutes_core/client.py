"""Calling a cord from Python against a running dev server.

Outside the runtime, ``await my_cord(...)`` sends the call to the server at
``CHUTES_DEV_URL`` (for example one started with ``chutes run mod:chute
--dev``), in the same shape the route expects, and returns the decoded
answer. Streaming cords return an async iterator over the streamed events.
Calls carry the credentials the environment configures (see
:func:`chutes_core.signing.auth_from_env`): a signature with
``CHUTES_SIGNING_KEY``, a bearer key with ``CHUTES_API_KEY``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    import httpx

    from chutes_core.cord import Cord


class CordCallError(ChutesError):
    """The server answered a cord call with an error status."""

    def __init__(self, cord: str, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(f"cord {cord!r} failed with HTTP {status}: {detail}")


def _base_url() -> str:
    url = os.environ.get("CHUTES_DEV_URL")
    if not url:
        raise ChutesError(
            "calling a cord outside the runtime needs CHUTES_DEV_URL, the address of a "
            "running `chutes run module:chute --dev` (for example http://127.0.0.1:8000)"
        )
    return url.rstrip("/")


def _request_args(cord: Cord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    from pydantic import BaseModel
    from pydantic_core import to_jsonable_python

    from chutes_core.signature import cord_signature

    sig = cord_signature(cord)
    try:
        values = sig.bind(args, kwargs)
    except TypeError as exc:
        raise TypeError(f"cord {cord.name!r}: {exc}") from None
    if sig.model is not None:
        value = values.get(sig.model[0])
        body = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return {"json": to_jsonable_python(body)}
    payload = to_jsonable_python(values)
    if cord.method == "GET":
        return {"params": payload}
    return {"json": payload}


def _decode(response: httpx.Response) -> Any:
    kind = response.headers.get("content-type", "")
    if "json" in kind:
        return response.json()
    if kind.startswith("text/"):
        return response.text
    return response.content


def _error(cord: Cord, response: httpx.Response) -> CordCallError:
    try:
        detail = response.json().get("detail", response.text)
    except Exception:
        detail = response.text
    return CordCallError(cord.name, response.status_code, detail)


def _client() -> httpx.AsyncClient:
    import httpx

    from chutes_core.signing import auth_from_env

    return httpx.AsyncClient(base_url=_base_url(), timeout=None, auth=auth_from_env())


async def _call(cord: Cord, request: dict[str, Any]) -> Any:

    async with _client() as client:
        response = await client.request(cord.method, cord.public_api_path, **request)
        if response.status_code >= 400:
            raise _error(cord, response)
        return _decode(response)


async def _stream(cord: Cord, request: dict[str, Any]) -> AsyncIterator[Any]:

    async with (
        _client() as client,
        client.stream(cord.method, cord.public_api_path, **request) as response,
    ):
        if response.status_code >= 400:
            await response.aread()
            raise _error(cord, response)
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                yield json.loads(data)
            except ValueError:
                yield data


async def _call_batch(cord: Cord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """A batched cord called with a list: one request per input, sent together (the host
    batches them again); a failed input's slot holds its :class:`CordCallError`."""
    import asyncio

    from pydantic import BaseModel
    from pydantic_core import to_jsonable_python

    from chutes_core.signature import cord_signature

    sig = cord_signature(cord)
    try:
        items = sig.bind(args, kwargs)[sig.inputs[0].name]
    except (TypeError, KeyError, IndexError) as exc:
        raise TypeError(f"cord {cord.name!r}: {exc}") from None
    bodies = [i.model_dump(mode="json") if isinstance(i, BaseModel) else i for i in items]
    calls = [_call(cord, {"json": to_jsonable_python(body)}) for body in bodies]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, CordCallError):
            raise result  # the server is unreachable, not one input bad
    return list(results)


def call_cord(cord: Cord, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A coroutine (or, for streaming cords, an async iterator) for this call."""
    if cord.batch:
        return _call_batch(cord, args, kwargs)
    request = _request_args(cord, args, kwargs)
    if cord.stream:
        return _stream(cord, request)
    return _call(cord, request)
