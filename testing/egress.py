"""Checking a served chute's egress lock by connecting, not by reading its log.

>>> with namespaced_test_host() as target:            # "10.203.147.2:18080"
...     ref = write_egress_probe_app(project, "vllm", target, model_name=...)
...     with run_chute(ref, cwd=project, env={EGRESS_TARGET_ENV: target}) as chute:
...         outcomes = httpx.get(chute.url + PROBE_PATH).json()

The target is an HTTP server in a network namespace the caller creates, on a
veth pair in a private /30 chosen so that it overlaps no address or route of
this machine: no packet goes anywhere but loopback and that namespace. It
needs root and iproute2; :class:`NetnsUnavailable` says why when it cannot.

The probe app is a template chute as a user writes it, plus a startup hook
that fetches from the target over HTTP, honouring the proxy settings a
namespaced chute starts with (startup may reach the network: weights), and a
``GET /egress-probe`` cord that tries again from the host process and from a
Python child started then. Each outcome is ``"connected"`` or
``"refused: ..."``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "EGRESS_TARGET_ENV",
    "PROBE_PATH",
    "NetnsUnavailable",
    "check_egress_locked",
    "namespaced_test_host",
    "write_egress_probe_app",
]

EGRESS_TARGET_ENV = "CHUTES_TEST_EGRESS_TARGET"
PROBE_PATH = "/egress-probe"
CANDIDATES = (
    *("10.203.147.0/30", "172.31.211.128/30", "192.168.251.248/30", "10.99.231.64/30"),
    *("10.231.7.0/30", "172.29.117.64/30", "192.168.199.252/30", "10.147.91.200/30"),
)  # several, for suites running side by side


class NetnsUnavailable(RuntimeError):
    """This machine cannot host the namespaced test server (the message says why)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _networks_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every IPv4 network this machine has an address in or a route to (default aside)."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        words = line.split()
        used.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        if words and words[0] in {"local", "broadcast", "unicast", "multicast"}:
            words = words[1:]
        if words and words[0] != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(words[0], strict=False))
    return used


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def namespaced_test_host(port: int = 18080, timeout: float = 20.0) -> Iterator[str]:
    """``address:port`` of an HTTP server in a fresh network namespace, until the block ends."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise NetnsUnavailable("needs root and iproute2 to create a network namespace")
    used = _networks_in_use()
    subnet = next(
        (
            candidate
            for candidate in map(ipaddress.ip_network, CANDIDATES)
            if not any(candidate.overlaps(network) for network in used)
        ),
        None,
    )
    if subnet is None:
        raise NetnsUnavailable(f"every candidate test subnet ({', '.join(CANDIDATES)}) is in use")
    host_ip, peer_ip = (str(address) for address in subnet.hosts())
    namespace, veth = f"chutes-egress-{os.getpid()}", f"chv{os.getpid() % 100000}"
    if _ip("netns", "add", namespace, check=False).returncode != 0:
        raise NetnsUnavailable("this machine does not allow `ip netns add`")
    server = None
    try:
        peer = f"{veth}p"
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("addr", "add", f"{host_ip}/30", "dev", veth)
        _ip("link", "set", veth, "up")
        inside = ("netns", "exec", namespace)
        _ip(*inside, "ip", "addr", "add", f"{peer_ip}/30", "dev", peer)
        _ip(*inside, "ip", "link", "set", peer, "up")
        _ip(*inside, "ip", "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", *inside, sys.executable, "-m", "http.server", str(port), "--bind", peer_ip],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _answers(f"http://{peer_ip}:{port}/"):
            if time.monotonic() > deadline:  # set up, yet silent: a failure, not a skip
                raise TimeoutError(f"the namespaced test host did not answer in {timeout}s")
            time.sleep(0.05)
        yield f"{peer_ip}:{port}"
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        _ip("link", "del", veth, check=False)
        _ip("netns", "del", namespace, check=False)


_PROBE = """

# The egress probe (chutes_testing.egress): the target comes from the environment.
import os as _os
import socket as _socket
import subprocess as _subprocess
import sys as _sys

_TARGET = _os.environ.get({env!r}, "")
_CHILD = (
    "import socket, sys\\n"
    "host, port = sys.argv[1].rsplit(':', 1)\\n"
    "try:\\n"
    "    socket.create_connection((host, int(port)), timeout=3).close()\\n"
    "    print('connected')\\n"
    "except OSError as exc:\\n"
    "    print(f'refused: {{type(exc).__name__}}: {{exc}}')\\n"
)


def _connect(target):
    host, port = target.rsplit(":", 1)
    try:
        _socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        return f"refused: {{type(exc).__name__}}: {{exc}}"
    return "connected"


def _fetch(target):
    # As a model download does: over HTTP, through the proxy the runtime sets
    # while a namespaced chute starts (its only way out then).
    import urllib.request

    try:
        urllib.request.urlopen(f"http://{{target}}/", timeout=5).close()
    except OSError as exc:
        return f"refused: {{type(exc).__name__}}: {{exc}}"
    return "connected"


_outcomes = {{}}


@chute.on_startup()
async def _egress_probe_at_startup(self):
    if _TARGET:
        _outcomes["startup"] = _fetch(_TARGET)


@chute.cord(public_api_path={path!r}, method="GET")
async def egress_probe(self) -> dict:
    child = _subprocess.run(
        [_sys.executable, "-c", _CHILD, _TARGET], capture_output=True, text=True, timeout=60
    )
    return {{
        **_outcomes,
        "host": _connect(_TARGET),
        "child": child.stdout.strip() or child.stderr.strip(),
    }}
"""


def write_egress_probe_app(
    directory: str | os.PathLike[str], template: str, **arguments: Any
) -> str:
    """``app.py`` building a chute from ``template`` plus the egress probe; returns ``"app:chute"``.

    Serve it with :data:`EGRESS_TARGET_ENV` set to :func:`namespaced_test_host`'s address.
    """
    from chutes_testing.running import write_template_app

    ref: str = write_template_app(directory, template, **arguments)
    app = Path(directory) / "app.py"
    app.write_text(app.read_text() + _PROBE.format(env=EGRESS_TARGET_ENV, path=PROBE_PATH))
    return ref


def check_egress_locked(outcomes: dict[str, str]) -> None:
    """Startup reached the target; afterwards neither the host nor a child could."""
    from chutes_testing.conformance import ConformanceError

    if outcomes.get("startup") != "connected":
        raise ConformanceError(
            f"the probe could not reach the test host during startup, so a refusal later "
            f"proves nothing: {outcomes}"
        )
    for where in ("host", "child"):
        outcome = outcomes.get(where, "")
        if not (outcome.startswith("refused") and "egress is locked" in outcome):
            raise ConformanceError(f"after startup the {where} was not refused: {outcome!r}")
