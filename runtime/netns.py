"""The namespace layer: ``chutes run`` keeps the chute's process tree in its own network namespace.

``chutes run`` (the *supervisor*, which never imports the chute) binds the
public socket, opens the egress :class:`~chutes_runtime.relay.Relay`, and starts
the host as a child that, before importing anything of the chute, enters a new
user and network namespace and takes the socket with it. Inside there is only
loopback: engines talk to the host there, incoming traffic arrives through the
socket bound outside. The ways out during startup are the relay, offered as
``HTTP(S)_PROXY``, and, where slirp4netns is installed, a ``tap0`` device it
drives, routed only to the allowlist (:mod:`chutes_runtime.slirp`). The host
then drops the capabilities that could change that. At the lock the host asks
the supervisor to close the relay and stop slirp4netns, waits for the answer,
and checks locally (``/proc/self/net``, no packet sent) that nothing but
loopback is left.

Where the kernel refuses an unprivileged user namespace, root makes a bare
network namespace and drops the capabilities that could leave it. Where neither
works the host says so and goes on with the other layers, unless
``CHUTES_EGRESS_ISOLATION=require``, which refuses to start (``off`` never tries).

A chute that turns out to be allowed egress is handed back: the host exits and
the supervisor serves the chute itself, outside, as before; it re-checks the
policy there and refuses to serve a chute it finds locked.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chutes_runtime import egress, seccomp, slirp
from chutes_runtime.relay import Allowlist, Forwarder, Relay

log = logging.getLogger("chutes.runtime")

ISOLATION_ENV = "CHUTES_EGRESS_ISOLATION"
ALLOWLIST_ENV = "CHUTES_EGRESS_STARTUP_ALLOW"
_CONTROL_ENV = "CHUTES_NETNS_CONTROL_FD"
_LISTEN_ENV = "CHUTES_NETNS_LISTEN_FD"
_RELAY_ENV = "CHUTES_NETNS_RELAY"
#: The host's exit code when it hands an egress-allowed chute back to the supervisor.
HANDED_BACK = 75
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
_NO_PROXY = "localhost,127.0.0.1,::1"

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
# Capabilities the host gives up before importing the chute: each could leave the namespace
# (or, with CAP_NET_ADMIN and CAP_NET_RAW, change or bypass the startup routes).
_CAP_NAMES = {
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


@dataclass
class Status:
    """This process's namespace layer: entered (and how), or why not."""

    active: bool = False
    how: str = ""
    reason: str | None = None
    #: The ways out during startup, in words (``/_chutes/ready`` and the startup log).
    startup_egress: str = ""


status = Status()
_control: socket.socket | None = None
_forwarder: Forwarder | None = None
_relay_path: str | None = None


def mode() -> str:
    value = os.environ.get(ISOLATION_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "require", "off"):
        raise ValueError(f"{ISOLATION_ENV} must be auto, require or off, not {value!r}")
    return value


def inside() -> bool:
    """Whether this process was started by a supervisor to enter a namespace."""
    return _CONTROL_ENV in os.environ


# ---------------------------------------------------------------------------- inside
def enter() -> socket.socket:
    """Enter the namespace (before the chute is imported); returns the socket bound outside."""
    global _control, _forwarder, _relay_path
    _control = socket.socket(fileno=int(os.environ.pop(_CONTROL_ENV)))
    _control.set_inheritable(False)
    listener = socket.socket(fileno=int(os.environ.pop(_LISTEN_ENV)))
    listener.set_inheritable(False)
    _relay_path = os.environ.pop(_RELAY_ENV)
    try:
        status.how = _unshare()
    except OSError as exc:
        status.reason = str(exc)
        _send({"event": "unavailable", "reason": status.reason})
        return listener
    status.active = True
    _send({"event": "entered", "how": status.how})
    status.startup_egress = _take_way_out()
    _drop_capabilities(ctypes.CDLL(None, use_errno=True))
    _forwarder = Forwarder(_relay_path)
    os.environ.update(dict.fromkeys(_PROXY_VARS, _forwarder.url))
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = _NO_PROXY
    return listener


def _take_way_out() -> str:
    """Set up the way out the supervisor offers (still privileged in the namespace)."""
    assert _control is not None
    _control.settimeout(30)
    try:
        with _control.makefile("rb") as replies:
            reply = json.loads(replies.readline() or b"{}")
    except (OSError, ValueError) as exc:
        reply = {"why": f"no answer from the supervisor: {exc}"}
    _control.settimeout(None)
    way, why = reply.get("way"), reply.get("why", "no answer from the supervisor")
    if way:
        try:
            slirp.configure(way)
        except OSError as exc:
            why = f"slirp4netns could not be set up: {exc}"
        else:
            routes = ", ".join(way["routes"])
            return f"slirp4netns (routed: {routes}) and the HTTP(S)_PROXY relay"
    return f"the HTTP(S)_PROXY relay only ({why}): clients that ignore proxies have no way out"


def hand_back() -> None:
    """Egress is allowed: tell the supervisor to serve the chute outside."""
    _send({"event": "allowed"})


def lock_layers(kernel: bool) -> list[str]:
    """Lock egress in every layer this process has; returns the layers, outermost first.

    ``kernel``: a serving process, which may take on a seccomp filter and a one-way lock.
    """
    layers = []
    if status.active:
        _close_way_out()
        problems = self_test()
        if problems:
            raise RuntimeError("the namespace still has a way out: " + "; ".join(problems))
        layers.append("netns")
    if kernel:
        reason = seccomp.install()
        if reason is None:
            layers.append("seccomp")
        else:
            log.warning("egress: no seccomp layer: %s", reason)
    egress.lock(one_way=kernel)
    layers.append("audit")
    return layers


def _close_way_out() -> None:
    assert _control is not None and _forwarder is not None
    _forwarder.close()
    for name in (*_PROXY_VARS, "NO_PROXY", "no_proxy"):
        os.environ.pop(name, None)
    _send({"event": "lock"})
    _control.settimeout(30)
    reply = _control.recv(4096)
    if json.loads(reply or b"{}").get("event") != "locked":
        raise RuntimeError("the supervisor did not confirm that the egress relay is closed")


def self_test() -> list[str]:
    """What is left that could leave the namespace, read from ``/proc/self/net`` (this
    namespace's view; sysfs may still show the outer interfaces). Sends nothing."""
    problems = []
    with open("/proc/self/net/dev") as dev:
        interfaces = [line.split(":", 1)[0].strip() for line in dev.readlines()[2:]]
    if outer := [name for name in interfaces if name != "lo"]:
        problems.append(f"interfaces besides loopback: {', '.join(outer)}")
    with open("/proc/self/net/route") as route:
        if len(route.readlines()) > 1:
            problems.append("IPv4 routes")
    with contextlib.suppress(FileNotFoundError), open("/proc/self/net/ipv6_route") as route6:
        if any(line.split()[-1] != "lo" for line in route6 if line.strip()):
            problems.append("IPv6 routes beyond loopback")
    if _relay_path and os.path.exists(_relay_path):
        problems.append("the relay's socket")
    return problems


def _send(message: dict[str, Any]) -> None:
    if _control is not None:
        _control.sendall(json.dumps(message).encode() + b"\n")


def _unshare() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        _write("/proc/self/setgroups", "deny")  # needed to write gid_map from inside
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        _loopback_up()
        return "user namespace"
    user_error = ctypes.get_errno()
    if libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(
            error,
            f"no network namespace: a user namespace was refused ({os.strerror(user_error)}) "
            f"and so was a bare one ({os.strerror(error)})",
        )
    _loopback_up()
    return "network namespace as root"


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _loopback_up() -> None:
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, siocgifflags, request)[:18])[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def _drop_capabilities(libc: Any) -> None:
    pr_capbset_drop, pr_cap_ambient, clear_all = 24, 47, 4
    for number in _CAP_NAMES.values():
        libc.prctl(pr_capbset_drop, number, 0, 0, 0)
    libc.prctl(pr_cap_ambient, clear_all, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    for number in _CAP_NAMES.values():
        word, bit = divmod(number, 32)
        for field in range(3):  # effective, permitted, inheritable
            data[word * 3 + field] &= ~(1 << bit) & 0xFFFFFFFF
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


# ---------------------------------------------------------------------------- outside
_INNER = (
    "import sys; from chutes_runtime.server import serve_ref; "
    "sys.exit(serve_ref(sys.argv[1], host=sys.argv[2], port=int(sys.argv[3])))"
)


def supervise(ref: str, host: str, port: int, serve_outside: Callable[[socket.socket], int]) -> int:
    """``chutes run`` as the supervisor; returns the exit code.

    ``serve_outside(listener)`` serves a chute handed back (egress allowed).
    """
    try:
        listener = socket.create_server((host, port), family=_family(host))
    except OSError as exc:  # as uvicorn says it when it binds: one line, exit 1
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    listener.set_inheritable(True)
    ours, theirs = socket.socketpair()
    theirs.set_inheritable(True)
    workdir = tempfile.mkdtemp(prefix="chutes-netns-")
    relay = Relay(
        os.path.join(workdir, "relay.sock"), Allowlist.parse(os.environ.get(ALLOWLIST_ENV))
    )
    try:
        way = slirp.plan(relay.allowlist)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    env = {
        **os.environ,
        _CONTROL_ENV: str(theirs.fileno()),
        _LISTEN_ENV: str(listener.fileno()),
        _RELAY_ENV: relay.path,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", _INNER, ref, host, str(port)],
        env=env,
        pass_fds=(listener.fileno(), theirs.fileno()),
        preexec_fn=_die_with_parent,
    )
    theirs.close()
    _set_dumpable(False)  # a same-uid chute may not ptrace this process or read its fds
    relay.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: child.send_signal(number))
    handed_back = _follow(ours, child, relay, way)
    code = child.wait()
    relay.close()
    os.rmdir(workdir)
    if handed_back and code == HANDED_BACK:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        _set_dumpable(True)
        log.info("egress allowed: serving outside the network namespace")
        return serve_outside(listener)
    return code


def _follow(
    control: socket.socket,
    child: subprocess.Popen[bytes],
    relay: Relay,
    way: tuple[dict[str, Any] | None, str],
) -> bool:
    """Answer the host until it exits; True if it handed the chute back before any lock."""
    namespace: int | None = None
    handed_back = locked = False
    tool: slirp.Slirp | None = None

    def close_ways_out() -> None:
        nonlocal tool
        relay.close()
        if tool is not None:
            tool.stop(child.pid)
            tool = None

    with control, control.makefile("rb") as messages:
        for line in messages:
            message: dict[str, Any] = {}
            with contextlib.suppress(ValueError, AttributeError):
                message = dict(json.loads(line))
            event = message.get("event")
            if event == "entered" and namespace is None:
                namespace = os.stat(f"/proc/{child.pid}/ns/net").st_ino
                plan, why = way
                if plan is not None:
                    # sandboxed only where the chute is in a user namespace (see slirp.py)
                    sandbox = os.geteuid() == 0 and message.get("how") == "user namespace"
                    try:
                        tool = slirp.Slirp(child.pid, plan, sandbox=sandbox)
                    except OSError as exc:
                        plan, why = None, str(exc)
                reply = {"event": "way out", "way": plan, "why": why}
                control.sendall(json.dumps(reply).encode() + b"\n")
            elif event == "unavailable":
                close_ways_out()
            elif event == "lock":
                close_ways_out()
                locked = True
                control.sendall(b'{"event": "locked"}\n')
            elif event == "allowed" and not locked:
                close_ways_out()
                handed_back = True
    close_ways_out()
    child.wait()
    if namespace is not None:
        _sweep(namespace)
    return handed_back


def _sweep(namespace: int) -> None:
    """Kill whatever is left in the chute's namespace once its host has exited."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == namespace:
                    os.kill(int(entry), signal.SIGKILL)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _set_dumpable(on: bool) -> None:
    ctypes.CDLL(None).prctl(4, int(on), 0, 0, 0)  # PR_SET_DUMPABLE
