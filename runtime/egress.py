"""The egress lock: after startup, no new connection beyond loopback.

It is enforced with a Python audit hook (PEP 578) on ``socket.connect``,
``socket.sendto``, ``socket.sendmsg`` and ``socket.getaddrinfo``, in the host
process and in every Python process the host starts (through the
``sitecustomize`` in this package). Loopback and Unix sockets stay open, so
passthrough to a local engine keeps working.

The host serves a locked chute on asyncio's own event loop, not uvloop, whose
connections are made in C without those audit events.

What it does not cover: native code that opens sockets without going through
Python's ``socket`` module (a non-Python binary, a C extension's own
networking, a child process running uvloop) and connections opened before
the lock. Pair it with a
container-level policy (a Kubernetes NetworkPolicy or an egress firewall)
where that matters; the lock is the in-process, always-on layer.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

LOCK_ENV = "CHUTES_EGRESS_LOCK_FILE"
SITE_DIR = str(Path(__file__).with_name("sitecustomize"))
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class EgressBlocked(PermissionError):
    """A connection beyond loopback was attempted while egress is locked."""


def _is_local(address: Any) -> bool:
    """Whether a socket address or host name is loopback."""
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class _Lock:
    """One audit hook per process; ``active`` decides whether it bites."""

    def __init__(self, lock_file: str | None = None) -> None:
        self.active = False
        self.lock_file = lock_file

    def engaged(self) -> bool:
        if self.active:
            return True
        if self.lock_file is not None and os.path.exists(self.lock_file):
            self.active = True
        return self.active

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not event.startswith("socket."):
            return
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            sock, address = args[0], args[-1]
            family = getattr(sock, "family", None)
            if family == socket.AF_UNIX or address is None:
                return
            if not _is_local(address) and self.engaged():
                raise EgressBlocked(
                    f"egress is locked for this chute: connection to {address!r} refused"
                )
        elif event == "socket.getaddrinfo":
            host = args[0]
            if host is not None and not _is_local(host) and self.engaged():
                raise EgressBlocked(
                    f"egress is locked for this chute: name lookup of {host!r} refused"
                )


_host_lock: _Lock | None = None


def install_child_lock(lock_file: str) -> None:
    """Called by ``sitecustomize`` in child processes."""
    sys.addaudithook(_Lock(lock_file))


def prepare(environ: dict[str, str] | None = None) -> str:
    """Arrange for child Python processes to honour the lock; returns the lock file path.

    Called once egress is known to be forbidden, before startup hooks start
    engines. The lock itself takes effect only at :func:`lock`.
    """
    global _host_lock
    env = os.environ if environ is None else environ
    lock_file = env.get(LOCK_ENV) or os.path.join(
        tempfile.mkdtemp(prefix="chutes-egress-"), "locked"
    )
    env[LOCK_ENV] = lock_file
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SITE_DIR not in paths:
        env["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *paths])
    if _host_lock is None:
        _host_lock = _Lock()
        sys.addaudithook(_host_lock)
    return lock_file


def lock() -> None:
    """Lock egress now, for this process and the children prepared for it."""
    lock_file = prepare()
    Path(lock_file).touch()
    assert _host_lock is not None
    _host_lock.active = True


def is_locked() -> bool:
    return _host_lock is not None and _host_lock.active


def unlock() -> None:
    """Lift the lock when the host has stopped (so an embedding process, such as
    a test runner, can go on), and stop preparing children for it."""
    global _host_lock
    lock_file = os.environ.pop(LOCK_ENV, None)
    if lock_file:
        Path(lock_file).unlink(missing_ok=True)
        if Path(lock_file).parent.name.startswith("chutes-egress-"):
            Path(lock_file).parent.rmdir()
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        os.environ.pop("PYTHONPATH", None)
    if _host_lock is not None:
        _host_lock.active = False
