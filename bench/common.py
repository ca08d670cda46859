"""Starting servers, loading them, and reporting medians side by side."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chutes_testing.running import free_port as free_port  # for the figures

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
PYTHON = sys.executable
#: A directory of packages (an earlier commit's ``chutes_runtime`` and the rest) put first
#: on ``PYTHONPATH`` for a second chute measured alongside, named "..., before".
BEFORE = os.environ.get("BENCH_BEFORE") or None
#: ``BENCH_PEERS=0``: leave out the peers (LitServe, BentoML, nginx, signed requests).
PEERS = os.environ.get("BENCH_PEERS", "1") != "0"


def before_env() -> dict[str, str]:
    """The environment of the "before" chute (see :data:`BEFORE`)."""
    assert BEFORE is not None
    return {"PYTHONPATH": str(Path(BEFORE).resolve())}


def wait_until(
    url: str, timeout: float = 120.0, ok: tuple[int, ...] = (200,), method: str = "GET"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.request(method, url, timeout=2).status_code in ok:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f}s")


@contextlib.contextmanager
def server(
    command: list[str],
    ready_url: str,
    *,
    cwd: Path = APPS,
    env: dict[str, str] | None = None,
    ok: tuple[int, ...] = (200,),
    method: str = "GET",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; its output goes to a log file shown on failure."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **os.environ,
                    "HF_HUB_OFFLINE": "1",
                    "CHUTES_LOG_LEVEL": "WARNING",
                    **(env or {}),
                },
            )
        try:
            try:
                wait_until(ready_url, ok=ok, method=method)
            except RuntimeError:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{' '.join(command)} failed:\n{tail}") from None
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Load:
    """One wrk run: requests per second and latency percentiles in milliseconds."""

    rps: float
    p50: float
    p99: float
    #: Answers that were not 2xx or 3xx.
    errors: int = 0


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    script: Path | None = None,
    timeout: float | None = None,
) -> Load:
    """``timeout``: seconds before wrk gives a request up (its default: 2)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    threads = min(connections, 2)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    if timeout is not None:
        command[1:1] = ["--timeout", f"{timeout:g}s"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if failed:  # errors answer fast: counted, they would pass for throughput
        raise RuntimeError(f"{failed.group(1)} requests to {url} failed:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(failed.group(1)) if failed else 0
    return Load(rps=rps, p50=_latency(out, "50%"), p99=_latency(out, "99%"), errors=errors)


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


@dataclass
class Samples:
    """Repeated measurements of several systems, taken in alternation."""

    runs: dict[str, list[Load]] = field(default_factory=dict)

    def add(self, name: str, load: Load) -> None:
        self.runs.setdefault(name, []).append(load)

    def median(self, name: str) -> Load:
        loads = self.runs[name]
        return Load(
            rps=statistics.median(load.rps for load in loads),
            p50=statistics.median(load.p50 for load in loads),
            p99=statistics.median(load.p99 for load in loads),
        )


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def infinity_emb(model_path: str) -> Iterator[str | None]:
    """infinity-emb serving ``model_path`` (batch 64, CPU) from ``$INFINITY_PYTHON``.

    Yields its base URL, or ``None`` when ``INFINITY_PYTHON`` names no interpreter.
    """
    infinity = os.environ.get("INFINITY_PYTHON")
    if not infinity or not Path(infinity).exists():
        yield None
        return
    port = free_port()
    command = [
        infinity, "-m", "infinity_emb.cli", "v2", "--model-id", model_path, "--port", str(port),
        "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu", "--batch-size", "64",
        "--no-bettertransformer",
    ]  # fmt: skip
    with server(command, f"http://127.0.0.1:{port}/health"):
        yield f"http://127.0.0.1:{port}"


def report_against_ceiling(
    figure: str, unit: str, results: dict[str, float], ceiling: str, ours: str
) -> dict[str, float]:
    """Print ``results`` as a table against ``ceiling``, then ``ours`` against it and infinity-emb."""
    ceiling_rps = results[ceiling]
    print(
        table(
            ["system", unit, "vs ceiling"],
            [[name, f"{rps:.0f}", f"{rps / ceiling_rps:.2f}x"] for name, rps in results.items()],
        )
    )
    ratios = {"vs_ceiling": results[ours] / ceiling_rps}
    line = f"{figure} ratios: chutes {ratios['vs_ceiling']:.2f}x the in-process ceiling"
    if "infinity-emb" in results:
        ratios["vs_infinity"] = results[ours] / results["infinity-emb"]
        line += f", {ratios['vs_infinity']:.2f}x infinity-emb"
    else:
        line += " (infinity-emb not measured: set INFINITY_PYTHON)"
    print(line)
    return ratios
