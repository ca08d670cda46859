"""Small validators shared by the SDK objects.

Each returns the value unchanged when it is acceptable and raises
:class:`~chutes_core.errors.InvalidValueError` otherwise. Nothing is coerced:
a string where an int is expected is an error, not a conversion.
"""

from __future__ import annotations

import re
from typing import Any

from chutes_core.errors import InvalidValueError

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
CORD_PATH_RE = re.compile(r"^(/[a-z0-9_]+[a-z0-9-_]*)+$")
IMAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-_.]*$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JOB_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def check_name(field: str, value: Any) -> str:
    """A username or chute name: DNS-label style, at most 63 characters."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidValueError(
            field,
            value,
            "use 1-63 lowercase letters, digits and hyphens, not starting or ending with a hyphen",
        )
    return value


def check_cord_path(field: str, value: Any) -> str:
    """A cord or websocket path such as ``/v1/chat_completions``."""
    if not isinstance(value, str) or not CORD_PATH_RE.match(value):
        raise InvalidValueError(
            field,
            value,
            "a path is one or more '/segment' parts of lowercase letters, digits, '_' and '-' "
            f"(pattern {CORD_PATH_RE.pattern})",
        )
    return value


def check_method(field: str, value: Any) -> str:
    """An HTTP method; case matters, as in the HTTP specification."""
    if value not in HTTP_METHODS:
        raise InvalidValueError(field, value, f"one of {', '.join(HTTP_METHODS)}")
    return str(value)


def check_image_part(field: str, value: Any) -> str:
    """An image name or tag."""
    if not isinstance(value, str) or not IMAGE_NAME_RE.match(value) or len(value) > 128:
        raise InvalidValueError(
            field,
            value,
            f"use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit "
            f"(pattern {IMAGE_NAME_RE.pattern}, at most 128 characters)",
        )
    return value


def check_env_key(field: str, value: Any) -> str:
    """An environment variable name."""
    if not isinstance(value, str) or not ENV_KEY_RE.match(value):
        raise InvalidValueError(
            field, value, f"an environment variable name matching {ENV_KEY_RE.pattern}"
        )
    return value


def check_int(field: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool, not a float) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValueError(field, value, _range_text(low, high, "an integer"))
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidValueError(field, value, _range_text(low, high, "an integer"))
    return value


def check_number(
    field: str, value: Any, *, low: float | None = None, high: float | None = None
) -> float:
    """An int or float (not a bool) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValueError(field, value, _range_text(low, high, "a number"))
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidValueError(field, value, _range_text(low, high, "a number"))
    return float(value)


def check_str(field: str, value: Any, *, max_length: int | None = None) -> str:
    """A string, optionally bounded in length."""
    if not isinstance(value, str):
        raise InvalidValueError(field, value, "a string")
    if max_length is not None and len(value) > max_length:
        raise InvalidValueError(
            field, value[:40] + "...", f"at most {max_length} characters (got {len(value)})"
        )
    return value


def check_bool(field: str, value: Any) -> bool:
    """A real bool; ``"false"`` or ``0`` are refused rather than guessed at."""
    if not isinstance(value, bool):
        raise InvalidValueError(field, value, "True or False")
    return value


def _range_text(low: float | None, high: float | None, kind: str) -> str:
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} of at least {low}"
    if high is not None:
        return f"{kind} of at most {high}"
    return kind
