"""Figure 2: passthrough overhead, against the upstream directly and nginx proxy_pass."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

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
STREAMS = 150
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream engine {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def ttfb(url: str, count: int) -> list[float]:
    """Milliseconds to the first byte of streamed chat completions, one after another."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    times = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            began = time.perf_counter()
            with client.stream("POST", url, json=body) as response:
                chunks = response.iter_raw()
                next(chunks)
                times.append((time.perf_counter() - began) * 1000)
                for _ in chunks:
                    pass
    return times


def run() -> dict[str, float]:
    if PEERS and shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx; or BENCH_PEERS=0)")
    upstream_port, nginx_port = free_port(), free_port()
    chutes = {"chutes passthrough": {}}
    if BEFORE:
        chutes["chutes passthrough, before"] = before_env()
    ports = {name: free_port() for name in chutes}
    urls = {"direct": f"http://127.0.0.1:{upstream_port}/v1/chat/completions"}
    urls.update({name: f"http://127.0.0.1:{ports[name]}/v1/chat/completions" for name in chutes})
    if PEERS:
        urls["nginx proxy_pass"] = f"http://127.0.0.1:{nginx_port}/v1/chat/completions"
    low, high = Samples(), Samples()
    first_bytes: dict[str, list[float]] = {name: [] for name in urls}
    with ExitStack() as stack:
        stack.enter_context(
            server(
                [PYTHON, "upstream.py", str(upstream_port)],
                f"http://127.0.0.1:{upstream_port}/v1/models",
            )
        )
        for name, env in chutes.items():
            stack.enter_context(
                server(
                    [
                        PYTHON,
                        "-m",
                        "chutes_cli",
                        "run",
                        "forward:chute",
                        "--port",
                        str(ports[name]),
                    ],
                    f"http://127.0.0.1:{ports[name]}/_chutes/ready",
                    env={"UPSTREAM_PORT": str(upstream_port), **env},
                )
            )
        if PEERS:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-nginx-")))
            conf = workdir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=workdir, upstream=upstream_port, port=nginx_port))
            stack.enter_context(
                server(
                    ["nginx", "-c", str(conf), "-p", str(workdir)],
                    f"http://127.0.0.1:{nginx_port}/v1/models",
                )
            )
        for url in urls.values():
            wrk(url, connections=8, seconds=1, script=APPS / "chat.lua")
        for index in range(ROUNDS):
            for name, url in urls.items() if index % 2 == 0 else reversed(urls.items()):
                low.add(name, wrk(url, connections=1, seconds=SECONDS, script=APPS / "chat.lua"))
                high.add(name, wrk(url, connections=32, seconds=SECONDS, script=APPS / "chat.lua"))
                first_bytes[name] += ttfb(url, STREAMS // ROUNDS)
    direct1, direct32 = low.median("direct"), high.median("direct")
    direct_ttfb = statistics.median(first_bytes["direct"])
    rows = []
    for name in urls:
        one, many = low.median(name), high.median(name)
        first = statistics.median(first_bytes[name])
        rows.append(
            [
                name,
                f"{many.rps:.0f}",
                f"{many.rps / direct32.rps:.2f}x",
                f"{one.p50:.3f}",
                f"{one.p50 - direct1.p50:+.3f}",
                f"{first:.2f}",
                f"{first - direct_ttfb:+.2f}",
            ]
        )
    print(
        table(
            [
                "path",
                "req/s (c=32)",
                "vs direct",
                "p50 ms (c=1)",
                "added ms",
                "SSE TTFB p50 ms",
                "added ms",
            ],
            rows,
        )
    )
    ratios = {}
    for name in chutes:
        one, many = low.median(name), high.median(name)
        found = {
            "throughput_vs_direct": many.rps / direct32.rps,
            "added_ttfb_ms": statistics.median(first_bytes[name]) - direct_ttfb,
            "added_latency_ms": one.p50 - direct1.p50,
        }
        per_round = [
            a.rps / b.rps for a, b in zip(high.runs[name], high.runs["direct"], strict=True)
        ]
        line = (
            f"passthrough ratios ({name}): throughput {found['throughput_vs_direct']:.2f}x "
            f"direct (per round {min(per_round):.2f}-{max(per_round):.2f}); "
            f"SSE added TTFB p50 {found['added_ttfb_ms']:.2f} ms; "
            f"added p50 at c=1 {found['added_latency_ms']:+.3f} ms"
        )
        if PEERS:
            nginx1, nginx32 = low.median("nginx proxy_pass"), high.median("nginx proxy_pass")
            found["nginx_throughput_vs_direct"] = nginx32.rps / direct32.rps
            found["added_latency_vs_nginx"] = found["added_latency_ms"] / max(
                nginx1.p50 - direct1.p50, 1e-3
            )
            line += (
                f", {found['added_latency_vs_nginx']:.2f}x nginx's; "
                f"nginx throughput {found['nginx_throughput_vs_direct']:.2f}x direct"
            )
        print(line)
        if name == "chutes passthrough":
            ratios = found
    return ratios
