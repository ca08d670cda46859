"""The warm-up status: ``/_chutes/warmup``, the OIP health aliases, and the terminal view.

The status document (schema ``chutes.warmup/v1``, documented in
``docs/runtime.md``) is served from the moment the port is bound, before any
startup hook runs, and after startup too::

    {"schema": "chutes.warmup/v1", "state": "starting", "phase": "download",
     "progress": {"done": 1048576, "total": 4194304, "unit": "bytes", "files": {...}},
     "elapsed": 3.2, "error": null, "phases": [{"name": "download", ...}]}

``state`` is the host's (created, starting, ready, unready, stopping,
stopped, failed); ``phase`` and ``progress`` are those of the phase running
now (the latest one when none runs); ``error`` is why startup failed.

``chutes run`` draws the phases as Rich progress bars when stderr is a
terminal, and as plain log lines (throttled) when it is not.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from chutes_core.progress import SCHEMA, Phase, Tracker, format_amount

if TYPE_CHECKING:
    from chutes_runtime.host import Host

__all__ = ["OIP_LIVE", "OIP_READY", "SCHEMA", "attach_display", "status"]

log = logging.getLogger("chutes.warmup")

#: Open Inference Protocol (KServe v2, Triton) health paths: aliases of live and ready.
OIP_LIVE = "/v2/health/live"
OIP_READY = "/v2/health/ready"


def status(host: Host) -> dict[str, Any]:
    """The warm-up status document of ``host``."""
    tracker = host.warmup
    phases = tracker.snapshot()
    shown = tracker.running or (phases[-1] if phases else None)
    failed = tracker.failed
    error = None
    if host.state == "failed":
        error = (failed.error if failed is not None else None) or host.unready_reason
    elif failed is not None and host.state != "ready":
        error = failed.error
    return {
        "schema": SCHEMA,
        "state": host.state,
        "phase": shown.name if shown is not None else None,
        "progress": shown.progress() if shown is not None else None,
        "elapsed": round(time.monotonic() - tracker.started, 3),
        "error": error,
        "phases": [p.to_dict(tracker.started) for p in phases],
    }


def attach_display(tracker: Tracker, *, stream: Any = None) -> None:
    """Show ``tracker`` as it changes: Rich bars on a terminal, log lines otherwise."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    display: _Lines | _Bars = _Bars(stream) if isatty is not None and isatty() else _Lines()
    tracker.listeners.append(display)


class _Lines:
    """Plain log lines: a phase's start and end, progress at most every 5 s."""

    EVERY = 5.0

    def __init__(self) -> None:
        self._said: dict[int, float] = {}

    def __call__(self, phase: Phase | None) -> None:
        if phase is None:
            return
        key = id(phase)
        detail = f" ({phase.detail})" if phase.detail else ""
        if phase.state == "failed":
            log.error("warm-up: %s failed: %s", phase.name, phase.error)
        elif phase.state == "done":
            if self._said.pop(key, None) is not None:
                log.info(
                    "warm-up: %s done in %.1fs%s",
                    phase.name,
                    (phase.finished or phase.started) - phase.started,
                    detail,
                )
            else:
                log.info("warm-up: %s%s", phase.name, detail)
        elif key not in self._said:
            self._said[key] = time.monotonic()
            log.info("warm-up: %s started%s", phase.name, detail)
        elif time.monotonic() - self._said[key] >= self.EVERY and (phase.done or phase.total):
            self._said[key] = time.monotonic()
            total = f" of {format_amount(phase.total, phase.unit)}" if phase.total else ""
            log.info("warm-up: %s %s%s", phase.name, format_amount(phase.done, phase.unit), total)


class _Bars:
    """Rich progress bars, one per phase (and per file of a download), while warming up."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._progress: Any = None
        self._tasks: dict[tuple[int, str], Any] = {}
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _start(self) -> Any:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=Console(file=self._stream),
            transient=False,
        )
        self._progress.start()
        # Log lines go above the bars: point stderr handlers at Rich's redirected stream.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                self._handlers.append((handler, handler.setStream(sys.stderr)))
        return self._progress

    def __call__(self, phase: Phase | None) -> None:
        if phase is None:
            if self._progress is not None:
                self._progress.stop()
                for handler, original in self._handlers:
                    handler.setStream(original)
                self._progress = None
            return
        from rich.markup import escape

        progress = self._progress or self._start()
        snapshot = phase.progress() or {}
        rows = [(phase.name, snapshot.get("done", 0), snapshot.get("total"))]
        rows += [
            (f"  {name}", file["done"], file["total"])
            for name, file in snapshot.get("files", {}).items()
        ]
        for label, done, total in rows:
            key = (id(phase), label)
            description = escape(label)
            if label == phase.name and phase.state == "done":
                description += " [green]done"
            elif label == phase.name and phase.state == "failed":
                description += f" [red]failed: {escape(phase.error or '')}"
            amount = ""
            if snapshot:  # a phase with numbers: "1.2 MB / 4.0 MB"
                amount = format_amount(done, phase.unit)
                if total is not None:
                    amount += f" / {format_amount(total, phase.unit)}"
            if key not in self._tasks:
                self._tasks[key] = progress.add_task(description, total=total, amount=amount)
            finished = phase.state != "running"
            total = total if total is not None else (done or 1 if finished else None)
            progress.update(
                self._tasks[key],
                description=description,
                completed=total if finished and total else done,
                total=total,
                amount=amount,
            )
