"""The deadline for a request's headers (slowloris on the head), over real HTTP.

`chutes run guarded:chute` with a 1 s header deadline, both served directly
(``CHUTES_EGRESS_ISOLATION=off``) and in the network-namespace mode with
egress locked, where the supervisor binds the socket and the host serves it
inside its namespace. Then
real uvicorn in-process with each of its HTTP protocols as the base. Raw
sockets play the slow clients; every wait is a socket read with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from chutes_runtime.limits import Limits, header_deadline
from chutes_testing.running import free_port

from .conftest import uvicorn_protocols

DEADLINE = 1.0
#: How late past the deadline the answer may come on a busy two-core machine.
MARGIN = 2.0


@pytest.fixture(
    scope="module",
    params=["off", pytest.param("require", marks=pytest.mark.netns)],
    ids=["direct", "netns"],
)
def deadlined(request, module_chute):
    env = {"CHUTES_HEADER_TIMEOUT": str(DEADLINE), "CHUTES_EGRESS_ISOLATION": request.param}
    if request.param == "require":
        env["GUARDED_LOCKED"] = "1"  # locked egress: served inside the namespace
    served = module_chute("guarded:chute", env=env)
    if request.param == "require":  # the socket really was handed into the namespace
        layers = httpx.get(f"{served.url}/_chutes/ready").json()["egress"]["layers"]
        assert "netns" in layers, layers
    return served.url


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when the close came (monotonic)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)  # socket.timeout (a failure) past the deadline
        except ConnectionResetError:
            # A trickling client wrote after the server had answered and closed; its
            # kernel answered that byte with a reset. Closed all the same.
            chunk = b""
        if not chunk:
            return data, time.monotonic()
        data += chunk


class Trickle(threading.Thread):
    """Sends ``text`` one byte at a time, ``pause`` apart, until done or refused."""

    def __init__(self, sock: socket.socket, text: bytes, pause: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.sock, self.text, self.pause = sock, text, pause
        self.stop = threading.Event()

    def run(self) -> None:
        for byte in self.text:
            if self.stop.wait(self.pause):
                return
            if select.select([self.sock], [], [], 0)[0]:
                return  # answered (or closed): a further byte would only draw a reset
            try:
                self.sock.send(bytes([byte]))
            except OSError:
                return


SLOW_HEAD = b"POST /echo HTTP/1.1\r\nHost: test\r\n" + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"


def test_a_slow_head_gets_408_while_others_are_served(deadlined) -> None:
    slow = [connect(deadlined) for _ in range(4)]
    began = time.monotonic()
    trickles = [Trickle(sock, SLOW_HEAD) for sock in slow]
    for trickle in trickles:
        trickle.start()
    try:
        with httpx.Client(timeout=5) as client:  # served meanwhile, one after another
            for _ in range(5):
                answer = client.post(f"{deadlined}/echo", json={"text": "hi"})
                assert answer.status_code == 200
        for sock in slow:
            data, closed = read_until_closed(sock, DEADLINE + MARGIN)
            assert data.startswith(b"HTTP/1.1 408 "), data
            assert b"did not arrive within 1s" in data
            assert DEADLINE - 0.1 <= closed - began <= DEADLINE + MARGIN
    finally:
        for trickle in trickles:
            trickle.stop.set()
        for sock in slow:
            sock.close()


def test_a_silent_connection_is_closed_without_an_answer(deadlined) -> None:
    with connect(deadlined) as sock:
        began = time.monotonic()
        data, closed = read_until_closed(sock, DEADLINE + MARGIN)
    assert data == b""
    assert DEADLINE - 0.1 <= closed - began <= DEADLINE + MARGIN


def test_the_deadline_starts_again_after_each_response(deadlined) -> None:
    body = b'{"text": "hi"}'
    request = (
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with connect(deadlined) as sock:
        # Heads that arrive in pieces, each within the deadline, are served on one connection.
        for _ in range(2):
            for piece in (request[:10], request[10:30], request[30:]):
                sock.sendall(piece)
                time.sleep(DEADLINE / 5)  # pacing the client, well inside the deadline
            sock.settimeout(DEADLINE + MARGIN)
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        # The next head trickles: 408 about DEADLINE after the last response.
        trickle = Trickle(sock, SLOW_HEAD)
        began = time.monotonic()
        trickle.start()
        try:
            data, closed = read_until_closed(sock, DEADLINE + MARGIN)
        finally:
            trickle.stop.set()
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert closed - began <= DEADLINE + MARGIN


def test_the_deadline_is_configurable_and_documented() -> None:
    assert Limits().header_timeout == 10.0
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, {"CHUTES_HEADER_TIMEOUT": "2.5"}):
        assert Limits.from_env().header_timeout == 2.5
    with (
        mock.patch.dict(os.environ, {"CHUTES_HEADER_TIMEOUT": "0"}),
        pytest.raises(ValueError, match="CHUTES_HEADER_TIMEOUT"),
    ):
        Limits.from_env()


async def _slow_app(scope, receive, send) -> None:
    """Answers after twice the deadline: a request in progress is never cut."""
    if scope["type"] != "http":
        return
    await asyncio.sleep(DEADLINE * 2)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


@contextlib.contextmanager
def uvicorn_with(base: type) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        _slow_app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        http=header_deadline(DEADLINE, base),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.mark.parametrize("base", uvicorn_protocols())
def test_each_uvicorn_protocol_gets_the_deadline(base) -> None:
    with uvicorn_with(base) as url:
        # A slow handler past the deadline is not cut: its head arrived in time.
        assert httpx.get(f"{url}/", timeout=10).text == "done"
        with connect(url) as sock:
            began = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: te")
            data, closed = read_until_closed(sock, DEADLINE + MARGIN)
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert DEADLINE - 0.1 <= closed - began <= DEADLINE + MARGIN
