from __future__ import annotations

import socket
import sys
import threading
import time

import pytest
import uvicorn

from .platform_standin import API_KEY, create_app


@pytest.fixture(autouse=True)
def _forget_the_seed_module():
    """Deploying imports tests/seeds/example.py as ``example``; later tests import it afresh."""
    yield
    sys.modules.pop("example", None)


@pytest.fixture(scope="module")
def standin():
    """The platform stand-in, served on loopback for the module."""
    app = create_app()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    app.state.url = f"http://127.0.0.1:{port}"
    yield app
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def config(tmp_path, monkeypatch, standin):
    path = tmp_path / "config.ini"
    path.write_text(
        f"[api]\nbase_url = {standin.state.url}\n\n[auth]\nusername = me\napi_key = {API_KEY}\n"
    )
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(path))
    for name in ("CHUTES_API_URL", "CHUTES_API_KEY", "CHUTES_YES"):
        monkeypatch.delenv(name, raising=False)
    return path
