"""A plugin that fails on import warns, and the host keeps serving.

Runs in the broken_plugin nox session, where the fixture distribution in
tests/fixtures/broken-plugin is installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chutes_testing.running import free_port

pytestmark = pytest.mark.skipif(
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata as m; m.distribution('chutes-broken-fixture')",
        ],
        capture_output=True,
    ).returncode
    != 0,
    reason="chutes-broken-fixture is not installed (see the broken_plugin nox session)",
)

APP = """
from chutes.chute import Chute
chute = Chute(username="me", name="survivor")

@chute.cord(method="GET")
async def ping(self) -> dict:
    return {"pong": True}
"""


def env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    environ.update(extra)
    return environ


def test_the_host_warns_and_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "survivor.py").write_text(APP)
    port = free_port()
    log = tmp_path / "host.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chutes_cli", "run", "survivor:chute", "--port", str(port)],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(),
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_chutes/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/ping").json() == {"pong": True}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    text = log.read_text()
    assert "plugin 'broken_fixture' disabled" in text
    assert "libcuda.so.1" in text


def test_strict_mode_fails_naming_the_plugin(tmp_path: Path) -> None:
    (tmp_path / "survivor.py").write_text(APP)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chutes_cli",
            "run",
            "survivor:chute",
            "--port",
            str(free_port()),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env(CHUTES_STRICT_PLUGINS="1"),
        timeout=60,
    )
    assert result.returncode != 0
    assert "broken_fixture" in result.stderr and "CHUTES_STRICT_PLUGINS" in result.stderr
