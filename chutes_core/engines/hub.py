"""Fetching model weights: a local path as-is, a hub name with retries.

Templates await :func:`fetch_model_async` in a startup hook (the download
runs in a thread, so the liveness probe keeps answering). Downloads go through
``huggingface_hub.snapshot_download`` (its progress bars show in the log),
retried with backoff; afterwards the engine runs with ``HF_HUB_OFFLINE=1``
so it never reaches the hub itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chutes_core.errors import ChutesError

log = logging.getLogger("chutes.hub")

#: Caches every torch-based engine writes (compiled kernels), kept beside the weights.
#: A template adds its engine's own (see ``OpenAIEngineTemplate.cache_env``).
CACHE_ENV = ("TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")


def is_local(model: str) -> bool:
    """Whether ``model`` names a directory or file on disk rather than a hub repository."""
    return os.path.exists(os.path.expanduser(model))


def fetch_model(
    model: str,
    revision: str | None = None,
    *,
    cache_dir: str | None = None,
    allow_patterns: list[str] | None = None,
    attempts: int = 5,
    backoff: float = 2.0,
) -> Path:
    """The local directory holding ``model``, downloading it when it is a hub name."""
    if is_local(model):
        path = Path(os.path.expanduser(model)).resolve()
        log.info("using local model %s", path)
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ChutesError(
            f"{model!r} is not a local path and huggingface_hub is not installed; "
            "pip install 'chutes[hub]'"
        ) from None
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        began = time.monotonic()
        log.info("downloading %s@%s (attempt %d/%d)", model, revision or "main", attempt, attempts)
        try:
            downloaded = snapshot_download(
                model, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns
            )
        except Exception as exc:  # network errors, rate limits, partial files
            last = exc
            if _permanent(exc):
                break
            delay = backoff**attempt
            log.warning("download of %s failed (%s); retrying in %.0fs", model, exc, delay)
            time.sleep(delay)
            continue
        log.info("downloaded %s in %.0fs to %s", model, time.monotonic() - began, downloaded)
        return Path(downloaded)
    raise ChutesError(f"could not download {model!r} at revision {revision!r}: {last}") from last


async def fetch_model_async(model: str, revision: str | None = None, **options: Any) -> Path:
    """:func:`fetch_model` in a worker thread: for startup hooks, which run on the event loop."""
    return await asyncio.to_thread(fetch_model, model, revision, **options)


def _permanent(exc: Exception) -> bool:
    name = type(exc).__name__
    return name in {
        "RepositoryNotFoundError",
        "RevisionNotFoundError",
        "GatedRepoError",
        "LocalEntryNotFoundError",
    }


def offline_env(cache_env: Iterable[str] = ()) -> dict[str, str]:
    """Environment for an engine that must not reach the hub.

    Engine caches (:data:`CACHE_ENV` and the engine's own ``cache_env``
    variables) go under ``CHUTES_CACHE_DIR`` (default ``~/.cache/chutes``)
    unless already set, so they persist beside the downloaded weights rather
    than in a temporary directory.
    """
    root = Path(os.environ.get("CHUTES_CACHE_DIR") or Path.home() / ".cache" / "chutes")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in (*CACHE_ENV, *cache_env):
        env[name] = os.environ.get(name) or str(root / name.lower())
    return env
