"""A chute whose startup hook starts an "engine" (a real child process) and watches it.

When the child exits, the monitor calls ``self.fatal``, as an engine driver
does. The child's pid is written to CHUTES_TEST_MARKS/engine.pid.
"""

import asyncio
import os
import sys
from pathlib import Path

from chutes.chute import Chute

MARKS = Path(os.environ["CHUTES_TEST_MARKS"])

chute = Chute(username="test", name="engine-death")


@chute.on_startup()
async def start_engine(self):
    self.engine = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(600)"
    )
    (MARKS / "engine.pid").write_text(str(self.engine.pid))

    async def monitor():
        code = await self.engine.wait()
        self.fatal(f"engine exited with code {code}")

    self.monitor = asyncio.get_running_loop().create_task(monitor())


@chute.on_shutdown()
async def stop_engine(self):
    if self.engine.returncode is None:
        self.engine.kill()
    (MARKS / "shutdown").write_text("ran")


@chute.cord(method="GET")
async def hello(self) -> str:
    return "hello"
