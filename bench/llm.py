"""Figure 6: a real engine's streaming tokens/s and time to first token, through a chute and direct.

A vLLM (CPU build) chute made by the vllm plugin's template, served by ``chutes
run`` as the vllm_e2e tests do, with a tiny random Llama built on the spot
(nothing is downloaded). The same engine is reached through the chute and on
its own port, alternating each round, at 1, 8 and 32 concurrent streams of
streaming chat completions of 48 tokens each (``ignore_eos``).

Each measurement is a closed loop: every stream sends its next request as the
last one ends; tokens are counted as they arrive within the window (from the
usage vLLM puts in every chunk: a reader that falls behind gets several tokens
per chunk), so requests cut by its edges count for what they delivered there.
Time to first token is from sending to the first chunk carrying a token. Each
measurement runs in a process of its own (in the chute's network namespace to
reach its engine directly).

``--egress-layers``: the engine alone, started twice side by side, once with
the audit hook that a locked chute puts into its Python children (through the
runtime's ``sitecustomize``), once without, alternated the same way; then the
hook's cost taken apart, events per token times time per event
(:mod:`bench.audit_cost`).

Past 400 lines on purpose: the load generator (run as ``python -m bench.llm``
inside the chute's namespace) is kept beside the figure it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import PYTHON, free_port, server, table

STREAMS = (1, 8, 32)
ROUNDS = 3
SECONDS = 6.0
MAX_TOKENS = 48
MAX_MODEL_LEN = 256
ENGINE_PORT = 10101
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Window:
    """What one measurement saw: tokens inside the window, and each request's TTFT (ms)."""

    tokens: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)
    #: Tokens received in all, the window's and those of the requests it cut.
    received: int = 0
    #: CPU seconds the chute's host spent meanwhile (``None``: not a chute).
    host_cpu: float | None = None

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


async def _stream(session, url: str, body: bytes, window: Window, start: float, end: float) -> None:
    sent = time.perf_counter()
    first = True
    tokens = 0  # generated so far: a slow reader gets several tokens in one chunk
    headers = {"content-type": "application/json"}
    if key := os.environ.get("BENCH_LLM_KEY"):
        headers["authorization"] = f"Bearer {key}"
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {await resp.text()}")
        buffer = b""
        async for block in resp.content.iter_any():
            now = time.perf_counter()
            buffer += block
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.startswith(b"data: {"):
                    continue
                event = json.loads(line[6:])
                usage = event.get("usage") or {}
                generated = usage.get("completion_tokens", tokens)
                if generated > tokens:
                    if first:
                        first = False
                        if start <= sent:
                            window.ttft.append((now - sent) * 1000)
                    if start <= now <= end:
                        window.tokens += generated - tokens
                    window.received += generated - tokens
                    tokens = generated


async def _measure(url: str, model: str, streams: int, seconds: float) -> Window:
    import aiohttp

    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": MAX_TOKENS,
            "ignore_eos": True,
            "stream": True,
            # Usage in every chunk: vLLM merges the tokens a slow reader has not taken
            # yet into one chunk, so chunks are not tokens.
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
    ).encode()
    window = Window(seconds=seconds)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        start = time.perf_counter()
        end = start + seconds

        async def loop() -> None:
            while time.perf_counter() < end:
                await _stream(session, url, body, window, start, end)

        await asyncio.gather(*(loop() for _ in range(streams)))
    return window


@dataclass
class Target:
    """Where one system is reached: a URL, inside a network namespace or not, with a key or not."""

    url: str
    netns: str | None = None
    key: str | None = None
    #: The serving host's process, whose CPU time is taken (a chute).
    host: int | None = None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(target: Target, model: str, streams: int, seconds: float = SECONDS) -> Window:
    """One measurement, from a fresh process (entering the network namespace
    ``target.netns`` names, to reach an engine inside a chute's)."""
    command = [PYTHON, "-m", "bench.llm", target.url, model, str(streams), str(seconds)]
    if target.netns is not None:
        command = ["nsenter", f"--net={target.netns}", *command]
    env = {**os.environ, "BENCH_LLM_KEY": target.key or ""}
    cpu = _cpu_seconds(target.host) if target.host else 0.0
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {target.url} failed:\n{done.stderr[-3000:]}")
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return Window(
        tokens=seen["tokens"],
        seconds=seconds,
        ttft=seen["ttft"],
        received=seen.get("received", 0),
        host_cpu=_cpu_seconds(target.host) - cpu if target.host else None,
    )


def _load(argv: list[str]) -> None:
    """``python -m bench.llm URL MODEL STREAMS SECONDS``: one measurement, as JSON."""
    url, model, streams, seconds = argv
    window = asyncio.run(
        _measure(f"{url}/v1/chat/completions", model, int(streams), float(seconds))
    )
    print(json.dumps({"tokens": window.tokens, "ttft": window.ttft, "received": window.received}))


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            found += [int(child) for child in children]
            todo += [int(child) for child in children]
    return found


def chute_engine(supervisor: int) -> tuple[str | None, str | None]:
    """The network namespace (``None``: the host's own) and API key of the engine
    under the ``chutes run`` process ``supervisor`` (the host gives it a random key)."""
    ours = os.readlink("/proc/self/ns/net")
    for pid in _descendants(supervisor):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"--api-key" in argv:
                netns = f"/proc/{pid}/ns/net"
                key = argv[argv.index(b"--api-key") + 1].decode()
                return (None if os.readlink(netns) == ours else netns), key
    raise RuntimeError(f"no engine with an API key found under process {supervisor}")


@contextlib.contextmanager
def vllm_chute(
    workdir: Path, model: str, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[Target, Target]]:
    """The template's chute under ``chutes run``; yields it and its engine (on ENGINE_PORT)."""
    from chutes_testing.running import run_chute, write_template_app

    ref = write_template_app(
        workdir,
        "vllm",
        username="bench",
        model_name=model,
        concurrency=64,
        engine_args={"max_model_len": MAX_MODEL_LEN},
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf"), "VLLM_HOST_IP": "127.0.0.1"}
    env["CHUTES_LOG_LEVEL"] = "WARNING"
    env.update(extra_env or {})
    with run_chute(ref, cwd=workdir, env=env, ready_timeout=900) as running:
        netns, key = chute_engine(running.process.pid)
        host = _serving_host(running.process.pid)
        engine = Target(f"http://127.0.0.1:{ENGINE_PORT}", netns, key)
        yield Target(running.url, host=host), engine


def _serving_host(supervisor: int) -> int:
    """The process serving the chute: the one in the namespace, else the supervisor itself."""
    for pid in _descendants(supervisor):
        with contextlib.suppress(OSError):
            if b"serve_ref" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return supervisor


def engine_command(model: str, port: int) -> list[str]:
    """The engine as the template starts it on CPU, on ``port``."""
    return [
        PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
        "--served-model-name", model, "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", str(MAX_MODEL_LEN),
    ]  # fmt: skip


def engine_env(workdir: Path) -> dict[str, str]:
    return {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(workdir / "hf"),
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def alternate(
    targets: dict[str, Target], model: str, rounds: int, seconds: float = SECONDS
) -> dict[int, dict[str, list[Window]]]:
    """Every system at every stream count, the order flipped each round."""
    names = list(targets)
    for target in targets.values():  # warm every path (and the engine's first batches)
        measure(target, model, 8, 2.0)
    seen: dict[int, dict[str, list[Window]]] = {n: {name: [] for name in names} for n in STREAMS}
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        for streams in STREAMS:
            for name in order:
                window = measure(targets[name], model, streams, seconds)
                seen[streams][name].append(window)
                print(
                    f"  round {index + 1} c={streams:<2} {name:<10} {window.rate:7.1f} tok/s  "
                    f"TTFT p50 {statistics.median(window.ttft or [0]):7.1f} ms",
                    flush=True,
                )
    return seen


def report(seen: dict[int, dict[str, list[Window]]], ours: str, base: str) -> dict[str, float]:
    """Median tokens/s and pooled TTFT p50 per stream count; ``ours`` against ``base``."""
    rows, ratios = [], {}
    for streams, by_name in seen.items():
        rate = {name: statistics.median(w.rate for w in ws) for name, ws in by_name.items()}
        ttft = {
            name: statistics.median([t for w in ws for t in w.ttft] or [0.0])
            for name, ws in by_name.items()
        }
        per_round = [a.rate / b.rate for a, b in zip(by_name[ours], by_name[base], strict=True)]
        cpu = [w.host_cpu / w.received * 1e6 for w in by_name[ours] if w.host_cpu and w.received]
        ratios[f"c{streams}_host_cpu_us_per_token"] = statistics.median(cpu) if cpu else 0.0
        ratio = rate[ours] / rate[base]
        ratios[f"c{streams}_tokens_ratio"] = ratio
        ratios[f"c{streams}_ttft_added_ms"] = ttft[ours] - ttft[base]
        rows.append(
            [
                str(streams),
                f"{rate[base]:.0f}",
                f"{rate[ours]:.0f}",
                f"{ratio:.3f}x",
                f"{statistics.median(per_round):.2f} ({min(per_round):.2f}-{max(per_round):.2f})",
                f"{ttft[base]:.1f}",
                f"{ttft[ours]:.1f}",
                f"{ttft[ours] - ttft[base]:+.1f}",
                f"{statistics.median(cpu):.0f}" if cpu else "-",
            ]
        )
    print(
        table(
            [
                "streams",
                f"{base} tok/s",
                f"{ours} tok/s",
                "ratio",
                "per round: median (range)",
                f"{base} TTFT p50 ms",
                f"{ours} TTFT p50 ms",
                "added ms",
                "host CPU µs/token",
            ],
            rows,
        )
    )
    return ratios


def run(
    egress_layers: bool = False,
    rounds: int = ROUNDS,
    before: str | None = None,
    seconds: float = SECONDS,
) -> dict[str, float]:
    """``before``: a directory of packages (an earlier commit's ``chutes_runtime`` and
    the rest) put first on ``PYTHONPATH`` for a second chute measured alongside."""
    from chutes_testing.tiny_models import build_tiny_llama

    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        workdir = Path(tmp)
        model = str(build_tiny_llama(workdir / "model"))
        if egress_layers:
            return _egress_layers(workdir, model, rounds)
        chutes = {"chute": {}}
        if before:
            chutes["chute, before"] = {"PYTHONPATH": str(Path(before).resolve())}
        targets: dict[str, Target] = {}
        with contextlib.ExitStack() as stack:
            for label, extra in chutes.items():
                began = time.perf_counter()
                (project := workdir / label.replace(", ", "-")).mkdir()
                chute, engine = stack.enter_context(vllm_chute(project, model, extra))
                print(
                    f"vLLM {label} ready in {time.perf_counter() - began:.0f} s; "
                    f"network namespace: {'its own' if engine.netns else 'none'}"
                )
                targets[label.replace("chute", "direct")], targets[label] = engine, chute
            seen = alternate(targets, model, rounds, seconds)
        ratios: dict[str, float] = {}
        for label in chutes:
            print(f"\n{label} against its engine direct:")
            found = report(seen, label, label.replace("chute", "direct"))
            print(
                f"llm ratios ({label}): "
                + "; ".join(
                    f"c={n} tokens/s {found[f'c{n}_tokens_ratio']:.3f}x direct, "
                    f"TTFT p50 {found[f'c{n}_ttft_added_ms']:+.1f} ms"
                    for n in STREAMS
                )
            )
            ratios.update({f"{label}: {key}": value for key, value in found.items()})
        return ratios


def _egress_layers(workdir: Path, model: str, rounds: int) -> dict[str, float]:
    """Side by side with and without the hook (``rounds`` of them; 0 skips it), then
    the hook's cost taken apart (:mod:`bench.audit_cost`), which resolves far below 2%."""
    from bench import audit_cost
    from chutes_runtime import egress

    ratios: dict[str, float] = {}
    if rounds:
        hooked_port, plain_port = free_port(), free_port()
        # What egress.prepare() gives an engine a chute starts: the sitecustomize on the
        # path and a file that exists until the lock, removed once the engine is ready.
        open_file = workdir / "egress-open"
        open_file.touch()
        locked = {
            "PYTHONPATH": os.pathsep.join([egress.SITE_DIR, os.environ.get("PYTHONPATH", "")]),
            egress.OPEN_ENV: str(open_file),
        }
        with contextlib.ExitStack() as stack:
            for port, extra in ((hooked_port, locked), (plain_port, {})):
                stack.enter_context(
                    server(
                        engine_command(model, port),
                        f"http://127.0.0.1:{port}/v1/models",
                        cwd=workdir,
                        env={**engine_env(workdir), **extra},
                    )
                )
            open_file.unlink()  # the lock
            targets = {
                "no hook": Target(f"http://127.0.0.1:{plain_port}"),
                "audit hook": Target(f"http://127.0.0.1:{hooked_port}"),
            }
            seen = alternate(targets, model, rounds)
        ratios = report(seen, "audit hook", "no hook")
        print(
            "egress layer ratios: "
            + "; ".join(
                f"c={n} tokens/s with the audit hook {ratios[f'c{n}_tokens_ratio']:.3f}x without"
                for n in STREAMS
            )
        )
    ratios.update(audit_cost.run(workdir, model, STREAMS, SECONDS))
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench llm")
    parser.add_argument("--egress-layers", action="store_true")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also measure a chute served from the packages in DIR (first on PYTHONPATH)",
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="length of each measurement")
    args = parser.parse_args(argv)
    run(args.egress_layers, args.rounds, args.before, args.seconds)


if __name__ == "__main__":
    _load(sys.argv[1:])
