"""Warm-up progress (chutes_core.progress): phases, files, the hub's byte counts, the views."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from pathlib import Path

import pytest

from chutes_core import progress
from chutes_core.engines.hub import fetch_model, file_progress


def test_a_phase_sums_its_files_and_a_with_block_finishes_or_fails_it() -> None:
    tracker = progress.Tracker()
    with tracker.phase("download", unit="bytes") as download:
        download.file("a", 0, 10)
        assert download.progress()["total"] is not None and download.total == 10
        download.file("b", 5)  # size unknown: so is the phase's total
        assert download.total is None and download.done == 5
        download.file("b", 20, 20)
        download.file("a", 10, 10)
    assert download.state == "done" and (download.done, download.total) == (30, 30)
    with pytest.raises(RuntimeError), tracker.phase("engine_ready"):
        raise RuntimeError("exited with code 3")
    failed = tracker.failed
    assert failed is not None and failed.error == "RuntimeError: exited with code 3"
    assert tracker.running is None
    assert [p.name for p in tracker.snapshot()] == ["download", "engine_ready"]


def test_an_event_is_done_at_once_and_listeners_see_every_change() -> None:
    tracker = progress.Tracker()
    seen: list[tuple[str, str] | None] = []
    tracker.listeners.append(lambda p: seen.append(None if p is None else (p.name, p.state)))
    tracker.listeners.append(lambda p: 1 / 0)  # a broken view breaks nothing
    tracker.event("engine_start", "pid 7")
    tracker.phase("warmup").finish()
    tracker.settle()
    assert seen == [("engine_start", "done"), ("warmup", "running"), ("warmup", "done"), None]
    assert tracker.snapshot()[0].to_dict(tracker.started)["detail"] == "pid 7"


async def test_current_follows_the_context_into_threads_and_is_detached_outside() -> None:
    tracker = progress.Tracker()
    token = progress.activate(tracker)
    try:
        await asyncio.to_thread(progress.event, "in a thread")
        await asyncio.get_running_loop().create_task(asyncio.sleep(0))
        progress.phase("here").finish()
    finally:
        progress.deactivate(token)
    assert [p.name for p in tracker.snapshot()] == ["in a thread", "here"]
    assert progress.current() is not tracker
    for _ in range(100):  # outside a host nothing accumulates without bound
        progress.event("detached")
    assert len(progress.current().snapshot()) <= 64


def test_hub_progress_counts_the_bytes_of_a_real_local_file(tmp_path: Path) -> None:
    """The tqdm stand-in huggingface_hub drives, fed as it feeds it: chunk by chunk."""
    source = tmp_path / "model.safetensors"
    source.write_bytes(os.urandom(300_000))
    tracker = progress.Tracker()
    phase = tracker.phase("download", unit="bytes")
    seen: list[float] = []
    tracker.listeners.append(lambda p: seen.append(p.done) if p is phase else None)
    bar_class = file_progress(phase, source.name)
    with bar_class(total=source.stat().st_size, initial=0, desc=source.name) as bar:
        with source.open("rb") as data:
            while chunk := data.read(65536):
                bar.update(len(chunk))
        bar.set_postfix_str("ignored")
        bar.close()
    assert seen == sorted(seen) and seen[-1] == 300_000 and len(seen) >= 5
    assert phase.files == {"model.safetensors": (300_000, 300_000)}


def test_fetch_model_reports_a_local_model_as_downloaded_with_its_size(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "weights.bin").write_bytes(b"x" * 1000)
    tracker = progress.Tracker()
    token = progress.activate(tracker)
    try:
        assert fetch_model(str(tmp_path)) == tmp_path.resolve()
    finally:
        progress.deactivate(token)
    (download,) = tracker.snapshot()
    assert download.name == "download" and download.state == "done"
    assert (download.done, download.total, download.unit) == (1002, 1002, "bytes")


def _drive(tracker: progress.Tracker) -> None:
    with tracker.phase("download", unit="bytes") as download:
        download.file("w.bin", 0, 2_000_000)
        download.file("w.bin", 2_000_000, 2_000_000)
    tracker.event("engine_start", "pid 1")
    tracker.event("ready")
    tracker.settle()


def test_in_a_pipe_the_phases_are_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    from chutes_runtime.warmup import attach_display

    tracker = progress.Tracker()
    attach_display(tracker, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="chutes.warmup"):
        _drive(tracker)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "warm-up: download started"
    assert lines[1].startswith("warm-up: download done in ")
    assert lines[2:] == ["warm-up: engine_start (pid 1)", "warm-up: ready"]


def test_on_a_terminal_the_phases_are_progress_bars() -> None:
    from chutes_runtime.warmup import attach_display

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    tracker = progress.Tracker()
    attach_display(tracker, stream=screen)
    worker = threading.Thread(target=_drive, args=(tracker,))  # reports may come from threads
    worker.start()
    worker.join()
    drawn = screen.getvalue()
    assert "download" in drawn and "w.bin" in drawn and "2.0 MB / 2.0 MB" in drawn
    assert "engine_start" in drawn and "ready" in drawn


def test_a_failed_phase_is_drawn_with_its_error_as_text() -> None:
    from chutes_runtime.warmup import attach_display

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    tracker = progress.Tracker()
    attach_display(tracker, stream=screen)
    with pytest.raises(KeyError), tracker.phase("engine_ready"):
        raise KeyError("[bold]not markup[/bold]")
    tracker.settle()
    assert "failed: KeyError: '[bold]not markup[/bold]'" in screen.getvalue()


def test_describe_reads_a_status_document_and_nothing_else() -> None:
    from chutes_core.progress import SCHEMA, describe

    assert describe({"status": "hot"}) is None
    failed = {"schema": SCHEMA, "state": "failed", "phase": "engine_start", "error": "exit 1"}
    assert describe(failed) == "failed: engine_start: exit 1"
    counting = {
        "schema": SCHEMA,
        "state": "starting",
        "phase": "load",
        "progress": {"done": 3, "total": None, "unit": "files"},
        "elapsed": 1.0,
    }
    assert describe(counting) == "starting: load 3 files, 1.0s"
