"""A real ``chutes run`` in a subprocess, for end-to-end tests of a plugin.

>>> with run_chute("app:chute", cwd=project_dir) as chute:
...     httpx.get(chute.url + "/v1/models")

The host listens on a free loopback port; ``run_chute`` returns once
``/_chutes/ready`` answers 200 and fails with the host's last log lines if
the process exits or is not ready in time. On exit the host gets SIGTERM (a
graceful shutdown), then SIGKILL for its whole process group if it hangs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunningChute", "free_port", "run_chute", "write_template_app"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_template_app(directory: str | os.PathLike[str], template: str, **arguments: Any) -> str:
    """Write ``app.py`` building a chute from ``template`` as a user would; returns ``"app:chute"``.

    The module imports ``build_<template>_chute`` from its documented path,
    ``chutes.chute.template.<template>``, and calls it with ``arguments``
    (plain literals: strings, numbers, lists, dicts).
    """
    builder = f"build_{template}_chute"
    (Path(directory) / "app.py").write_text(
        f"from chutes.chute.template.{template} import {builder}\n\n"
        f"chute = {builder}(**{arguments!r})\n"
    )
    return "app:chute"


@dataclass
class RunningChute:
    """A host started by :func:`run_chute`."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the host (and its engine) printed so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def readiness(self) -> int | None:
        """The status of ``GET /_chutes/ready``, or ``None`` if nothing answers."""
        import httpx

        try:
            return httpx.get(f"{self.url}/_chutes/ready", timeout=5.0, trust_env=False).status_code
        except httpx.TransportError:
            return None


@contextlib.contextmanager
def run_chute(
    ref: str,
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    dev: bool = False,
    port: int | None = None,
    ready_timeout: float = 600.0,
    stop_timeout: float = 60.0,
) -> Iterator[RunningChute]:
    """Serve ``ref`` with ``chutes run`` until the block ends; the log goes to ``cwd/host.log``.

    The host listens on 127.0.0.1 at ``port``, or at a free port when none is given.
    """
    port = free_port() if port is None else port
    log_path = Path(cwd) / "host.log"
    argv = [sys.executable, "-m", "chutes_cli", "run", ref, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*argv, "--dev"] if dev else argv,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    running = RunningChute(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_ready(running, ready_timeout)
        yield running
    finally:
        _stop(process, stop_timeout)


def _wait_ready(running: RunningChute, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while running.readiness() != 200:
        code = running.process.poll()
        if code is not None:
            raise RuntimeError(f"chutes run exited with code {code}:\n{running.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"chutes run was not ready after {timeout:.0f}s:\n{running.tail()}")
        time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    # Whatever is left of the host's process group (it should be nothing).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
