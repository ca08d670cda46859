"""Fetching model weights: a local path as-is, a hub name with retries.

Templates await :func:`fetch_model_async` in a startup hook (the download
runs in a thread, so the liveness probe keeps answering). Each file of the
repository is fetched with ``huggingface_hub.hf_hub_download`` (eight at a
time, as ``snapshot_download`` does), whose byte counts feed the ``download``
warm-up phase per file (see :mod:`chutes_core.progress`); the whole is
retried with backoff, and ``snapshot_download`` then names the folder from the
cache. With ``HF_HUB_OFFLINE`` set, ``snapshot_download`` alone answers from
the cache. Afterwards the engine runs with ``HF_HUB_OFFLINE=1`` so it never
reaches the hub itself.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from chutes_core import progress
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
        size = _size(path)
        progress.phase(progress.DOWNLOAD, total=size, unit="bytes", detail=f"local {path}").finish()
        return path
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ChutesError(
            f"{model!r} is not a local path and huggingface_hub is not installed; "
            "pip install 'chutes[hub]'"
        ) from None
    last: Exception | None = None
    phase = progress.phase(progress.DOWNLOAD, unit="bytes", detail=model)
    for attempt in range(1, attempts + 1):
        began = time.monotonic()
        log.info("downloading %s@%s (attempt %d/%d)", model, revision or "main", attempt, attempts)
        try:
            downloaded = _download(model, revision, cache_dir, allow_patterns, phase)
        except Exception as exc:  # network errors, rate limits, partial files
            last = exc
            if _permanent(exc):
                break
            delay = backoff**attempt
            log.warning("download of %s failed (%s); retrying in %.0fs", model, exc, delay)
            time.sleep(delay)
            continue
        log.info("downloaded %s in %.0fs to %s", model, time.monotonic() - began, downloaded)
        phase.finish()
        return Path(downloaded)
    error = ChutesError(f"could not download {model!r} at revision {revision!r}: {last}")
    phase.fail(error)
    raise error from last


def _download(
    model: str,
    revision: str | None,
    cache_dir: str | None,
    allow_patterns: list[str] | None,
    phase: progress.Phase,
) -> str:
    """Fetch every file of ``model`` with its byte progress; the snapshot folder."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    if _offline():  # the cache is all there is: nothing to download, nothing to count
        cached = snapshot_download(
            model, revision=revision, cache_dir=cache_dir, allow_patterns=allow_patterns
        )
        size = _size(Path(cached))
        phase.update(done=size, total=size, detail=f"{model} (offline: from the cache)")
        return str(cached)
    info = HfApi().model_info(model, revision=revision, files_metadata=True)
    commit = info.sha or revision
    siblings = list(
        filter_repo_objects(
            info.siblings or [], allow_patterns=allow_patterns, key=lambda s: s.rfilename
        )
    )
    for sibling in siblings:  # totals first, so the phase knows its whole size at once
        phase.file(sibling.rfilename, 0, sibling.size)

    # Older huggingface_hub releases take no per-file progress class: files then count when done.
    per_file = "tqdm_class" in inspect.signature(hf_hub_download).parameters

    def fetch(sibling: Any) -> None:
        name, size = sibling.rfilename, sibling.size
        bars = {"tqdm_class": file_progress(phase, name)} if per_file else {}
        hf_hub_download(model, name, revision=commit, cache_dir=cache_dir, **bars)
        phase.file(name, size or 0, size)  # cached files report no bytes

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="download") as pool:
        list(pool.map(fetch, siblings))
    # Every file is cached now: this only resolves the folder.
    return str(
        snapshot_download(
            model, revision=commit, cache_dir=cache_dir, allow_patterns=allow_patterns
        )
    )


def file_progress(phase: progress.Phase, name: str) -> type:
    """A stand-in for ``tqdm`` that reports one file's bytes to ``phase`` instead of drawing.

    ``huggingface_hub`` makes one per file download (its ``tqdm_class``) and
    calls ``update(n)`` per chunk; anything else a bar does is a no-op here.
    """

    class FileProgress:
        def __init__(self, *args: Any, total: float | None = None, initial: float = 0, **_: Any):
            self.total = total
            self.n = initial or 0
            phase.file(name, self.n, total)

        def update(self, n: float | None = 1) -> None:
            self.n += n or 0
            phase.file(name, self.n, self.total)

        def update_transfer(self, n: float | None = 1) -> None:
            pass  # bytes on the wire (compressed); ``update`` counts the file's own

        def __enter__(self) -> FileProgress:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def __getattr__(self, attribute: str) -> Any:
            return lambda *args, **kwargs: None  # close, refresh, set_postfix_str, ...

    return FileProgress


def _offline() -> bool:
    """``HF_HUB_OFFLINE``, read as huggingface_hub reads it."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


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
