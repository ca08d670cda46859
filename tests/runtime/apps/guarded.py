"""A chute for the request-path limits: small cords, a held job, a websocket.

Marks (files) in CHUTES_TEST_MARKS release held work, as in ``serving.py``.
"""

import asyncio
import os
from pathlib import Path

from fastapi import WebSocket

from chutes.chute import Chute

MARKS = Path(os.environ.get("CHUTES_TEST_MARKS", "/tmp"))

# GUARDED_LOCKED=1: egress locked, so the namespace mode serves it inside its namespace.
chute = Chute(
    username="test",
    name="guarded",
    concurrency=2,
    allow_external_egress=False if os.environ.get("GUARDED_LOCKED") else None,
)


async def released(key: str) -> None:
    for _ in range(6000):
        if (MARKS / f"release-{key}").exists():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"release-{key} never came")


@chute.cord()
async def echo(self, text: str) -> dict:
    return {"text": text}


@chute.cord()
async def scale(self, x: float) -> dict:
    return {"x": x * 2}


@chute.cord(max_body_bytes=1024)
async def small(self, text: str) -> dict:
    """Takes bodies of at most 1 KiB."""
    return {"length": len(text)}


@chute.job()
async def work(self, key: str = "job") -> dict:
    await released(key)
    return {"done": key}


@chute.websocket("/ws")
async def ws(self, websocket: WebSocket) -> None:
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(text)
