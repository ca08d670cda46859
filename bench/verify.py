"""The in-process cost of verifying one signed request (µs), before and after a change.

``python -m bench verify`` signs requests in advance, then times the host's
:class:`chutes_runtime.auth.Signatures` check on each, one request at a time,
against the same check as of ``BENCH_VERIFY_BEFORE`` (a git revision, default
:data:`BEFORE`; its ``runtime/auth.py`` is loaded from git). Both check the
same requests, interleaved request by request so noise on this shared machine
hits them alike; each keeps its own nonce cache. Two floors give the
attribution: the library's ``HTTPMessageVerifier.verify`` alone and the
Ed25519 check alone (OpenSSL through ``cryptography``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import table

#: The host's check before its digest and header handling were trimmed.
BEFORE = "4385c14"
ROUNDS = 7
PER_ROUND = 2000

ROOT = Path(__file__).resolve().parent.parent


def _old_auth(revision: str) -> Any | None:
    """``runtime/auth.py`` as of ``revision``, as a module, or None without git."""
    try:
        source = subprocess.run(
            ["git", "show", f"{revision}:runtime/auth.py"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("auth_before")
    exec(compile(source, f"{revision}:runtime/auth.py", "exec"), module.__dict__)
    return module


def _requests(count: int, key_id: str, private_key: str) -> list[tuple[dict[str, Any], bytes]]:
    """``count`` signed ``POST /echo`` requests, as ASGI scopes with their bodies."""
    import httpx

    from chutes_core.signing import RequestSigner

    signer = RequestSigner(key_id, private_key)
    made = []
    for _ in range(count):
        request = httpx.Request("POST", "http://127.0.0.1:8000/echo", json={"text": "hello"})
        signer.sign(request, request.content)
        headers = [(name.lower(), value) for name, value in request.headers.raw]
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/echo",
            "raw_path": b"/echo",
            "query_string": b"",
            "headers": headers,
        }
        made.append((scope, request.content))
    return made


def _time(check: Callable[[], Any]) -> float:
    began = time.perf_counter()
    check()
    return (time.perf_counter() - began) * 1e6


def run() -> dict[str, float]:
    from chutes_core.signing import generate_keypair
    from chutes_runtime import auth

    private_key, public_key = generate_keypair()
    requests = _requests(ROUNDS * PER_ROUND, "bench", private_key)
    revision = os.environ.get("BENCH_VERIFY_BEFORE", BEFORE)
    old = _old_auth(revision)
    systems: dict[str, Any] = {"after (this tree)": auth.Signatures({"bench": public_key}, 600)}
    if old is not None:
        systems[f"before ({revision})"] = old.Signatures({"bench": public_key}, 600)
    else:
        print(f"no git revision {revision}: measuring this tree only")
    library = systems["after (this tree)"]._verifier
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ed_private = Ed25519PrivateKey.generate()
    ed_public, base = ed_private.public_key(), os.urandom(250)  # a signature base's size
    ed_signature = ed_private.sign(base)

    medians: dict[str, list[float]] = {name: [] for name in systems}
    medians["floor: library verify() alone"] = []
    medians["floor: Ed25519 alone"] = []
    for round_ in range(ROUNDS):
        samples: dict[str, list[float]] = {name: [] for name in medians}
        for scope, body in requests[round_ * PER_ROUND : (round_ + 1) * PER_ROUND]:
            for name, checker in systems.items():
                samples[name].append(_time(lambda c=checker, s=scope, b=body: c.check(s, b)))
            samples["floor: library verify() alone"].append(
                _time(
                    lambda s=scope: library.verify(
                        auth._Incoming(s), max_age=None, expect_tag="chutes"
                    )
                )
            )
            samples["floor: Ed25519 alone"].append(
                _time(lambda: ed_public.verify(ed_signature, base))
            )
        for name, values in samples.items():
            medians[name].append(statistics.median(values))
    rows = []
    for name, values in medians.items():
        rows.append(
            [
                name,
                f"{statistics.median(values):.1f}",
                f"{min(values):.1f}-{max(values):.1f}",
            ]
        )
    print(table(["verification", f"median µs ({ROUNDS} rounds)", "spread of round medians"], rows))
    after = statistics.median(medians["after (this tree)"])
    result = {"after_us": after}
    if old is not None:
        before_values = medians[f"before ({revision})"]
        ratios = [a / b for a, b in zip(medians["after (this tree)"], before_values, strict=True)]
        before = statistics.median(before_values)
        result |= {"before_us": before, "ratio": statistics.median(ratios)}
        print(
            f"after / before: {statistics.median(ratios):.3f}x "
            f"(rounds {min(ratios):.3f}-{max(ratios):.3f}); "
            f"{before - after:+.1f} µs saved per request"
        )
    return result
