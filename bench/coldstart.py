"""Figure 4: cold start — process start to ready, `chutes --help`, and the core's import time."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time

import httpx

from bench.common import APPS, PYTHON, free_port, table

RUNS = 7
HEAVY = ("torch", "transformers", "vllm", "sglang", "diffusers", "sentence_transformers", "triton")


def time_to_ready() -> float:
    port = free_port()
    began = time.perf_counter()
    process = subprocess.Popen(
        [PYTHON, "-m", "chutes_cli", "run", "trivial:chute", "--port", str(port)],
        cwd=APPS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "CHUTES_LOG_LEVEL": "WARNING"},
    )
    try:
        while True:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{port}/_chutes/ready", timeout=1).status_code
                    == 200
                ):
                    return time.perf_counter() - began
            except httpx.TransportError:
                pass
            time.sleep(0.005)
    finally:
        process.terminate()
        process.wait(30)


def time_of(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - began


def import_profile() -> tuple[float, list[str]]:
    """Cumulative import time of chutes_core (seconds) and any heavy module it pulled in."""
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import chutes_core"],
        capture_output=True,
        text=True,
        check=True,
    )
    total, heavy = 0.0, set()
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if not match:
            continue
        cumulative, _, name = match.groups()
        if name == "chutes_core":
            total = int(cumulative) / 1e6
        if name.split(".")[0] in HEAVY:
            heavy.add(name)
    return total, sorted(heavy)


def run() -> dict[str, float]:
    plugins = subprocess.run(
        [PYTHON, "-m", "chutes_cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.count('"distribution"')
    python = statistics.median(time_of([PYTHON, "-c", "pass"]) for _ in range(RUNS))
    ready = statistics.median(time_to_ready() for _ in range(RUNS))
    help_time = statistics.median(
        time_of([PYTHON, "-m", "chutes_cli", "--help"]) for _ in range(RUNS)
    )
    imported, heavy = import_profile()
    print(
        table(
            ["measure", "median s", "goal"],
            [
                [
                    f"process start to ready (trivial chute, {plugins} plugins installed)",
                    f"{ready:.3f}",
                    "<= 0.5",
                ],
                ["chutes --help", f"{help_time:.3f}", "<= 0.3"],
                ["import chutes_core (cumulative, -X importtime)", f"{imported:.3f}", "-"],
                ["bare `python -c pass`, for scale", f"{python:.3f}", "-"],
            ],
        )
    )
    print(f"heavy modules imported by chutes_core: {', '.join(heavy) or 'none'}")
    ratios = {
        "ready_s": ready,
        "help_s": help_time,
        "import_s": imported,
        "heavy_imports": float(len(heavy)),
    }
    print(
        f"cold start: ready {ready:.3f} s (goal 0.5, {ready / 0.5:.2f}x of it), --help {help_time:.3f} s "
        f"(goal 0.3, {help_time / 0.3:.2f}x), core import {imported * 1000:.0f} ms, heavy imports {len(heavy)}"
    )
    return ratios
