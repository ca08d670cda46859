"""The Ray cluster a chute is deployed to, and this process's connection to it.

Which cluster: ``address``, else ``RAY_ADDRESS``, else a Ray head on this
machine at ``127.0.0.1:$CHUTES_RAY_PORT`` (6379 by default), started when
nothing answers there. That head listens on loopback only.

Ray is imported only in :func:`connect`, after :data:`LOOPBACK_ENV` is set
for a loopback cluster: Ray reads it on import to decide which address this
driver advertises, and with it unset a driver looks for a loopback cluster at
the machine's LAN address (and waits there for minutes).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chutes_core.errors import ChutesError, InvalidValueError

LOCAL_PORT_ENV = "CHUTES_RAY_PORT"
DEFAULT_LOCAL_PORT = 6379
#: With this at 0, Ray keeps a node on loopback instead of advertising the LAN address.
#: The local head and every driver that talks to a loopback address need it.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Kept out of what Ray uploads as the working directory.
EXCLUDES = [".git", ".venv*", ".nox", "__pycache__", "*.pyc", "node_modules", "build", "dist"]

Progress = Callable[[str], None]


def quiet(_line: str) -> None:
    pass


def local_port() -> int:
    raw = os.environ.get(LOCAL_PORT_ENV, str(DEFAULT_LOCAL_PORT))
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1024 <= port <= 65535:
        raise InvalidValueError(LOCAL_PORT_ENV, raw, "a port number from 1024 to 65535")
    return port


def resolve_address(address: str | None) -> tuple[str, bool]:
    """The cluster to use, and whether it is the local head chutes manages."""
    if address:
        return address, False
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], False
    return f"127.0.0.1:{local_port()}", True


def start_local_head(port: int, *, num_cpus: int | None = None) -> int:
    """Start a Ray head on ``127.0.0.1:port``, detached, listening on loopback only.

    Returns its process group id: ``kill -- -PGID`` (or ``ray stop``) stops it.
    """
    command = [
        _ray_cli(), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
        # Ports Ray would otherwise fix, chosen free so another Ray on this machine is no clash.
        "--ray-client-server-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--include-dashboard", "false", "--disable-usage-stats",
    ]  # fmt: skip
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    process = subprocess.Popen(
        command,
        env={**os.environ, LOOPBACK_ENV: "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, out of the terminal's reach
    )
    try:
        output, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise ChutesError(
            f"the local Ray head on 127.0.0.1:{port} did not start in 300 s"
        ) from None
    if process.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ChutesError(f"could not start a local Ray head on 127.0.0.1:{port}: {tail}")
    # `ray start` led the new session, so the daemons it left keep its pid as their group.
    return process.pid


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")  # the venv's own, even when not on PATH
    found = str(beside) if beside.exists() else shutil.which("ray")
    if found is None:
        raise ChutesError("no `ray` command found: pip install chutes-ray")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a plain ``host:port`` address (not ``ray://`` or ``auto``)."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise ChutesError("deploying to Ray needs Ray Serve: pip install chutes-ray") from None
    return ray


def connect(address: str, *, working_dir: Path | None = None) -> None:
    """Connect this process to the cluster at ``address`` (once).

    ``working_dir`` is shipped to the cluster and becomes the replicas'
    working directory, so the chute's module imports there.
    """
    plain = host_port(address)
    if plain is not None:
        host, port = plain
        if _is_loopback(host):
            # Must be set before Ray is imported: it decides the address this driver advertises.
            os.environ.setdefault(LOOPBACK_ENV, "0")
            _check_loopback_in_effect(address)
        if not _answers(host, port):
            raise ChutesError(f"no Ray cluster answers at {address}")
    ray = ray_module()
    if ray.is_initialized():
        return
    runtime_env = {"working_dir": str(working_dir), "excludes": EXCLUDES} if working_dir else None
    try:
        ray.init(
            address=address, runtime_env=runtime_env, logging_level="WARNING", log_to_driver=False
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ChutesError(f"cannot connect to Ray at {address}: {first_line(exc)}") from None
    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def _check_loopback_in_effect(address: str) -> None:
    """Refuse (rather than hang) when Ray was imported before it could be kept on loopback:
    it would then look for the cluster at this machine's LAN address."""
    if "ray" not in sys.modules:
        return
    from ray._private import ray_constants

    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
        raise ChutesError(
            f"cannot reach the loopback cluster {address}: Ray was imported before chutes "
            f"could keep it on loopback; set {LOOPBACK_ENV}=0 before importing ray"
        )


def connect_to(
    address: str | None, *, working_dir: Path | None, start: bool, progress: Progress
) -> tuple[str, bool, int | None]:
    target, local = resolve_address(address)
    started = None
    if local and not _answers("127.0.0.1", local_port()):
        if not start:
            raise ChutesError(f"no local Ray head at {target} (is it running? see `ray status`)")
        progress(f"starting a local Ray head at {target}")
        started = start_local_head(local_port())
        progress(f"started a local Ray head at {target} (stop it with `kill -- -{started}`)")
    connect(target, working_dir=working_dir)
    return target, local, started


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
