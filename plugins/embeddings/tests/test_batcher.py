"""Dynamic batching, with a counting stand-in for the model forward pass."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from chutes_embeddings.batcher import Batcher


class Recorder:
    """Records each batch it is asked to embed; can be held to keep the worker busy."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: list[list[int]]) -> list[np.ndarray]:
        self.gate.wait(10)
        self.batches.append(batch)
        return [np.array([float(len(ids)), float(ids[0])], dtype=np.float32) for ids in batch]


async def test_concurrent_requests_share_batches_and_keep_their_order() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=8, max_batch_wait_ms=50)
    batcher.start()
    try:
        requests = [[[i] * (1 + i % 5)] for i in range(24)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    finally:
        await batcher.stop()
    for request, result in zip(requests, results, strict=True):
        assert [row.tolist() for row in result] == [[float(len(request[0])), float(request[0][0])]]
    assert len(recorder.batches) == 3 and all(len(b) == 8 for b in recorder.batches)
    for batch in recorder.batches:
        assert [len(ids) for ids in batch] == sorted(len(ids) for ids in batch)


async def test_a_lone_request_waits_at_most_the_batch_window() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=64, max_batch_wait_ms=20)
    batcher.start()
    try:
        result = await asyncio.wait_for(batcher.submit([[7, 7]]), timeout=5)
    finally:
        await batcher.stop()
    assert result[0].tolist() == [2.0, 7.0] and len(recorder.batches) == 1


async def test_inputs_of_a_cancelled_request_are_dropped_before_their_batch() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=4, max_batch_wait_ms=1)
    batcher.start()
    try:
        recorder.gate.clear()  # the first batch blocks the worker
        first = asyncio.ensure_future(batcher.submit([[1]]))
        await asyncio.sleep(0.1)
        doomed = asyncio.ensure_future(batcher.submit([[2], [2]]))
        kept = asyncio.ensure_future(batcher.submit([[3]]))
        await asyncio.sleep(0.05)
        doomed.cancel()  # as when its client disconnects
        recorder.gate.set()
        await asyncio.gather(first, kept)
    finally:
        await batcher.stop()
    embedded = [ids[0] for batch in recorder.batches for ids in batch]
    assert embedded == [1, 3]
    assert batcher.stats.dropped == 2


async def test_a_failing_batch_fails_its_requests_not_the_batcher() -> None:
    calls = []

    def flaky(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return [np.zeros(2, dtype=np.float32) for _ in batch]

    batcher = Batcher(flaky, max_batch_size=4, max_batch_wait_ms=1)
    batcher.start()
    try:
        first = await batcher.submit([[1]])
        second = await batcher.submit([[1]])
    finally:
        await batcher.stop()
    assert isinstance(first[0], RuntimeError)
    assert second[0].shape == (2,)


async def test_a_result_can_fail_only_its_own_input() -> None:
    def picky(batch):
        return [ValueError("odd") if ids[0] % 2 else np.zeros(1, dtype=np.float32) for ids in batch]

    batcher = Batcher(picky, max_batch_size=8, max_batch_wait_ms=1)
    batcher.start()
    try:
        results = await batcher.submit([[1], [2], [3]])
    finally:
        await batcher.stop()
    assert [type(r).__name__ for r in results] == ["ValueError", "ndarray", "ValueError"]
