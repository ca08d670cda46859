"""chute.run_local() and a health check replaced by a startup hook."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx

from .conftest import APPS, free_port


def test_run_local_serves_in_dev_mode_with_the_custom_health_check(tmp_path) -> None:
    port = free_port()
    sick = tmp_path / "sick"
    process = subprocess.Popen(
        [sys.executable, str(APPS / "local_run.py")],
        env={**os.environ, "PORT": str(port), "SICK_FILE": str(sick)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/_chutes/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (
                "run_local did not come up"
            )
            time.sleep(0.1)
        answer = httpx.get(f"{url}/hello").json()  # dev mode: the public GET path
        assert answer["hello"] == "world" and answer["health"]["model_loaded"] is True
        assert httpx.get(f"{url}/_chutes/ready").json()["model_loaded"] is True
        sick.touch()
        unhealthy = httpx.get(f"{url}/_chutes/ready")
        assert unhealthy.status_code == 503 and unhealthy.json()["status"] == "unhealthy"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0


APP = """
import contextlib
import os

from chutes.chute import Chute

chute = Chute(username="test", name="reloading")


@chute.cord(method="GET")
async def hello(self) -> dict:
    return {"hello": "WORD"}


if __name__ == "__main__":
    chute.run_local(host="127.0.0.1", port=int(os.environ["PORT"]), reload=True, log_level="info")
"""


def test_run_local_with_reload_serves_the_edited_code(tmp_path) -> None:
    from .conftest import wait_for

    port = free_port()
    app = tmp_path / "reloading.py"
    app.write_text(APP.replace("WORD", "world"))
    log = tmp_path / "log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(app)],
            cwd=tmp_path,
            env={**os.environ, "PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/hello"

    def says(word: str) -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(url, timeout=5).json() == {"hello": word}
        except (httpx.TransportError, ValueError):
            return False

    try:
        wait_for(lambda: says("world"), "run_local(reload=True) to serve", timeout=60)
        app.write_text(APP.replace("WORD", "planet"))
        wait_for(lambda: says("planet"), "the reloaded code to answer", timeout=60)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
