"""The egress lock: after startup, no new connection beyond loopback.

Layers (see ``docs/egress.md``), outermost first:

``netns``    ``chutes run`` puts the chute's whole process tree in its own
             network namespace (:mod:`chutes_runtime.netns`); its way out during
             startup is a relay the runtime closes at the lock. Covers every
             process and syscall.
``seccomp``  a kernel filter refusing ``AF_PACKET`` and raw sockets from the lock
             on (:mod:`chutes_runtime.seccomp`), for the host and what it starts
             afterwards.
``audit``    this module: a Python audit hook (PEP 578) on ``socket.__new__``,
             ``connect``, ``sendto``, ``sendmsg`` and ``getaddrinfo``, in the host
             and in every Python process it starts (through the ``sitecustomize``
             in this package). Always on.

The audit layer alone does not cover native code (ctypes, C extensions,
non-Python binaries, uvloop), Python started with ``-I``/``-S``/``-E`` or a
cleared environment, or sockets opened before the lock: only the namespace
layer covers those. Without that layer the host serves a locked chute on
asyncio's own event loop, not uvloop, whose connections are made in C without
audit events.

The lock is one-way in a serving process: :func:`lock` adds a hook that holds no
state a chute could write (everything it uses is bound when it is made) and that
refuses attempts to swap its code or defaults. Children are told through a file
that exists only while egress is open: removing or renaming it locks them.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

OPEN_ENV = "CHUTES_EGRESS_OPEN_FILE"
SITE_DIR = str(Path(__file__).with_name("sitecustomize"))
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class EgressBlocked(PermissionError):
    """A connection beyond loopback was attempted while egress is locked."""


def _loopback_ip(
    text: str,
    _pton: Callable[[int, str], bytes] = socket.inet_pton,
    _v4: int = socket.AF_INET,
    _v6: int = socket.AF_INET6,
) -> bool | None:
    """Whether the numeric address ``text`` is loopback; ``None`` when it is not numeric."""
    text = text.split("%", 1)[0]
    try:
        return _pton(_v4, text)[0] == 127
    except OSError:
        pass
    try:
        raw = _pton(_v6, text)
    except OSError:
        return None
    if raw == bytes(15) + b"\x01":
        return True
    return raw[:12] == bytes(10) + b"\xff\xff" and raw[12] == 127


def _is_local(
    address: Any,
    resolve: bool = True,
    _ip: Callable[[str], bool | None] = _loopback_ip,
    _names: frozenset[str] = _LOOPBACK_NAMES,
    _gai: Callable[..., Any] = socket.getaddrinfo,
) -> bool:
    """Whether a socket address or host name is loopback.

    A name counts only if it is one of the usual loopback names *and* (with
    ``resolve``) every address it resolves to is loopback: a changed
    ``/etc/hosts`` cannot turn ``localhost`` into a way out.
    """
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    numeric = _ip(host)
    if numeric is not None:
        return numeric
    if host.lower() not in _names:
        return False
    if not resolve:
        return True
    try:
        found = _gai(host, None)
    except OSError:
        return False
    return bool(found) and all(_ip(str(entry[4][0])) for entry in found)


def _make_hook(engaged: Callable[[], bool]) -> Callable[[str, tuple[Any, ...]], None]:
    """An audit hook that refuses egress while ``engaged()``; everything it uses is bound now."""

    def hook(
        event: str,
        args: tuple[Any, ...],
        _engaged: Callable[[], bool] = engaged,
        _local: Callable[..., bool] = _is_local,
        _unix: int = socket.AF_UNIX,
        _packet: int = getattr(socket, "AF_PACKET", -1),
        _raw: int = socket.SOCK_RAW,
        _blocked: type[Exception] = EgressBlocked,
    ) -> None:
        if event.startswith("socket."):
            if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
                sock, address = args[0], args[-1]
                if getattr(sock, "family", None) == _unix or address is None:
                    return
                if _engaged() and not _local(address):
                    raise _blocked(
                        f"egress is locked for this chute: connection to {address!r} refused"
                    )
            elif event == "socket.getaddrinfo":
                host = args[0]
                if host is not None and _engaged() and not _local(host, False):
                    raise _blocked(
                        f"egress is locked for this chute: name lookup of {host!r} refused"
                    )
            elif event == "socket.__new__":
                family, kind = args[1], args[2]
                if (family == _packet or (kind & 0xF) == _raw) and _engaged():
                    raise _blocked(
                        "egress is locked for this chute: packet and raw sockets refused"
                    )
        elif event == "object.__setattr__" and args[0] in _guarded and _engaged():
            raise _blocked("egress is locked for this chute: its lock cannot be changed")

    _guarded = (hook, _is_local, _loopback_ip, engaged)
    return hook


class _Gate:
    """The revocable lock of a host embedded in another process (a test runner)."""

    def __init__(self) -> None:
        self._on = False

    def __call__(self) -> bool:
        return self._on

    def set(self, on: bool) -> None:
        self._on = on


_gate: _Gate | None = None
_one_way = False


def _always() -> bool:
    return True


def install_child_lock(open_file: str) -> None:
    """Called by ``sitecustomize`` in child processes: locked once ``open_file`` is gone."""
    latch = [False]

    def engaged(
        _exists: Callable[[str], bool] = os.path.exists, _latch: list[bool] = latch
    ) -> bool:
        if not _latch[0] and not _exists(open_file):
            _latch[0] = True
        return _latch[0]

    sys.addaudithook(_make_hook(engaged))


def prepare(environ: dict[str, str] | None = None) -> str:
    """Arrange for child Python processes to honour the lock; returns the open file's path.

    Called before the chute is imported (``chutes run``) or once egress is known
    to be forbidden; children started from then on lock when :func:`lock` runs.
    """
    global _gate
    env = os.environ if environ is None else environ
    open_file = env.get(OPEN_ENV) or os.path.join(tempfile.mkdtemp(prefix="chutes-egress-"), "open")
    Path(open_file).touch()
    env[OPEN_ENV] = open_file
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SITE_DIR not in paths:
        env["PYTHONPATH"] = os.pathsep.join([SITE_DIR, *paths])
    if _gate is None:
        _gate = _Gate()
        sys.addaudithook(_make_hook(_gate))
    return open_file


def lock(one_way: bool = False) -> None:
    """Lock egress now, for this process and the children prepared for it.

    ``one_way``: a serving process (``chutes run``); nothing can lift the lock.
    """
    global _one_way
    open_file = prepare()
    Path(open_file).unlink(missing_ok=True)
    assert _gate is not None
    _gate.set(True)
    if one_way and not _one_way:
        _one_way = True
        sys.addaudithook(_make_hook(_always))


def is_locked() -> bool:
    return _one_way or (_gate is not None and _gate())


def stand_down() -> None:
    """Egress turned out to be allowed: stop preparing children; those started keep an open file."""
    os.environ.pop(OPEN_ENV, None)
    _drop_site_dir()


def unlock() -> None:
    """Lift the lock when an embedded host has stopped (so its process, such as a
    test runner, can go on), and stop preparing children for it. A one-way lock stays."""
    open_file = os.environ.pop(OPEN_ENV, None)
    if open_file:
        Path(open_file).unlink(missing_ok=True)
        parent = Path(open_file).parent
        if parent.name.startswith("chutes-egress-"):
            with _suppress():
                parent.rmdir()
    _drop_site_dir()
    if _gate is not None:
        _gate.set(False)


def _drop_site_dir() -> None:
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SITE_DIR]
    if paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        os.environ.pop("PYTHONPATH", None)


def _suppress() -> Any:
    import contextlib

    return contextlib.suppress(OSError)
