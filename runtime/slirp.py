"""The namespace's kernel-level way out during startup: slirp4netns, and routes for the allowlist.

``slirp4netns`` (Debian's, the user-mode network rootless Podman uses) gives the
chute's namespace a ``tap0`` device whose packets it turns into ordinary
sockets of its own, outside. Every client reaches out through it, whatever it
is written in and whether or not it honours proxy settings.

* The supervisor (:class:`Slirp`) starts it on the host child's namespace with
  ``--disable-host-loopback`` (its gateway would otherwise lead to the
  machine's ``127.0.0.1``), ``--disable-dns`` when an allowlist is set, and
  ``--enable-seccomp``; ``--enable-sandbox`` (an empty root, every capability
  but ``CAP_NET_BIND_SERVICE`` dropped) only where the chute is in a user
  namespace, since a sandboxed root slirp4netns would hold fewer capabilities
  than a root chute and so could be ptraced by it. At the lock it closes
  slirp4netns's exit pipe; slirp4netns exits, ``tap0`` and its routes go away.
* The host (:func:`configure`), still holding ``CAP_NET_ADMIN`` in its
  namespace, gives ``tap0`` a /32 address and routes only the allowlist's IPv4
  networks (everything when there is no list) through slirp4netns's gateway;
  the host then drops ``CAP_NET_ADMIN`` and ``CAP_NET_RAW`` before importing the
  chute, so nothing inside can add a route or write frames to ``tap0`` itself.
  An address off the list has no route: ``connect()`` fails with
  ``ENETUNREACH`` and no packet leaves. Host names on the list are reachable
  through the relay (:mod:`chutes_runtime.relay`) only.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import select
import shutil
import socket
import struct
import subprocess
import time
from typing import Any

from chutes_runtime.relay import Allowlist

#: ``auto`` (slirp4netns where installed, else the relay only) or ``relay``.
STARTUP_NET_ENV = "CHUTES_EGRESS_STARTUP_NET"
TAP = "tap0"
MTU = 65520
# slirp4netns's own network; one that overlaps no allowlisted network is used.
_CIDRS = ("10.0.2.0/24", "172.30.254.0/24", "192.168.254.0/24", "100.127.254.0/24")


def startup_net() -> str:
    value = os.environ.get(STARTUP_NET_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "relay"):
        raise ValueError(f"{STARTUP_NET_ENV} must be auto or relay, not {value!r}")
    return value


def plan(allowlist: Allowlist) -> tuple[dict[str, Any] | None, str]:
    """The kernel way out for ``allowlist`` (``None`` when there is none) and why."""
    if startup_net() == "relay":
        return None, f"{STARTUP_NET_ENV}=relay"
    if shutil.which("slirp4netns") is None:
        return None, "slirp4netns is not installed"
    if allowlist:
        routes = [str(n) for n in allowlist.networks if n.version == 4]
        if not routes:
            return None, "the startup allowlist names no IPv4 address or network"
    else:
        routes = ["0.0.0.0/0"]
    taken = [ipaddress.ip_network(route) for route in routes if route != "0.0.0.0/0"]
    cidr = next(
        (c for c in map(ipaddress.ip_network, _CIDRS) if not any(c.overlaps(t) for t in taken)),
        None,
    )
    if cidr is None:
        return None, "every slirp4netns network overlaps the startup allowlist"
    hosts = list(cidr.hosts())
    return {
        "tap": TAP,
        "cidr": str(cidr),
        "gateway": str(hosts[1]),  # slirp4netns: .2 is the gateway, .3 DNS, .100 the guest
        "address": str(hosts[99]),
        "routes": routes,
        "dns": not allowlist,
    }, ""


class Slirp:
    """slirp4netns attached to ``pid``'s network namespace, until :meth:`stop`."""

    def __init__(self, pid: int, way: dict[str, Any], sandbox: bool) -> None:
        exit_read, self._exit = os.pipe()
        ready_read, ready_write = os.pipe()
        command = [
            "slirp4netns",
            f"--mtu={MTU}",
            f"--cidr={way['cidr']}",
            "--disable-host-loopback",
            "--enable-seccomp",
            f"--exit-fd={exit_read}",
            f"--ready-fd={ready_write}",
        ]
        command += [] if way["dns"] else ["--disable-dns"]
        command += ["--enable-sandbox"] if sandbox else []
        try:
            self.process = subprocess.Popen(
                [*command, str(pid), way["tap"]],
                pass_fds=(exit_read, ready_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(exit_read)
            os.close(ready_write)
        with os.fdopen(ready_read, "rb") as ready:
            readable, _, _ = select.select([ready], [], [], 10)
            if not readable or ready.read(1) != b"1":
                output = self.stop()
                raise OSError(f"slirp4netns did not start: {output.strip() or 'no answer'}")

    def stop(self, namespace_pid: int | None = None) -> str:
        """Stop slirp4netns (its tap device goes with it); returns what it printed."""
        if self._exit >= 0:
            os.close(self._exit)
            self._exit = -1
        try:
            output, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        if namespace_pid is not None:  # the device is gone once slirp4netns's fd closes
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _has_tap(namespace_pid):
                time.sleep(0.02)
        return output.decode(errors="replace")


def _has_tap(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/net/dev") as dev:
            return any(line.split(":", 1)[0].strip() == TAP for line in dev)
    except OSError:
        return False


# ---------------------------------------------------------------------------- inside
_SIOCSIFFLAGS, _SIOCGIFFLAGS, _SIOCSIFMTU, _IFF_UP = 0x8914, 0x8913, 0x8922, 0x1
_RTM_NEWADDR, _RTM_NEWROUTE = 20, 24
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_RT_TABLE_MAIN, _RTPROT_STATIC, _RTN_UNICAST = 254, 4, 1
_RT_SCOPE_UNIVERSE, _RT_SCOPE_LINK = 0, 253
_IFA_ADDRESS, _IFA_LOCAL, _RTA_DST, _RTA_OIF, _RTA_GATEWAY = 1, 2, 1, 4, 5


def configure(way: dict[str, Any]) -> None:
    """Address ``tap0`` and route the allowlist through slirp4netns (needs ``CAP_NET_ADMIN``)."""
    tap = way["tap"]
    index = socket.if_nametoindex(tap)
    sysctl = f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"
    with contextlib.suppress(OSError), open(sysctl, "w") as file:  # slirp4netns: IPv4 only
        file.write("1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        name = tap.encode()
        fcntl.ioctl(sock, _SIOCSIFMTU, struct.pack("16si12x", name, MTU))
        flags = struct.unpack(
            "16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sH14x", name, 0))[:18]
        )[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", name, flags | _IFF_UP))
    address = socket.inet_aton(way["address"])
    gateway = socket.inet_aton(way["gateway"])
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as netlink:
        # the address alone, as a /32: no route to the rest of slirp4netns's network
        ifaddr = struct.pack("BBBBI", socket.AF_INET, 32, 0, _RT_SCOPE_UNIVERSE, index)
        _request(
            netlink,
            _RTM_NEWADDR,
            ifaddr + _attr(_IFA_LOCAL, address) + _attr(_IFA_ADDRESS, address),
        )
        _request(
            netlink,
            _RTM_NEWROUTE,
            _route(32, _RT_SCOPE_LINK)
            + _attr(_RTA_DST, gateway)
            + _attr(_RTA_OIF, struct.pack("I", index)),
        )
        for route in way["routes"]:
            network = ipaddress.IPv4Network(route)
            body = _route(network.prefixlen, _RT_SCOPE_UNIVERSE)
            if network.prefixlen:
                body += _attr(_RTA_DST, network.network_address.packed)
            body += _attr(_RTA_GATEWAY, gateway) + _attr(_RTA_OIF, struct.pack("I", index))
            _request(netlink, _RTM_NEWROUTE, body)


def _route(prefix: int, scope: int) -> bytes:
    return struct.pack(
        "BBBBBBBBI",
        socket.AF_INET,
        prefix,
        0,
        0,
        _RT_TABLE_MAIN,
        _RTPROT_STATIC,
        scope,
        _RTN_UNICAST,
        0,
    )


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return struct.pack("HH", length, kind) + value + b"\0" * (-length % 4)


def _request(netlink: socket.socket, kind: int, body: bytes) -> None:
    flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL
    netlink.send(struct.pack("IHHII", 16 + len(body), kind, flags, 1, 0) + body)
    reply = netlink.recv(65536)
    error = struct.unpack("i", reply[16:20])[0] if len(reply) >= 20 else 0
    if error:
        raise OSError(-error, f"netlink ({kind}): {os.strerror(-error)}")
