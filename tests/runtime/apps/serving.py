"""A chute exercising the serving features, for tests over real HTTP.

Marks (files) in CHUTES_TEST_MARKS let a test hold a request or a stream
until it creates ``release-<key>``, so tests depend on events, not on timing.
"""

import asyncio
import os
import sys
from pathlib import Path

from fastapi import HTTPException, WebSocket

from chutes.chute import Chute

MARKS = Path(os.environ.get("CHUTES_TEST_MARKS", "/tmp"))

chute = Chute(
    username="test", name="serving", concurrency=int(os.environ.get("TEST_CONCURRENCY", "3"))
)


async def released(key: str) -> None:
    """Wait (at most a minute) until the test creates ``release-<key>``."""
    for _ in range(6000):
        if (MARKS / f"release-{key}").exists():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"release-{key} never came")


@chute.on_shutdown()
async def mark_shutdown(self):
    (MARKS / "shutdown").write_text("ran")


@chute.cord()
async def echo(self, text: str) -> dict:
    return {"text": text}


@chute.cord()
async def hold(self, key: str) -> dict:
    """Answer once the test releases ``key``."""
    await released(key)
    return {"released": key}


@chute.cord()
def hold_sync(self, key: str) -> dict:
    """``hold`` in a thread (a sync cord): it cannot be cancelled."""
    import time

    for _ in range(6000):
        if (MARKS / f"release-{key}").exists():
            return {"released": key}
        time.sleep(0.01)
    raise TimeoutError(f"release-{key} never came")


@chute.cord()
async def fail(self) -> dict:
    raise RuntimeError("boom")


@chute.cord(stream=True)
async def count(self, n: int, delay: float = 0.0, hold: str | None = None):
    """Stream ``n`` events; with ``hold``, pause after the first until the test releases it."""
    if n < 0:
        raise HTTPException(status_code=400, detail="n must not be negative")
    for i in range(n):
        yield {"i": i}
        if i == 0 and hold:
            await released(hold)
        await asyncio.sleep(delay)


@chute.cord(stream=True)
async def quit_midway(self):
    yield {"i": 0}
    sys.exit(5)


@chute.websocket("/ws")
async def shout(self, websocket: WebSocket):
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            await websocket.close()
            return
        await websocket.send_text(text.upper())


@chute.job(retry_count=2, timeout=2)
async def flaky(self, fail_times: int = 0, key: str = "flaky"):
    marker = MARKS / key
    seen = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(seen + 1))
    if seen < fail_times:
        raise ValueError(f"failure {seen + 1}")
    return {"attempt": seen + 1}


@chute.job(retry_count=0, timeout=1)
async def sleepy(self):
    await asyncio.sleep(30)


@chute.job(retry_count=1)
def quits(self):
    sys.exit(3)
