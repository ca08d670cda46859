"""A client leaving an SGLang chat request is told to the engine: ``POST /abort_request``.

SGLang cannot run on CPU, so a stand-in plays it: an HTTP server on loopback
that, like SGLang's chat endpoint, takes ``X-Override-Rid`` as the request's
id, holds the request without answering (a queued generation), and records
each ``/abort_request`` call. The host is real (uvicorn in a thread, the
installed plugins found by their entry points); the client is httpx, leaving
by its read timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import uvicorn

from chutes.chute import Chute
from chutes_runtime.hosting import build_app
from chutes_testing.running import free_port


class SGLangStandIn:
    """Not SGLang: records chat requests' rids and abort calls; never answers a chat."""

    def __init__(self) -> None:
        self.chats: list[str | None] = []
        self.aborts: list[tuple[dict[str, object], str | None]] = []
        self.release = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/abort_request":
                    stand_in.aborts.append((json.loads(body), self.headers.get("authorization")))
                    self.send_response(200)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                stand_in.chats.append(self.headers.get("x-override-rid"))
                stand_in.release.wait(30)  # a generation that never finishes in time

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, what: str, condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)


@pytest.fixture
def stand_in() -> Iterator[SGLangStandIn]:
    server = SGLangStandIn()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def host(stand_in) -> Iterator[callable]:
    """Serve a chute (SGLang's template, or none) whose chat cord goes to the stand-in."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def serve(template: str | None) -> str:
        chute = Chute(username="test", name="sg", standard_template=template)

        @chute.cord(
            passthrough=True,
            passthrough_port=stand_in.port,
            public_api_path="/v1/chat/completions",
        )
        async def chat(self):
            """Forwarded to the SGLang stand-in."""

        port = free_port()
        config = uvicorn.Config(
            build_app(chute), host="127.0.0.1", port=port, log_config=None, lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        stand_in.wait_for("uvicorn to start", lambda: server.started, timeout=15)
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, thread in running:
        server.should_exit = True
        thread.join(15)


def leave_mid_request(url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-override-rid": "the-callers-own"},
            timeout=0.5,
        )


def test_a_client_leaving_an_sglang_chat_aborts_it_by_rid(stand_in, host) -> None:
    url = host("sglang")
    leave_mid_request(url)
    stand_in.wait_for("the chat and its abort", lambda: stand_in.chats and stand_in.aborts)
    [rid] = stand_in.chats
    # The host named the request (a caller's rid could abort someone else's work).
    assert rid is not None and rid.startswith("chutes-") and rid != "the-callers-own"
    assert [body for body, _ in stand_in.aborts] == [{"rid": rid}]
    metrics = httpx.get(f"{url}/_chutes/metrics").text
    assert 'chutes_invocations_total{cord="chat",status="499"} 1.0' in metrics


def test_other_chutes_are_left_alone(stand_in, host) -> None:
    url = host(None)
    leave_mid_request(url)
    stand_in.wait_for("the chat request", lambda: stand_in.chats)
    metrics = lambda: httpx.get(f"{url}/_chutes/metrics").text  # noqa: E731
    stand_in.wait_for("the 499", lambda: 'status="499"} 1.0' in metrics())
    assert stand_in.chats == ["the-callers-own"]  # passed through untouched
    assert stand_in.aborts == []
