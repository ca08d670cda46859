"""The shared clock behind the body deadline and the disconnect watcher, in process."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from chutes_runtime.disconnect import WATCH_AFTER, Replay, Watcher, clock
from chutes_runtime.limits import BodyRefused, read_body


async def _never() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def test_a_body_that_does_not_arrive_is_refused_at_its_deadline() -> None:
    began = time.monotonic()
    with pytest.raises(BodyRefused) as refused:
        await read_body(_never, 10, 100, 0.1)
    took = time.monotonic() - began
    assert refused.value.status == 408
    assert 0.1 <= took < 0.1 + 5 * WATCH_AFTER
    # The task is not left cancelled: it goes on to answer the 408.
    task = asyncio.current_task()
    if sys.version_info >= (3, 11):
        assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)


async def test_a_body_in_time_leaves_nothing_on_the_clock() -> None:
    async def whole() -> dict[str, object]:
        return {"type": "http.request", "body": b"abc", "more_body": False}

    assert await read_body(whole, 3, 100, 0.05) == b"abc"
    assert not clock()._waiting
    await asyncio.sleep(0.1)  # past the deadline: nothing is cancelled later


async def test_cancelling_a_read_from_elsewhere_still_cancels() -> None:
    task = asyncio.ensure_future(read_body(_never, 10, 100, 30))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not clock()._waiting


async def test_the_watcher_cancels_the_request_of_a_client_that_left() -> None:
    left = asyncio.Event()

    async def receive() -> dict[str, object]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def serve() -> bool:
        replay = Replay(b"")
        watcher = Watcher(receive, replay, cancel=True)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return watcher.swallow()
        finally:
            watcher.stop()
        return False

    task = asyncio.ensure_future(serve())
    await asyncio.sleep(3 * WATCH_AFTER)  # the watch has started by now
    left.set()
    assert await asyncio.wait_for(task, 1) is True
