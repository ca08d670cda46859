"""Figure 1: runtime overhead on trivial JSON work, against bare FastAPI, LitServe and BentoML."""

from __future__ import annotations

from bench.common import APPS, PYTHON, Samples, free_port, server, table, wrk

ROUNDS = 5
SECONDS = 4


def systems() -> dict[str, tuple[list[str], str, str]]:
    """name -> (command, ready URL, load URL); ports are picked now."""
    chosen = {}
    port = free_port()
    chosen["bare FastAPI"] = (
        [
            PYTHON,
            "-m",
            "uvicorn",
            "bare:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        f"http://127.0.0.1:{port}/docs",
        f"http://127.0.0.1:{port}/echo",
    )
    port = free_port()
    chosen["chutes"] = (
        [PYTHON, "-m", "chutes_cli", "run", "trivial:chute", "--port", str(port)],
        f"http://127.0.0.1:{port}/_chutes/ready",
        f"http://127.0.0.1:{port}/echo",
    )
    port = free_port()
    chosen["LitServe"] = (
        [PYTHON, "lit.py", str(port)],
        f"http://127.0.0.1:{port}/health",
        f"http://127.0.0.1:{port}/echo",
    )
    port = free_port()
    chosen["BentoML"] = (
        [
            PYTHON,
            "-m",
            "bentoml",
            "serve",
            "bento:Echo",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        f"http://127.0.0.1:{port}/readyz",
        f"http://127.0.0.1:{port}/echo",
    )
    return chosen


def run() -> dict[str, float]:
    chosen = systems()
    low, high = Samples(), Samples()
    # One server at a time (some peers busy-poll and would slow the others down),
    # in alternation across rounds so noise hits every system alike.
    for _ in range(ROUNDS):
        for name, (command, ready, url) in chosen.items():
            with server(command, ready):
                wrk(url, connections=8, seconds=1, script=APPS / "post.lua")  # warm up
                low.add(name, wrk(url, connections=1, seconds=SECONDS, script=APPS / "post.lua"))
                high.add(name, wrk(url, connections=32, seconds=SECONDS, script=APPS / "post.lua"))
    bare1, bare32 = low.median("bare FastAPI"), high.median("bare FastAPI")
    rows = []
    for name in chosen:
        one, many = low.median(name), high.median(name)
        rows.append(
            [
                name,
                f"{one.p50:.3f}",
                f"{one.p50 / bare1.p50:.2f}x",
                f"{one.rps:.0f}",
                f"{many.p50:.2f}",
                f"{many.rps:.0f}",
                f"{many.rps / bare32.rps:.2f}x",
            ]
        )
    print(
        table(
            [
                "system",
                "p50 ms (c=1)",
                "vs bare",
                "req/s (c=1)",
                "p50 ms (c=32)",
                "req/s (c=32)",
                "vs bare",
            ],
            rows,
        )
    )
    chutes1, chutes32 = low.median("chutes"), high.median("chutes")
    ratios = {
        "p50_c1": chutes1.p50 / bare1.p50,
        "p50_c32": chutes32.p50 / bare32.p50,
        "rps_c1": chutes1.rps / bare1.rps,
        "rps_c32": chutes32.rps / bare32.rps,
        "vs_litserve_c32": chutes32.rps / high.median("LitServe").rps,
        "vs_bentoml_c32": chutes32.rps / high.median("BentoML").rps,
    }
    print(
        "overhead ratios (chutes / bare FastAPI): "
        f"p50 c=1 {ratios['p50_c1']:.2f}x, p50 c=32 {ratios['p50_c32']:.2f}x, "
        f"throughput c=1 {ratios['rps_c1']:.2f}x, c=32 {ratios['rps_c32']:.2f}x; "
        f"throughput vs LitServe {ratios['vs_litserve_c32']:.2f}x, vs BentoML {ratios['vs_bentoml_c32']:.2f}x"
    )
    return ratios
