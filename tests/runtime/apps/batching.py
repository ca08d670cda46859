"""Batched cords: one that answers per item, one that raises, one held by a mark file."""

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel

from chutes.chute import Chute

MARKS = Path(os.environ.get("CHUTES_TEST_MARKS", "."))

chute = Chute(username="test", name="batching", concurrency=64)
SEEN: dict[str, list[list[int]]] = {"double": [], "strict": [], "lone": [], "held": []}


class Item(BaseModel):
    n: int


class Doubled(BaseModel):
    double: int
    batch: int


@chute.cord(batch=True, max_batch_size=4, batch_wait_timeout_s=0.05)
async def double(self, items: list[Item]) -> list[Doubled]:
    """An Exception in a slot fails only that item."""
    SEEN["double"].append([i.n for i in items])
    await asyncio.sleep(0.05)
    return [
        ValueError(f"{i.n} is unlucky") if i.n == 13 else Doubled(double=2 * i.n, batch=len(items))
        for i in items
    ]


@chute.cord(batch=True, max_batch_size=8, batch_wait_timeout_s=0.1)
def strict(self, items: list[Item]) -> list[Doubled]:
    """Raises for the whole batch when one item is bad (sync: runs in a worker thread)."""
    SEEN["strict"].append([i.n for i in items])
    if any(i.n == 13 for i in items):
        raise ValueError("13 is unlucky")
    return [Doubled(double=2 * i.n, batch=len(items)) for i in items]


@chute.cord(batch=True, max_batch_size=64, batch_wait_timeout_s=0.5)
async def lone(self, items: list[Item]) -> list[Doubled]:
    SEEN["lone"].append([i.n for i in items])
    return [Doubled(double=2 * i.n, batch=len(items)) for i in items]


@chute.cord(batch=True, max_batch_size=4, batch_wait_timeout_s=0.01)
async def held(self, items: list[Item]) -> list[Doubled]:
    """The first batch waits for CHUTES_TEST_MARKS/release."""
    SEEN["held"].append([i.n for i in items])
    while not (MARKS / "release").exists():
        await asyncio.sleep(0.01)
    return [Doubled(double=2 * i.n, batch=len(items)) for i in items]


@chute.cord(method="GET")
async def seen(self) -> dict:
    return SEEN
