"""A chute serving the stand-in engine with the core's engine driver, probed often.

The engine's pid goes to CHUTES_TEST_MARKS/engine.pid, so a test can SIGSTOP it.
"""

import os
import sys
from pathlib import Path

from chutes.chute import Chute
from chutes_core.engines.process import OpenAIServerEngine

MARKS = Path(os.environ["CHUTES_TEST_MARKS"])
PORT = int(os.environ["ENGINE_PORT"])

chute = Chute(username="test", name="hung-engine")
engine = OpenAIServerEngine(
    "standin",
    port=PORT,
    stop_timeout=2,
    health_interval=0.2,
    health_timeout=0.5,
    unready_after=1.0,
    exit_after=float(os.environ.get("ENGINE_EXIT_AFTER", "8")),
).attach(chute)


@chute.on_startup()
async def start_engine(self):
    argv = [sys.executable, "-m", "chutes_testing.openai_standin", "--model", "m"]
    await engine.start(self, [*argv, "--port", str(PORT), "--api-key", engine.api_key])
    (MARKS / "engine.pid").write_text(str(engine.process.pid))


@chute.on_shutdown()
async def stop_engine(self):
    await engine.stop()


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/models", method="GET")
async def models(self):
    """Forwarded."""
