"""The namespace's one way out during startup: an HTTP proxy relay the runtime closes at the lock.

Two halves joined by a Unix socket in a private directory:

* :class:`Relay` runs outside the namespace (in the supervising ``chutes run``
  process). It reads one proxy request per connection, ``CONNECT host:port`` or
  an absolute-form ``GET http://host/...``, checks the target against the
  startup allowlist, and pipes bytes. :meth:`Relay.close` removes the socket and
  cuts every tunnel, those opened before the lock included.
* :class:`Forwarder` runs inside, on the namespace's loopback, so that clients
  can use it as ``HTTP(S)_PROXY`` (the model hub client, pip, curl, httpx).

Clients that ignore proxy settings (a raw ``connect()``) reach out through
slirp4netns where it is installed (:mod:`chutes_runtime.slirp`, which enforces
the allowlist's addresses by routes), and not at all without it. The allowlist: comma-separated host names (``hf.co``, or
``.hf.co`` for the domain and its subdomains), addresses and CIDRs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

log = logging.getLogger("chutes.runtime")

_HEAD_LIMIT = 65536


class Allowlist:
    """Which targets the relay may reach; empty means any."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.names: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in (e.strip().lower() for e in entries):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.append(entry)

    @classmethod
    def parse(cls, text: str | None) -> Allowlist:
        return cls((text or "").split(","))

    def __bool__(self) -> bool:
        return bool(self.names or self.networks)

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(
            host == name or (name.startswith(".") and (host.endswith(name) or host == name[1:]))
            for name in self.names
        )

    def allows_ip(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


def _target(head: bytes) -> tuple[str, int, bytes] | None:
    """``(host, port, what to send upstream first)`` for a proxy request head."""
    try:
        line, _, rest = head.partition(b"\r\n")
        method, uri, version = line.decode("latin-1").split(" ")
    except ValueError:
        return None
    if method == "CONNECT":
        host, _, port = uri.rpartition(":")
        return (host.strip("[]"), int(port), b"") if port.isdigit() else None
    if not uri.startswith("http://"):
        return None
    parts = urlsplit(uri)
    if parts.hostname is None:
        return None
    port_number = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [h for h in rest.split(b"\r\n") if not h.lower().startswith(b"proxy-")]
    first = f"{method} {path} {version}".encode("latin-1")
    return parts.hostname, port_number, b"\r\n".join([first, *lines])


class Relay:
    """The outer half: serves proxy requests on a Unix socket until :meth:`close`."""

    def __init__(self, path: str, allowlist: Allowlist) -> None:
        self.path = path
        self.allowlist = allowlist
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="chutes-egress-relay", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_unix_server(self._serve, sock=self.listener)
        )
        self.loop.run_forever()

    async def _resolve(self, host: str, port: int) -> str | None:
        """The address to connect to, or ``None`` when the allowlist refuses the target."""
        if not self.allowlist or self.allowlist.allows_name(host):
            return host
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        if addresses and all(self.allowlist.allows_ip(a) for a in addresses):
            return addresses[0]
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = _target(head[:_HEAD_LIMIT])
            if target is None:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                return
            host, port, first = target
            address = await self._resolve(host, port)
            if address is None:
                log.warning("egress relay: %s:%d is not on the startup allowlist", host, port)
                writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
                return
            up_reader, upstream = await asyncio.open_connection(address, port)
            self.writers.add(upstream)
            if first:
                upstream.write(first)
            else:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            with contextlib.suppress(Exception):
                writer.write(
                    f"HTTP/1.1 502 Bad Gateway\r\nX-Error: {type(exc).__name__}\r\n\r\n".encode()
                )
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self.writers.discard(end)
                    end.close()

    def close(self) -> None:
        """Remove the way out: no new connection, and every open tunnel cut."""
        if self.closed:
            return
        self.closed = True

        async def stop() -> None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


class Forwarder:
    """The inner half: a loopback listener inside the namespace, piped to the relay's socket."""

    def __init__(self, relay_path: str) -> None:
        self.relay_path = relay_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, name="chutes-egress-forwarder", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(self.relay_path)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_copy, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            source.shutdown(socket.SHUT_RD)
