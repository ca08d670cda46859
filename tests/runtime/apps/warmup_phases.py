"""A chute whose startup "downloads" a real local file, reporting its bytes, then warms up.

The hook waits for CHUTES_TEST_MARKS/go before it starts, so a test can look at
the host while a startup hook runs; each chunk is a little slow, so a poller
sees the progress move.
"""

import asyncio
import os
from pathlib import Path

from chutes.chute import Chute
from chutes_core import progress

MARKS = Path(os.environ["CHUTES_TEST_MARKS"])
SOURCE = Path(os.environ["CHUTES_TEST_SOURCE"])
CHUNK = 64 * 1024

chute = Chute(username="test", name="warmup-phases")


@chute.on_startup()
async def download_weights(self):
    while not (MARKS / "go").exists():
        await asyncio.sleep(0.01)
    total = SOURCE.stat().st_size
    copy = MARKS / "weights.bin"
    with progress.phase(progress.DOWNLOAD, unit="bytes") as download:
        download.file(SOURCE.name, 0, total)
        with SOURCE.open("rb") as source, copy.open("wb") as target:
            done = 0
            while chunk := source.read(CHUNK):
                target.write(chunk)
                done += len(chunk)
                download.file(SOURCE.name, done, total)
                await asyncio.sleep(0.03)
    progress.event(progress.ENGINE_START, "pid 0")
    with progress.phase(progress.WARMUP):
        await asyncio.sleep(0.2)


@chute.cord(method="GET")
async def hello(self) -> str:
    return "hello"
