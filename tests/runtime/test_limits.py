"""Request limits over real HTTP: one `chutes run guarded:chute` (concurrency 2) for the module.

Raw sockets play the misbehaving clients (a trickled body, a huge declared
length, a chunked flood), so each test controls every byte on the wire.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import metric, wait_for

BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def guarded(module_chute, tmp_path_factory):
    marks = tmp_path_factory.mktemp("marks")
    served = module_chute(
        "guarded:chute",
        env={
            "CHUTES_TEST_MARKS": str(marks),
            "CHUTES_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "CHUTES_JOB_MAX_IN_FLIGHT": "3",
        },
    )
    served.marks = marks
    return served


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def head(path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: test", *lines]) + "\r\n\r\n").encode()


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_bodies_do_not_starve_other_clients(guarded) -> None:
    # Four clients (twice the concurrency) send headers and one byte of 1000.
    trickling = []
    for _ in range(4):
        sock = connect(guarded.url)
        sock.sendall(head("/echo", "Content-Type: application/json", "Content-Length: 1000") + b"{")
        trickling.append(sock)
    began = time.monotonic()
    # Everyone else is served meanwhile: a slot is taken only once a body has arrived.
    for _ in range(5):
        answer = httpx.post(f"{guarded.url}/echo", json={"text": "hi"}, timeout=5)
        assert answer.status_code == 200
    assert time.monotonic() - began < BODY_TIMEOUT
    # And the trickling ones get 408 once the body deadline passes, then the connection closes.
    for sock in trickling:
        assert read_status(sock) == 408
        sock.close()
    assert metric(guarded.url, "chutes_rejected_total", reason="body_timeout") >= 4


def test_a_200_mb_body_is_refused_quickly_without_being_read(guarded) -> None:
    pid = guarded.process.pid
    before = rss_kib(pid)
    # Declared: refused from the headers alone.
    sock = connect(guarded.url)
    began = time.monotonic()
    sock.sendall(head("/echo", "Content-Type: application/json", "Content-Length: 200000000"))
    assert read_status(sock) == 413
    assert time.monotonic() - began < 2
    sock.close()
    # Chunked: refused as soon as the bytes received cross the limit (16 MiB by default).
    sock = connect(guarded.url)
    sock.sendall(head("/echo", "Content-Type: application/json", "Transfer-Encoding: chunked"))
    chunk = b"%x\r\n" % (1 << 20) + b"x" * (1 << 20) + b"\r\n"
    began = time.monotonic()
    sent = 0
    try:
        for _ in range(200):  # 200 MiB at most
            sock.sendall(chunk)
            sent += 1
    except OSError:
        pass  # the host answered and closed the connection: the rest is never read
    assert sent < 100
    assert read_status(sock) == 413
    assert time.monotonic() - began < 10
    sock.close()
    assert rss_kib(pid) - before < 50 * 1024
    assert metric(guarded.url, "chutes_rejected_total", reason="body_too_large") >= 2


def test_a_cord_may_set_its_own_body_limit(guarded) -> None:
    assert httpx.post(f"{guarded.url}/small", json={"text": "x" * 500}).status_code == 200
    refused = httpx.post(f"{guarded.url}/small", json={"text": "x" * 2000})
    assert refused.status_code == 413
    assert "at most 1024 bytes" in refused.json()["detail"]
    # The host-wide default still lets the same body through elsewhere.
    assert httpx.post(f"{guarded.url}/echo", json={"text": "x" * 2000}).status_code == 200


def test_too_many_headers_are_refused(guarded) -> None:
    headers = {f"x-filler-{i}": "y" for i in range(150)}
    answer = httpx.post(f"{guarded.url}/echo", json={"text": "hi"}, headers=headers)
    assert answer.status_code == 431
    assert "too many header fields" in answer.json()["detail"]


def test_a_422_repeats_only_an_excerpt_of_the_input(guarded) -> None:
    answer = httpx.post(f"{guarded.url}/echo", json={"text": ["x" * 100_000]})
    assert answer.status_code == 422
    assert len(answer.content) < 1000
    assert answer.json()["detail"][0]["loc"] == ["body", "text"]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/scale", b'{"x": NaN}', "NaN is not valid JSON"),
        ("/scale", b'{"x": Infinity}', "Infinity is not valid JSON"),
        ("/scale", b'{"x": -Infinity}', "Infinity is not valid JSON"),
        ("/echo", b'{"text": "\\ud800"}', "lone UTF-16 surrogate"),
        ("/echo", b'{"text": NaN}', "NaN is not valid JSON"),
    ],
)
def test_json_that_cannot_be_answered_is_a_400(guarded, path, body, says) -> None:
    answer = httpx.post(
        f"{guarded.url}{path}", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert says in answer.json()["detail"]


def test_escaped_text_that_is_valid_is_served(guarded) -> None:
    body = b'{"text": "\\ud83d\\ude00 NaN Infinity"}'
    answer = httpx.post(
        f"{guarded.url}/echo", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200
    assert answer.json()["text"] == "\U0001f600 NaN Infinity"


def test_request_ids_are_kept_only_when_short_and_safe(guarded) -> None:
    def answered_id(value: str) -> str:
        response = httpx.post(
            f"{guarded.url}/echo", json={"text": "x"}, headers={"x-request-id": value}
        )
        return response.headers["x-request-id"]

    assert answered_id("req-1.2:3_ok") == "req-1.2:3_ok"
    for unsafe in ["a b", "x" * 65, "forged] level=ERROR", "<script>"]:
        replaced = answered_id(unsafe)
        assert replaced != unsafe
        assert replaced.isalnum()


def test_a_job_flood_is_bounded(guarded) -> None:
    url = guarded.url
    answers = [httpx.post(f"{url}/_chutes/jobs/work", json={"key": "flood"}) for _ in range(10)]
    assert [a.status_code for a in answers].count(202) == 3
    assert [a.status_code for a in answers].count(429) == 7
    assert "runs in flight" in answers[-1].json()["detail"]
    (guarded.marks / "release-flood").touch()
    runs = [a.json()["id"] for a in answers if a.status_code == 202]

    def all_done() -> bool:
        return all(
            httpx.get(f"{url}/_chutes/jobs/runs/{run}").json()["status"] == "succeeded"
            for run in runs
        )

    wait_for(all_done, "the flood's runs to finish")
    assert httpx.post(f"{url}/_chutes/jobs/work", json={"key": "flood"}).status_code == 202


def test_websockets_count_against_concurrency(guarded) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as ws_connect

    ws_url = guarded.url.replace("http://", "ws://") + "/ws"
    with ws_connect(ws_url) as first, ws_connect(ws_url):
        first.send("ping")
        assert first.recv(timeout=5) == "ping"
        assert metric(guarded.url, "chutes_in_flight", cord="ws") == 2
        # Concurrency 2: a third session, and any request, is refused meanwhile.
        with pytest.raises(InvalidStatus), ws_connect(ws_url, open_timeout=5):
            pass
        assert httpx.post(f"{guarded.url}/echo", json={"text": "x"}).status_code == 429
    wait_for(lambda: metric(guarded.url, "chutes_in_flight", cord="ws") == 0, "sessions closed")
    assert httpx.post(f"{guarded.url}/echo", json={"text": "x"}).status_code == 200


def test_serving_beyond_loopback_without_auth_is_refused(run_chute) -> None:
    served = run_chute("guarded:chute", "--host", "0.0.0.0", ready=False)
    assert served.process.wait(30) == 2
    assert "CHUTES_API_KEYS" in served.log
    assert "--no-auth" in served.log


def test_a_slow_body_from_many_threads_never_takes_a_slot(guarded) -> None:
    """While bodies trickle in, chutes_in_flight stays 0: reading is not serving."""
    socks = []

    def trickle() -> None:
        sock = connect(guarded.url)
        socks.append(sock)
        sock.sendall(head("/echo", "Content-Type: application/json", "Content-Length: 50"))
        sock.sendall(b'{"te')

    threads = [threading.Thread(target=trickle) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(0.3)
    assert metric(guarded.url, "chutes_in_flight") == 0
    for sock in socks:
        sock.sendall(b'xt": "late"}' + b" " * 34)
        assert read_status(sock) == 200
        sock.close()


def test_the_schema_declares_what_the_host_may_answer(guarded) -> None:
    schema = httpx.get(f"{guarded.url}/openapi.json").json()
    answers = schema["paths"]["/echo"]["post"]["responses"]
    assert {"200", "400", "413", "422", "429"} <= set(answers)
    assert "401" not in answers  # no authentication configured


def test_which_addresses_count_as_loopback() -> None:
    from chutes_runtime.server import is_loopback

    assert all(is_loopback(h) for h in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "::", "10.0.0.5", "example.com"])
