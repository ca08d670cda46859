"""The host's fixed cost per request, in process (µs), before and after a change.

``python -m bench hostcost`` drives ASGI apps with synthetic ``scope``,
``receive`` and ``send``, one request at a time, with no server and no
sockets between the client and the app, so what is timed is the app's own
work and little of the shared machine's noise:

- ``bare FastAPI``: ``apps/bare.py``, the baseline of figure 1;
- ``chutes``: the host serving ``apps/trivial.py`` (the same cord);
- ``chutes passthrough``: the host serving ``apps/forward.py``, forwarding to
  a stand-in upstream in the same event loop (a bare asyncio protocol that
  answers every request with the same small JSON, so nearly all of the time
  is the host's and its engine client's).

Each system runs in its own process (``--worker``); the parent has them
measure in turn, round after round, so noise hits them alike. ``--before DIR``
adds each chute served from the packages in ``DIR`` (as ``BENCH_BEFORE`` does
for the other figures, see bench/README.md), named "…, before".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import APPS, PYTHON, table

ROUNDS = 7
PER_ROUND = 3000
BODY = b'{"text": "hello"}'
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}]}'
)
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(ANSWER),
    ANSWER,
)


class Upstream(asyncio.Protocol):
    """Answers each request on a keep-alive connection with :data:`RESPONSE`."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(RESPONSE)


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bench"),
            (b"accept", b"*/*"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


class _Exchange:
    """One request's ``receive`` and ``send``, as uvicorn gives them."""

    __slots__ = ("body", "gone", "sent")

    def __init__(self, body: bytes, gone: asyncio.Future[None]) -> None:
        self.body: bytes | None = body
        self.gone = gone
        self.sent: list[Any] = []

    async def receive(self) -> dict[str, Any]:
        body = self.body
        if body is not None:
            self.body = None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.gone  # nothing more until the client leaves
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def _measure(app: Any, path: str, body: bytes, count: int) -> float:
    """Median µs of ``count`` requests to ``app``; each must answer 200."""
    loop = asyncio.get_running_loop()
    times = []
    for _ in range(count):
        scope = _scope(path, body)
        exchange = _Exchange(body, loop.create_future())
        began = time.perf_counter()
        await app(scope, exchange.receive, exchange.send)
        times.append(time.perf_counter() - began)
        exchange.gone.cancel()
        if exchange.sent[0]["status"] != 200:
            raise RuntimeError(f"{path} answered {exchange.sent}")
    return statistics.median(times) * 1e6


async def _started(app: Any) -> Any:
    """Run ``app``'s lifespan startup (a task that lives on); returns the app."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    done = asyncio.get_running_loop().create_future()
    await queue.put({"type": "lifespan.startup"})

    async def send(message: Any) -> None:
        if not done.done():
            done.set_result(message["type"])

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    app._bench_lifespan = asyncio.get_running_loop().create_task(app(scope, queue.get, send))
    if await done != "lifespan.startup.complete":
        raise RuntimeError("startup failed")
    return app


async def _worker(kind: str) -> None:
    sys.path.insert(0, str(APPS))
    if kind == "bare":
        from bare import app  # type: ignore[import-not-found]

        path, body = "/echo", BODY
    else:
        from chutes_runtime.hosting import build_app

        if kind == "chute":
            from trivial import chute  # type: ignore[import-not-found]

            path, body = "/echo", BODY
        else:
            server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0)
            os.environ["UPSTREAM_PORT"] = str(server.sockets[0].getsockname()[1])
            from forward import chute  # type: ignore[import-not-found]

            path, body = "/v1/chat/completions", CHAT
        app = await _started(build_app(chute))
    await _measure(app, path, body, 500)  # warm up
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        print(f"{await _measure(app, path, body, int(line)):.2f}", flush=True)


def _spawn(kind: str, before: str | None) -> subprocess.Popen[str]:
    env = {**os.environ, "CHUTES_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    if before:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [before, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.hostcost", "--worker", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {kind} worker did not start")
    return process


def run(before: str | None = None, rounds: int = ROUNDS, count: int = PER_ROUND) -> None:
    systems = {"bare FastAPI": ("bare", None), "chutes": ("chute", None)}
    if before:
        systems["chutes, before"] = ("chute", before)
    systems["chutes passthrough"] = ("forward", None)
    if before:
        systems["chutes passthrough, before"] = ("forward", before)
    workers = {name: _spawn(kind, path) for name, (kind, path) in systems.items()}
    results: dict[str, list[float]] = {name: [] for name in systems}
    try:
        for _ in range(rounds):
            for name, process in workers.items():
                assert process.stdin is not None and process.stdout is not None
                process.stdin.write(f"{count}\n")
                process.stdin.flush()
                results[name].append(float(process.stdout.readline()))
    finally:
        for process in workers.values():
            process.kill()
            process.wait()
    bare = statistics.median(results["bare FastAPI"])
    rows = []
    for name, samples in results.items():
        median = statistics.median(samples)
        rows.append([name, f"{median:.1f}", f"{median - bare:+.1f}", f"{bare / median:.2f}x"])
    print(f"{rounds} rounds of {count} requests each, one at a time, in process")
    print(table(["system", "µs/request", "vs bare FastAPI", "speed vs bare"], rows))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench hostcost")
    parser.add_argument("--before", help="packages of an earlier commit (see bench/README.md)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--requests", type=int, default=PER_ROUND, help="per round")
    parser.add_argument("--worker", choices=["bare", "chute", "forward"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            import uvloop
        except ImportError:
            asyncio.run(_worker(args.worker))
        else:
            uvloop.run(_worker(args.worker))  # as `chutes run` serves where it can
        return
    run(args.before, args.rounds, args.requests)


if __name__ == "__main__":
    main(sys.argv[1:])
