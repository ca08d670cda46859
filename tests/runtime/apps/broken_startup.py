import os
from pathlib import Path

from chutes.chute import Chute

chute = Chute(username="test", name="broken-startup")


@chute.on_startup(priority=10)
def fine(self):
    pass


@chute.on_startup(priority=20)
async def load_weights(self):
    raise FileNotFoundError("weights.safetensors is missing")


@chute.on_shutdown()
def cleanup(self):
    Path(os.environ["CHUTES_TEST_MARKS"], "cleanup").write_text("ran")
