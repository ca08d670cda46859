"""Write coalescing under load: responses leave at the end of the loop's turn.

uvicorn writes each response as it is produced: the head, then each body
part, one ``send`` each, every one waking the client. At one request at a
time that is what keeps latency low. Under load it is not: a turn of the
event loop serves many connections, and writing each answer at once wakes
each client mid-turn, whose next request then interrupts the rest of the
turn. Holding the writes of a busy turn until its end (the same idea as
Netty's flush consolidation) sends each connection's head and body in one
write, once the turn's work is done: 15 to 20% more requests per second at 32
connections on two cores, with no change at one (see BENCHMARKS.md).

So writes are held only while another request is in flight on the server
(the turn has other work); with one request at a time they go straight out.
A held write goes out at the end of the turn, before the connection closes
(the host's close, or the client's half-close), or at once when it is large;
nothing is held across turns.

Only the transport's public surface is used: :func:`coalescing` wraps the one
uvicorn's protocol receives in ``connection_made``, so every writer on the
connection (the HTTP cycle, a websocket after an upgrade, the header deadline)
goes through it in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

__all__ = ["HOLD_AT_MOST", "CoalescingTransport", "coalescing"]

#: A write this large goes out at once (with whatever was held before it).
HOLD_AT_MOST = 64 * 1024


class CoalescingTransport:
    """``transport`` with its writes held until the end of a busy loop turn.

    ``in_flight``: the server's requests being served (uvicorn's
    ``server_state.tasks``); writes are held only while it holds more than one.
    """

    __slots__ = ("_held", "_in_flight", "_loop", "_size", "transport")

    def __init__(
        self,
        transport: asyncio.Transport,
        in_flight: Collection[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.transport = transport
        self._in_flight = in_flight
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if not held:
            if len(self._in_flight) < 2 or len(data) >= HOLD_AT_MOST:
                self.transport.write(data)
                return
            self._loop.call_soon(self.flush)
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer; and len() counts bytes
        held.append(data)
        self._size += len(data)
        if self._size >= HOLD_AT_MOST:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send what is held now (a no-op when nothing is)."""
        held = self._held
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        self._size = 0
        if not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._size = 0
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self.transport.get_write_buffer_size()

    # The calls uvicorn makes per request, without a detour through __getattr__.
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def coalescing(base: type[Any] | None = None) -> type[Any]:
    """uvicorn's HTTP protocol (``base``; uvicorn's choice by default) writing through
    a :class:`CoalescingTransport`. Pass it as ``uvicorn.Config(http=...)``, or as the
    base of another such protocol."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class Coalescing(base):  # type: ignore[misc, valid-type]
        _coalescing: CoalescingTransport | None = None

        def connection_made(self, transport: Any) -> None:
            wrapped = CoalescingTransport(
                transport, self.server_state.tasks, asyncio.get_running_loop()
            )
            self._coalescing = wrapped
            super().connection_made(wrapped)

        def eof_received(self) -> bool | None:
            # The client half-closed: the loop closes the transport itself when this
            # returns, before the turn's end; what is held (its answer) goes first.
            if self._coalescing is not None:
                self._coalescing.flush()
            return super().eof_received()  # type: ignore[no-any-return]

    return Coalescing
