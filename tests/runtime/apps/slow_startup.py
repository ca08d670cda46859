"""A chute whose startup waits until the test creates CHUTES_TEST_MARKS/go (a model download)."""

import asyncio
import os
from pathlib import Path

from fastapi import WebSocket

from chutes.chute import Chute

MARKS = Path(os.environ["CHUTES_TEST_MARKS"])

chute = Chute(username="test", name="slow-startup")


@chute.on_startup()
async def download_weights(self):
    while not (MARKS / "go").exists():
        await asyncio.sleep(0.01)


@chute.cord(method="GET")
async def hello(self) -> str:
    return "hello"


@chute.websocket("/ws")
async def greet(self, websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()
