"""Figure 1: runtime overhead on trivial JSON work, against bare FastAPI, LitServe and BentoML.

It ends with the cost of signed requests: the same chute with signature
verification on (``CHUTES_SIGNATURE_KEYS``), against it without, at one
connection, side by side. wrk replays requests signed in advance, each with
its own nonce (``apps/signed.lua``); a replayed one would be refused, so
every measurement gets fresh ones and any non-2xx answer fails the figure.
A third row sends the same signed requests to the chute with no keys set:
what the larger requests cost without the check.

``python -m bench verify`` measures the check itself in process.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import (
    APPS,
    BEFORE,
    PEERS,
    PYTHON,
    Samples,
    before_env,
    free_port,
    server,
    table,
    wrk,
)

ROUNDS = 5
SECONDS = 4
#: Signed in advance for one measurement: more than wrk sends in SECONDS at one connection.
SIGNED_REQUESTS = 20000


def systems() -> dict[str, tuple[list[str], str, str, dict[str, str]]]:
    """name -> (command, ready URL, load URL, environment); ports are picked now."""
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
        {},
    )
    for name, env in [("chutes", {})] + ([("chutes, before", before_env())] if BEFORE else []):
        port = free_port()
        chosen[name] = (
            [PYTHON, "-m", "chutes_cli", "run", "trivial:chute", "--port", str(port)],
            f"http://127.0.0.1:{port}/_chutes/ready",
            f"http://127.0.0.1:{port}/echo",
            env,
        )
    if not PEERS:
        return chosen
    port = free_port()
    chosen["LitServe"] = (
        [PYTHON, "lit.py", str(port)],
        f"http://127.0.0.1:{port}/health",
        f"http://127.0.0.1:{port}/echo",
        {},
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
        {},
    )
    return chosen


def run() -> dict[str, float]:
    chosen = systems()
    low, high = Samples(), Samples()
    # One server at a time (some peers busy-poll and would slow the others down),
    # in alternation across rounds so noise hits every system alike.
    for _ in range(ROUNDS):
        for name, (command, ready, url, env) in chosen.items():
            with server(command, ready, env=env):
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
    }
    for name in [n for n in chosen if n.startswith("chutes")]:
        one, many = low.median(name), high.median(name)
        print(
            f"overhead ratios ({name} / bare FastAPI): "
            f"p50 c=1 {one.p50 / bare1.p50:.2f}x, p50 c=32 {many.p50 / bare32.p50:.2f}x, "
            f"throughput c=1 {one.rps / bare1.rps:.2f}x, c=32 {many.rps / bare32.rps:.2f}x"
        )
    print("  per round, chutes / bare FastAPI throughput: " + spread(low, high, "chutes"))
    if not PEERS:
        return ratios
    ratios["vs_litserve_c32"] = chutes32.rps / high.median("LitServe").rps
    ratios["vs_bentoml_c32"] = chutes32.rps / high.median("BentoML").rps
    print(
        f"throughput vs LitServe {ratios['vs_litserve_c32']:.2f}x, "
        f"vs BentoML {ratios['vs_bentoml_c32']:.2f}x"
    )
    ratios["signed_added_us"] = signed()
    return ratios


def spread(low: Samples, high: Samples, name: str, base: str = "bare FastAPI") -> str:
    """The lowest and highest per-round ratios of ``name`` to ``base`` (c=1, c=32)."""
    parts = []
    for label, samples in (("c=1", low), ("c=32", high)):
        ratios = [
            a.rps / b.rps for a, b in zip(samples.runs[name], samples.runs[base], strict=True)
        ]
        parts.append(f"{label} {min(ratios):.2f}-{max(ratios):.2f}")
    return ", ".join(parts)


def presign(url: str, count: int, key_id: str, private_key: str, path: Path) -> None:
    """``count`` signed ``POST /echo`` requests to ``url``, as raw HTTP, into ``path``."""
    import httpx

    from chutes_core.signing import RequestSigner

    signer = RequestSigner(key_id, private_key)
    authority = url.split("/")[2]
    with path.open("wb") as out:
        for _ in range(count):
            request = httpx.Request("POST", url, json={"text": "hello"})
            signer.sign(request, request.content)
            lines = ["POST /echo HTTP/1.1", f"Host: {authority}"]
            lines += [
                f"{name.decode()}: {value.decode()}"
                for name, value in request.headers.raw
                if name.lower() not in (b"host", b"accept-encoding", b"connection")
            ]
            raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + request.content
            out.write(b"%d\n" % len(raw) + raw)


def signed() -> float:
    """p50 of signed requests against unsigned ones, side by side; returns the µs added."""
    from chutes_core.signing import generate_keypair

    private_key, public_key = generate_keypair()
    plain, checked = Samples(), Samples()
    port = free_port()
    url = f"http://127.0.0.1:{port}/echo"
    command = [PYTHON, "-m", "chutes_cli", "run", "trivial:chute", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/_chutes/ready"
    env = {"CHUTES_SIGNATURE_KEYS": f"bench={public_key}", "CHUTES_SIGNATURE_MAX_AGE": "600"}
    with tempfile.TemporaryDirectory(prefix="bench-signed-") as tmp:
        requests = Path(tmp) / "signed.raw"
        os.environ["SIGNED_REQUESTS"] = str(requests)
        for _ in range(ROUNDS):
            with server(command, ready):
                wrk(url, connections=1, seconds=1, script=APPS / "post.lua")  # warm up
                plain.add(
                    "chutes", wrk(url, connections=1, seconds=SECONDS, script=APPS / "post.lua")
                )
                # The same signed requests with no keys configured: their size and
                # wrk's script cost, without the verification.
                presign(url, SIGNED_REQUESTS, "bench", private_key, requests)
                load = wrk(url, connections=1, seconds=SECONDS, script=APPS / "signed.lua")
                plain.add("chutes, signed, unchecked", load)
            with server(command, ready, env=env):
                for measure in (False, True):  # a warm-up, then the measurement
                    began = time.perf_counter()
                    presign(url, SIGNED_REQUESTS, "bench", private_key, requests)
                    print(
                        f"signed {SIGNED_REQUESTS} requests in {time.perf_counter() - began:.1f}s"
                    )
                    load = wrk(
                        url,
                        connections=1,
                        seconds=SECONDS if measure else 1,
                        script=APPS / "signed.lua",
                    )
                    if measure:
                        if load.errors:
                            raise RuntimeError(f"{load.errors} signed requests were refused")
                        checked.add("chutes, signed", load)
    base, sig = plain.median("chutes"), checked.median("chutes, signed")
    unchecked = plain.median("chutes, signed, unchecked")
    added = (sig.p50 - base.p50) * 1000
    rows = [
        ["chutes", f"{base.p50:.3f}", f"{base.rps:.0f}", "-"],
        [
            "chutes, signed requests, no keys",
            f"{unchecked.p50:.3f}",
            f"{unchecked.rps:.0f}",
            f"+{(unchecked.p50 - base.p50) * 1000:.0f}",
        ],
        ["chutes, signed", f"{sig.p50:.3f}", f"{sig.rps:.0f}", f"+{added:.0f}"],
    ]
    print(table(["system", "p50 ms (c=1)", "req/s (c=1)", "added µs"], rows))
    print(
        f"signature verification adds {added:.0f} µs to p50 (goal: at most 100 µs); "
        f"{(sig.p50 - unchecked.p50) * 1000:.0f} µs against the same requests unchecked"
    )
    return added
