"""Dynamic batching (chutes_core.batching), with a counting stand-in for a model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from pydantic import BaseModel

from chutes_core.batching import Batcher, BatchError
from chutes_core.chute import Chute
from chutes_core.errors import InvalidValueError


class Recorder:
    """Records each batch it is asked to embed; can be held to keep the worker busy."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # the worker has taken a batch

    def __call__(self, batch: list[list[int]]) -> list[list[float]]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(batch)
        return [[float(len(ids)), float(ids[0])] for ids in batch]


async def until(condition, what: str, timeout: float = 10.0) -> None:
    """Wait on the event loop for ``condition``; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_concurrent_requests_share_batches_and_keep_their_order() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=8, batch_wait_timeout_s=0.05, sort_key=len)
    batcher.start()
    try:
        requests = [[[i] * (1 + i % 5)] for i in range(24)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    finally:
        await batcher.stop()
    for request, result in zip(requests, results, strict=True):
        assert result == [[float(len(request[0])), float(request[0][0])]]
    assert len(recorder.batches) == 3 and all(len(b) == 8 for b in recorder.batches)
    for batch in recorder.batches:
        assert [len(ids) for ids in batch] == sorted(len(ids) for ids in batch)


async def test_a_lone_request_waits_at_most_the_batch_window() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=64, batch_wait_timeout_s=0.02)
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.submit([[7, 7]]), timeout=5)
    finally:
        await batcher.stop()
    assert result[0] == [2.0, 7.0] and len(recorder.batches) == 1


async def test_inputs_of_a_cancelled_request_are_dropped_before_their_batch() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=4, batch_wait_timeout_s=0.001)
    batcher.start()
    try:
        recorder.gate.clear()  # the first batch blocks the worker
        first = asyncio.ensure_future(batcher.submit([[1]]))
        await until(recorder.entered.is_set, "the first batch to be held")
        doomed = asyncio.ensure_future(batcher.submit([[2], [2]]))
        kept = asyncio.ensure_future(batcher.submit([[3]]))
        await asyncio.sleep(0)  # one turn of the loop: both queue their inputs (synchronously)
        doomed.cancel()  # as when its client disconnects
        recorder.gate.set()
        await asyncio.gather(first, kept)
    finally:
        await batcher.stop()
    embedded = [ids[0] for batch in recorder.batches for ids in batch]
    assert embedded == [1, 3]
    assert batcher.stats.dropped == 2


async def test_a_request_whose_client_disconnects_gets_none_and_leaves_the_queue() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=4, batch_wait_timeout_s=0.001)
    batcher.start()
    gone = asyncio.Event()

    async def receive() -> dict[str, str]:  # an ASGI receive: the client leaves on cue
        await gone.wait()
        return {"type": "http.disconnect"}

    async def connected() -> dict[str, str]:  # a client that stays
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    try:
        recorder.gate.clear()  # the first batch blocks the worker
        first = asyncio.ensure_future(batcher.submit([[1]]))
        await until(recorder.entered.is_set, "the first batch to be held")
        leaving = asyncio.ensure_future(batcher.submit_while_connected([[2]], receive))
        staying = asyncio.ensure_future(batcher.submit_while_connected([[3]], connected))
        await asyncio.sleep(0)  # one turn of the loop: both queue their inputs (synchronously)
        gone.set()
        assert await asyncio.wait_for(leaving, 10) is None
        recorder.gate.set()
        await first
        assert await asyncio.wait_for(staying, 10) == [[1.0, 3.0]]
    finally:
        await batcher.stop()
    assert [ids[0] for batch in recorder.batches for ids in batch] == [1, 3]


async def test_a_failing_batch_fails_its_requests_not_the_batcher() -> None:
    calls = []

    def flaky(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return [[0.0, 0.0] for _ in batch]

    batcher = Batcher(flaky, max_batch_size=4, batch_wait_timeout_s=0.001)
    batcher.start()
    try:
        first = await batcher.submit([[1]])
        second = await batcher.submit([[1]])
    finally:
        await batcher.stop()
    assert isinstance(first[0], RuntimeError)
    assert second[0] == [0.0, 0.0]


async def test_a_result_can_fail_only_its_own_input() -> None:
    def picky(batch):
        return [ValueError("odd") if ids[0] % 2 else [0.0] for ids in batch]

    batcher = Batcher(picky, max_batch_size=8, batch_wait_timeout_s=0.001)
    batcher.start()
    try:
        results = await batcher.submit([[1], [2], [3]])
    finally:
        await batcher.stop()
    assert [type(r).__name__ for r in results] == ["ValueError", "list", "ValueError"]


async def test_with_retry_singly_a_raising_batch_fails_only_the_bad_input() -> None:
    calls: list[list[int]] = []

    async def strict(batch: list[int]) -> list[int]:
        calls.append(batch)
        if 13 in batch:
            raise ValueError("unlucky")
        return [n * 2 for n in batch]

    batcher = Batcher(strict, max_batch_size=8, batch_wait_timeout_s=0.05, retry_singly=True)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit([n]) for n in (1, 13, 3)))
    finally:
        await batcher.stop()
    assert results[0] == [2] and results[2] == [6]
    assert isinstance(results[1][0], ValueError)
    assert calls[0] == [1, 13, 3] and sorted(map(tuple, calls[1:])) == [(1,), (3,), (13,)]
    assert batcher.stats.retried == 3


async def test_group_key_keeps_unlike_inputs_apart_and_in_order() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=8, batch_wait_timeout_s=0.05, group_key=len)
    batcher.start()
    try:
        inputs = [[1], [2, 2], [3], [4, 4], [5]]
        await asyncio.gather(*(batcher.submit([i]) for i in inputs))
    finally:
        await batcher.stop()
    assert recorder.batches == [[[1], [3], [5]], [[2, 2], [4, 4]]]


async def test_a_wrong_number_of_results_fails_every_input_with_a_batch_error() -> None:
    batcher = Batcher(lambda batch: batch[:1], max_batch_size=4, batch_wait_timeout_s=0.05)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit([n]) for n in range(3)))
    finally:
        await batcher.stop()
    assert all(isinstance(r[0], BatchError) for r in results)
    assert "1 results for 3 inputs" in str(results[0][0])


async def test_on_batch_reports_sizes_and_queue_waits() -> None:
    seen: list[tuple[int, list[float]]] = []
    batcher = Batcher(
        lambda batch: batch,
        max_batch_size=4,
        batch_wait_timeout_s=0.05,
        on_batch=lambda size, waits: seen.append((size, waits)),
    )
    batcher.start()
    began = time.monotonic()
    try:
        await asyncio.gather(*(batcher.submit([n]) for n in range(6)))
    finally:
        await batcher.stop()
    assert [size for size, _ in seen] == [4, 2]
    assert all(0 <= w <= time.monotonic() - began for _, waits in seen for w in waits)


def test_options_are_checked() -> None:
    with pytest.raises(InvalidValueError, match="max_batch_size"):
        Batcher(lambda b: b, max_batch_size=0, batch_wait_timeout_s=0.01)
    with pytest.raises(InvalidValueError, match="batch_wait_timeout_s"):
        Batcher(lambda b: b, max_batch_size=2, batch_wait_timeout_s=-1)


class Item(BaseModel):
    n: int


def test_a_batched_cord_takes_a_list_of_one_model_and_says_so_in_its_payload() -> None:
    chute = Chute(username="me", name="batched")

    @chute.cord(batch=True, max_batch_size=16, batch_wait_timeout_s=0.02)
    async def double(self, items: list[Item]) -> list[int]:
        return [2 * i.n for i in items]

    @chute.cord()
    async def plain(self, item: Item) -> int:
        return item.n

    assert double.input_schema is Item  # what one request carries
    assert double.to_dict()["batch"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}
    assert "batch" not in plain.to_dict()  # payloads of other cords are unchanged

    with pytest.raises(InvalidValueError, match=r"list\[Model\]"):

        @chute.cord(batch=True)
        async def loose(self, n: int) -> int:
            return n

    with pytest.raises(InvalidValueError, match="False for stream"):

        @chute.cord(batch=True, stream=True)
        async def streamed(self, items: list[Item]):
            yield items

    with pytest.raises(InvalidValueError, match="max_batch_size"):

        @chute.cord(batch=True, max_batch_size=0)
        async def empty(self, items: list[Item]) -> list[int]:
            return []
