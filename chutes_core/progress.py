"""Warm-up progress: how startup hooks and engine drivers say what they are doing.

A chute's cold start is a series of phases: the model download, the engine
start, the warm-up. Code that runs during startup reports them here; the host
serves the result at ``/_chutes/warmup`` (see ``docs/runtime.md`` for the
schema) and draws it in the terminal of ``chutes run``::

    from chutes_core import progress

    @chute.on_startup()
    async def load(self):
        with progress.phase("download", unit="bytes") as download:
            for name, size in files:
                ...                                  # each chunk:
                download.file(name, done, size)      # bytes of this file so far
        progress.event("engine_ready")               # a phase with no duration

``progress.current()`` is the tracker of the host running this startup (a
context variable, so it follows ``asyncio.to_thread`` and tasks); outside a
host it is a detached tracker, so reporting never needs a guard. A phase that
leaves its ``with`` block by an exception is marked failed with that error.
Updates may come from any thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

__all__ = [
    "DOWNLOAD",
    "ENGINE_READY",
    "ENGINE_START",
    "LOAD",
    "SCHEMA",
    "WARMUP",
    "Phase",
    "Tracker",
    "activate",
    "current",
    "deactivate",
    "describe",
    "event",
    "format_amount",
    "phase",
]

#: The name and version of the status document (``/_chutes/warmup``).
SCHEMA = "chutes.warmup/v1"

# The phase names first-party templates use; any other name is allowed.
DOWNLOAD = "download"  #: fetching weights; progress in bytes, per file
LOAD = "load"  #: loading weights into the process that serves them
ENGINE_START = "engine_start"  #: the engine process was launched
ENGINE_READY = "engine_ready"  #: the engine answers its readiness check
WARMUP = "warmup"  #: the first (warm-up) request is done

#: Called with the phase that changed, or with ``None`` once the warm-up is settled.
Listener = Callable[["Phase | None"], None]


class Phase:
    """One phase of the warm-up: running, then done or failed; maybe with progress.

    Progress is ``done`` of ``total`` in ``unit`` (``total`` may be unknown).
    With :meth:`file`, the phase's numbers are the sums over its files.
    """

    def __init__(
        self,
        tracker: Tracker,
        name: str,
        *,
        total: float | None = None,
        unit: str | None = None,
        detail: str | None = None,
    ) -> None:
        self._tracker = tracker
        self._lock = threading.Lock()
        self.name = name
        self.unit = unit
        self.detail = detail
        self.state = "running"
        self.error: str | None = None
        self.done: float = 0
        self.total = total
        self.files: dict[str, tuple[float, float | None]] = {}
        self.started = time.monotonic()
        self.finished: float | None = None

    def update(
        self,
        done: float | None = None,
        total: float | None = None,
        *,
        advance: float | None = None,
        detail: str | None = None,
    ) -> None:
        """Set ``done`` (or add ``advance``), ``total`` or ``detail``."""
        with self._lock:
            if done is not None:
                self.done = done
            if advance is not None:
                self.done += advance
            if total is not None:
                self.total = total
            if detail is not None:
                self.detail = detail
        self._tracker._changed(self)

    def file(self, name: str, done: float, total: float | None = None) -> None:
        """Progress of one file (bytes so far, of ``total``); the phase sums its files."""
        with self._lock:
            self.files[name] = (done, total)
            self.done = sum(d for d, _ in self.files.values())
            totals = [t for _, t in self.files.values()]
            self.total = None if any(t is None for t in totals) else sum(t or 0 for t in totals)
            if self.unit is None:
                self.unit = "bytes"
        self._tracker._changed(self)

    def finish(self, detail: str | None = None) -> None:
        """Mark the phase done (a known total counts as reached)."""
        with self._lock:
            if self.state != "running":
                return
            self.state = "done"
            self.finished = time.monotonic()
            if detail is not None:
                self.detail = detail
            if self.total is not None and self.done < self.total and not self.files:
                self.done = self.total
        self._tracker._changed(self)

    def fail(self, error: BaseException | str) -> None:
        """Mark the phase failed with ``error`` (the status shows it)."""
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            if self.state != "running":
                return
            self.state = "failed"
            self.error = message
            self.finished = time.monotonic()
        self._tracker._changed(self)

    def __enter__(self) -> Phase:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.finish()
        elif isinstance(exc, Exception):
            self.fail(exc)
        else:  # cancelled or interrupted: it stopped, it did not fail
            self.finish()

    def progress(self) -> dict[str, Any] | None:
        """``{"done", "total", "unit", "files"}``, or ``None`` for a phase without numbers."""
        with self._lock:
            if self.unit is None and self.total is None and not self.done and not self.files:
                return None
            files = {
                name: {"done": done, "total": total} for name, (done, total) in self.files.items()
            }
            return {"done": self.done, "total": self.total, "unit": self.unit, "files": files}

    def to_dict(self, origin: float) -> dict[str, Any]:
        end = self.finished if self.finished is not None else time.monotonic()
        return {
            "name": self.name,
            "state": self.state,
            "detail": self.detail,
            "started": round(self.started - origin, 3),
            "elapsed": round(end - self.started, 3),
            "progress": self.progress(),
            "error": self.error,
        }


class Tracker:
    """The phases of one warm-up, in the order they started.

    ``listeners`` are called (from whichever thread reported) on every change;
    the host draws progress bars with one.
    """

    def __init__(self, *, keep: int | None = None) -> None:
        self.started = time.monotonic()
        self.phases: list[Phase] = []
        self.listeners: list[Listener] = []
        self.settled = False
        self._keep = keep
        self._lock = threading.Lock()

    def phase(
        self,
        name: str,
        *,
        total: float | None = None,
        unit: str | None = None,
        detail: str | None = None,
    ) -> Phase:
        """Start a phase; finish it with :meth:`Phase.finish` or use it as a context manager."""
        return self._add(Phase(self, name, total=total, unit=unit, detail=detail))

    def event(self, name: str, detail: str | None = None) -> Phase:
        """A phase that is done as soon as it is reported (``engine_start``)."""
        happened = Phase(self, name, detail=detail)
        happened.state = "done"
        happened.finished = happened.started
        return self._add(happened)

    def _add(self, added: Phase) -> Phase:
        with self._lock:
            self.phases.append(added)
            if self._keep is not None and len(self.phases) > self._keep:
                del self.phases[0]
        self._changed(added)
        return added

    @property
    def running(self) -> Phase | None:
        """The latest phase still running, if any."""
        with self._lock:
            return next((p for p in reversed(self.phases) if p.state == "running"), None)

    @property
    def failed(self) -> Phase | None:
        with self._lock:
            return next((p for p in self.phases if p.state == "failed"), None)

    def snapshot(self) -> list[Phase]:
        with self._lock:
            return list(self.phases)

    def settle(self) -> None:
        """The warm-up is over (ready or failed): listeners stop drawing."""
        self.settled = True
        self._changed(None)

    def _changed(self, changed: Phase | None) -> None:
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):  # a broken display must not break startup
                listener(changed)


_current: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "chutes_progress", default=None
)
_detached = Tracker(keep=64)  # outside a host nobody reads it: keep only the latest


def current() -> Tracker:
    """The tracker of the host running this code, or a detached one outside a host."""
    return _current.get() or _detached


def activate(tracker: Tracker) -> contextvars.Token[Tracker | None]:
    """Make ``tracker`` current in this context (the host does this for its startup)."""
    return _current.set(tracker)


def deactivate(token: contextvars.Token[Tracker | None]) -> None:
    """Undo :func:`activate`."""
    _current.reset(token)


def phase(
    name: str, *, total: float | None = None, unit: str | None = None, detail: str | None = None
) -> Phase:
    """Start a phase on the current tracker (see :meth:`Tracker.phase`)."""
    return current().phase(name, total=total, unit=unit, detail=detail)


def event(name: str, detail: str | None = None) -> Phase:
    """Report a phase that is already done on the current tracker (see :meth:`Tracker.event`)."""
    return current().event(name, detail=detail)


def format_amount(value: float, unit: str | None) -> str:
    """``1048576, "bytes"`` → ``1.0 MB``; other units as counted (``3 files``)."""
    if unit != "bytes":
        return f"{value:g}{' ' + unit if unit else ''}"
    for suffix in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
        value /= 1000
    return f"{value:.1f} TB"


def describe(document: Mapping[str, Any]) -> str | None:
    """One line for a warm-up status document (``SCHEMA``); ``None`` for anything else.

    ``ready``; ``starting: download 1.0 MB / 4.2 MB (25%), 3.2s``;
    ``failed: engine_start: the engine exited with code 1``.
    """
    if document.get("schema") != SCHEMA:
        return None
    state = str(document.get("state"))
    if document.get("error"):
        return f"{state}: {document.get('phase') or 'startup'}: {document['error']}"
    if state == "ready" or not document.get("phase"):
        return state
    line = f"{state}: {document['phase']}"
    progress = document.get("progress") or {}
    done, total, unit = progress.get("done"), progress.get("total"), progress.get("unit")
    if isinstance(done, (int, float)) and done:
        line += f" {format_amount(done, unit)}"
        if isinstance(total, (int, float)) and total:
            line += f" / {format_amount(total, unit)} ({100 * done / total:.0f}%)"
    elapsed = document.get("elapsed")
    return f"{line}, {elapsed:.1f}s" if isinstance(elapsed, (int, float)) else line
