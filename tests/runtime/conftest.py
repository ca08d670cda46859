"""Fixtures for tests that serve chutes with `chutes run` over real HTTP on loopback.

Every server is a `python -m chutes_cli run REF` subprocess in its own
process group, with its output in a log file; teardown kills whatever is left
of the group, so no test leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from chutes_testing.running import free_port

APPS = Path(__file__).with_name("apps")
SEEDS = Path(__file__).resolve().parent.parent / "seeds"


def uvicorn_protocols() -> list[object]:
    """uvicorn's HTTP protocols, as ``pytest.param``: h11, and httptools where installed."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    protocols: list[object] = [pytest.param(H11Protocol, id="h11")]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        protocols.append(pytest.param(None, id="httptools", marks=pytest.mark.skip("no httptools")))
    else:
        protocols.append(pytest.param(HttpToolsProtocol, id="httptools"))
    return protocols


def wait_for(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` (matching ``labels``) in /_chutes/metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/_chutes/metrics").text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def in_flight(url: str) -> float:
    return metric(url, "chutes_in_flight")


@dataclass
class Served:
    """A `chutes run` subprocess and where to reach it."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    marks: Path | None = field(default=None)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def readiness(self) -> int | None:
        try:
            return httpx.get(f"{self.url}/_chutes/ready", timeout=2).status_code
        except httpx.TransportError:
            return None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.readiness() != 200:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"chutes run exited with {self.process.returncode}:\n{self.log}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout}s:\n{self.log}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL for anything left in the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()
        return self.process.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def start(
    ref: str,
    *args: str,
    cwd: Path = APPS,
    env: dict[str, str] | None = None,
    log_dir: Path,
    port: int | None = None,
) -> Served:
    """Start `chutes run REF --port PORT ARGS...`; does not wait for readiness."""
    port = port or free_port()
    log_path = log_dir / f"chute-{port}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    environ.update({"HF_HUB_OFFLINE": "1", "CHUTES_GRACE_SECONDS": "20", **(env or {})})
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chutes_cli", "run", ref, "--port", str(port), *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
        )
    return Served(process, f"http://127.0.0.1:{port}", log_path)


@pytest.fixture
def run_chute(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start `chutes run REF ...`; every server started is killed at teardown."""
    started: list[Served] = []

    def run(ref: str, *args: str, ready: bool = True, **kwargs: object) -> Served:
        served = start(ref, *args, log_dir=tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(served)
        if ready:
            served.wait_ready()
        return served

    yield run
    for served in started:
        served.kill()


@pytest.fixture(scope="module")
def module_chute(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    """Like run_chute, but the servers live for the whole module and stop gracefully."""
    started: list[Served] = []
    log_dir = tmp_path_factory.mktemp("logs")

    def run(ref: str, *args: str, **kwargs: object) -> Served:
        served = start(ref, *args, log_dir=log_dir, **kwargs)  # type: ignore[arg-type]
        started.append(served)
        served.wait_ready()
        return served

    yield run
    for served in started:
        served.stop()
