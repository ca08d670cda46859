"""A chute whose engine never becomes ready: the phase fails, the host exits 1.

A shutdown hook holds the host (state "failed") until CHUTES_TEST_MARKS/release
exists, so a test can read the status before the process ends.
"""

import asyncio
import os
from pathlib import Path

from chutes.chute import Chute
from chutes_core import progress

MARKS = Path(os.environ["CHUTES_TEST_MARKS"])

chute = Chute(username="test", name="warmup-failure")


@chute.on_startup()
async def start_engine(self):
    progress.event(progress.ENGINE_START, "pid 0")
    with progress.phase(progress.ENGINE_READY):
        raise RuntimeError("engine exited with code 3 before it was ready")


@chute.on_shutdown()
async def hold(self):
    for _ in range(3000):
        if (MARKS / "release").exists():
            return
        await asyncio.sleep(0.01)
