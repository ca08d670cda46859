"""Probes outbound connections before and after the egress lock (target in EGRESS_TARGET).

Each probe tries one common way of reaching the target: a plain socket, asyncio
streams and httpx's async client on the host's event loop, a UDP datagram, and
the same from a Python child process started after startup.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys

import httpx

from chutes.chute import Chute

HOST, PORT = os.environ["EGRESS_TARGET"].rsplit(":", 1)
ALLOW = os.environ.get("EGRESS_ALLOW") == "1"

chute = Chute(username="test", name="egress-probe", allow_external_egress=ALLOW)

CHILD = f"""
import asyncio, json, socket
import httpx

def outcome(attempt):
    try:
        attempt()
    except Exception as exc:
        return f"refused: {{type(exc).__name__}}: {{exc}}"
    return "connected"

async def streams():
    _, writer = await asyncio.open_connection({HOST!r}, {PORT})
    writer.close()

print(json.dumps({{
    "socket": outcome(lambda: socket.create_connection(({HOST!r}, {PORT}), timeout=3).close()),
    "httpx": outcome(lambda: httpx.get("http://{HOST}:{PORT}/", timeout=3)),
    "asyncio": outcome(lambda: asyncio.run(streams())),
}}))
"""


def outcome_of(error: BaseException | None) -> str:
    """``connected``, or ``refused:`` and the chain of causes (clients wrap the first)."""
    if error is None:
        return "connected"
    causes = []
    while error is not None and len(causes) < 6:
        causes.append(f"{type(error).__name__}: {error}")
        grouped = getattr(error, "exceptions", None)  # an exception group: its first
        error = grouped[0] if grouped else (error.__cause__ or error.__context__)
    return "refused: " + " <- ".join(causes)


def plain_socket(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return outcome_of(exc)
    return "connected"


def datagram(host: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"probe", (host, port))
        except OSError as exc:
            return outcome_of(exc)
    return "connected"


async def streams(host: str, port: int) -> str:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
    except OSError as exc:
        return outcome_of(exc)
    writer.close()
    return "connected"


async def async_httpx(host: str, port: int) -> str:
    try:
        async with httpx.AsyncClient(timeout=3, trust_env=False) as client:
            await client.get(f"http://{host}:{port}/")
    except httpx.HTTPError as exc:
        return outcome_of(exc)
    return "connected"


async def host_probes() -> dict:
    port = int(PORT)
    return {
        "socket": await asyncio.to_thread(plain_socket, HOST, port),
        "asyncio": await streams(HOST, port),
        "httpx": await async_httpx(HOST, port),
        "udp": datagram(HOST, port),
    }


@chute.on_startup()
async def before_lock(self):
    self.before = await host_probes()


@chute.cord(method="GET")
async def probe(self) -> dict:
    child = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60
    )
    own_port = int(self.runtime.address.rsplit(":", 1)[1])
    return {
        "before": self.before,
        "after": await host_probes(),
        "child": json.loads(child.stdout) if child.returncode == 0 else child.stderr[-500:],
        "loopback": {
            "socket": await asyncio.to_thread(plain_socket, "127.0.0.1", own_port),
            "httpx": await async_httpx("127.0.0.1", own_port),
        },
    }
