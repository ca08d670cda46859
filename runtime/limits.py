"""Request limits: headers, body size, body deadline, and JSON that cannot be answered.

The host reads a request's whole body *before* it takes a concurrency slot,
so a client that trickles its body holds a connection, never a slot. The
read is bounded twice: by size (413 as soon as the declared length or the
bytes received cross the limit, without reading the rest) and by time (408
past the deadline). Every refusal closes the connection.

Defaults, each overridable by an environment variable:

=============================  ===========  ========================================
``CHUTES_MAX_BODY_BYTES``      16 MiB       body size of a request (a cord's own
                                            ``max_body_bytes`` wins for that cord)
``CHUTES_BODY_TIMEOUT``        30 s         time to receive the whole body (408)
``CHUTES_MAX_HEADERS``         100          header fields in a request (431)
``CHUTES_MAX_HEADER_BYTES``    64 KiB       all header names and values (431)
=============================  ===========  ========================================
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BodyRefused", "Limits", "check_headers", "read_body", "unanswerable_json"]

Message = MutableMapping[str, Any]


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number")
    return value


@dataclass(frozen=True)
class Limits:
    """The host-wide request limits (see the module docstring for the defaults)."""

    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout: float = 30.0
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_body_bytes=int(_env_number("CHUTES_MAX_BODY_BYTES", cls.max_body_bytes)),
            body_timeout=_env_number("CHUTES_BODY_TIMEOUT", cls.body_timeout),
            max_headers=int(_env_number("CHUTES_MAX_HEADERS", cls.max_headers)),
            max_header_bytes=int(_env_number("CHUTES_MAX_HEADER_BYTES", cls.max_header_bytes)),
        )


class BodyRefused(Exception):
    """The body was not read to the end: answer ``status`` (0: the client left)."""

    def __init__(self, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        super().__init__(detail)


def check_headers(headers: list[tuple[bytes, bytes]], limits: Limits) -> str | None:
    """Why these headers are refused (431), or ``None``."""
    if len(headers) > limits.max_headers:
        return f"too many header fields: {len(headers)} (at most {limits.max_headers})"
    size = sum(len(name) + len(value) for name, value in headers)
    if size > limits.max_header_bytes:
        return f"headers too large: {size} bytes (at most {limits.max_header_bytes})"
    return None


def has_body(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body length; -1 when chunked; ``None`` when there is no body."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1  # malformed: read it and let the limits decide
        if name == b"transfer-encoding":
            return -1
    return None


async def read_body(
    receive: Callable[[], Awaitable[Message]], declared: int, max_bytes: int, timeout: float
) -> bytes:
    """The whole body, within ``max_bytes`` and ``timeout``; raises :class:`BodyRefused`."""
    if declared > max_bytes:
        raise BodyRefused(413, _too_large(max_bytes))
    try:
        if _TIMEOUT is not None:  # a timer on this task: no task of its own per request
            async with _TIMEOUT(timeout):
                return await _read(receive, max_bytes)
        return await asyncio.wait_for(_read(receive, max_bytes), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise BodyRefused(408, f"the request body did not arrive within {timeout:g}s") from None


_TIMEOUT = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _read(receive: Callable[[], Awaitable[Message]], max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyRefused(0, "the client went away")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise BodyRefused(413, _too_large(max_bytes))
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(max_bytes: int) -> str:
    return f"request body too large: at most {max_bytes} bytes"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (JSON numbers are finite)")


def unanswerable_json(body: bytes) -> str | None:
    """Why a JSON body is refused (400), or ``None``.

    Python's JSON decoder accepts ``NaN``, ``Infinity`` and lone UTF-16
    surrogates (``"\\ud800"``), none of which can be answered (the response
    encoder refuses them, as does UTF-8). The body is parsed only when one of
    them may be there, so ordinary bodies cost one byte search each.
    """
    if b"NaN" not in body and b"Infinity" not in body and b"\\u" not in body:
        return None
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:
        if "JSON numbers are finite" in str(exc):
            return str(exc)
        return None  # malformed JSON: the cord's own validation says how
    if b"\\u" in body:
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            return "the body has a lone UTF-16 surrogate (such as \\ud800), which is not text"
    return None
