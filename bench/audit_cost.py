"""The egress lock's audit hook, costed inside an engine: events per token times the hook's cost.

Taking tokens/s with and without the hook, side by side, is the direct figure
(``python -m bench llm --egress-layers``), but its 2% goal is below what a
shared two-core machine resolves. This is the same cost taken apart: an engine
run with a hook that only counts the audit events of its processes
(``apps/audit_count``), their CPU time per token, and the egress hook's own
time per event (timed in process, on the events the engine raises most).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from bench.common import APPS, free_port, server, table

#: Events the engines raise most (vLLM: pickle.find_class in its engine core and
#: workers, builtins.id and object.__getattr__ in its API server), and a socket one.
EVENTS = {
    "pickle.find_class": ("builtins", "dict"),
    "builtins.id": (1,),
    "object.__getattr__": (object, "__name__"),
    "socket.connect": (None, ("127.0.0.1", 80)),
}


def hook_ns_per_event() -> dict[str, float]:
    """Nanoseconds per call of the locked hook a child gets (the call itself included:
    the interpreter makes it for every event once any hook is installed)."""
    from chutes_runtime import egress

    engaged = [True]
    hook = egress._make_hook(lambda: engaged[0])
    count = 200_000
    spent = {}
    for event, args in EVENTS.items():
        seconds = min(timeit.repeat(lambda e=event, a=args: hook(e, a), number=count, repeat=3))
        spent[event] = seconds / count * 1e9
    return spent


def _tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every process under it."""
    todo, total = [root], 0.0
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
    return total


def _events(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.json"):
        try:
            total += json.loads(path.read_text())["events"]
        except (OSError, ValueError):
            continue
    return total


def run(workdir: Path, model: str, streams: tuple[int, ...], seconds: float) -> dict[str, float]:
    from bench.llm import Target, engine_command, engine_env, measure

    spent = hook_ns_per_event()
    worst = max(spent.values())
    counts = Path(tempfile.mkdtemp(prefix="audit-count-", dir=workdir))
    port = free_port()
    env = {
        **engine_env(workdir),
        "PYTHONPATH": str(APPS / "audit_count"),
        "AUDIT_COUNT_DIR": str(counts),
    }
    rows, ratios = [], {}
    with server(
        engine_command(model, port), f"http://127.0.0.1:{port}/v1/models", cwd=workdir, env=env
    ) as engine:
        target = Target(f"http://127.0.0.1:{port}")
        measure(target, model, 8, 2.0)
        for n in streams:
            time.sleep(1.0)  # the counters are written every half second
            events, cpu = _events(counts), _tree_cpu(engine.pid)
            window = measure(target, model, n, seconds)
            time.sleep(1.0)
            events, cpu = _events(counts) - events, _tree_cpu(engine.pid) - cpu
            per_token = events / max(window.received, 1)
            cpu_us = cpu / max(window.received, 1) * 1e6
            share = per_token * worst / 1000 / cpu_us
            ratios[f"c{n}_hook_share"] = share
            rows.append(
                [
                    str(n),
                    f"{window.received}",
                    f"{per_token:.1f}",
                    f"{cpu_us:.0f}",
                    f"{per_token * worst / 1000:.2f}",
                    f"{share:.3%}",
                ]
            )
    print(
        "the hook's time per event (ns): "
        + ", ".join(f"{event} {ns:.0f}" for event, ns in spent.items())
    )
    print(
        table(
            [
                "streams",
                "tokens",
                "audit events/token",
                "engine CPU µs/token",
                "hook µs/token (worst event)",
                "hook share of engine CPU",
            ],
            rows,
        )
    )
    print(
        "egress layer cost (audit hook, events x time): "
        + "; ".join(f"c={n} {ratios[f'c{n}_hook_share']:.3%} of the engine's CPU" for n in streams)
        + f" (median {statistics.median(ratios.values()):.3%})"
    )
    return ratios
