"""Dynamic batching: concurrent requests share forward passes.

Inputs from all requests wait in one queue. A batch starts when it is full
(``max_batch_size`` inputs), or ``max_batch_wait_ms`` after its oldest input
arrived or after the previous batch finished, whichever is later: clients
answered by one batch have that long to send their next input and join the
next one, so under load batches stay full instead of splitting in halves. A batch is sorted
by length to cut padding and runs in a single worker thread, off the event
loop. Inputs whose request was cancelled (the client went away) before their
batch started are dropped, so they cost no compute.

The batcher knows nothing of models: ``run`` takes a list of inputs and
returns one result per input, in order, where a result may be an exception
that fails only its own input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("chutes.embeddings")
_metrics: tuple[Any, Any] | None = None


def _batch_metrics() -> tuple[Any, Any]:
    """Batch-size histogram and dropped-input counter, in prometheus' default registry."""
    global _metrics
    if _metrics is None:
        from prometheus_client import Counter, Histogram

        _metrics = (
            Histogram(
                "chutes_embeddings_batch_size",
                "Inputs per forward pass.",
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            ),
            Counter(
                "chutes_embeddings_dropped_inputs",
                "Inputs dropped because their client went away before their batch started.",
            ),
        )
    return _metrics


In = TypeVar("In")
Out = TypeVar("Out")
Results = list[Any]  # one result per input: an output, or the exception that failed it


class _Request:
    """The inputs of one request: done when all of them are."""

    __slots__ = ("future", "remaining", "results")

    def __init__(self, future: asyncio.Future[Results], size: int) -> None:
        self.future = future
        self.results: Results = [None] * size
        self.remaining = size

    def settle(self, index: int, result: Any) -> None:
        if self.future.done():  # cancelled: the client went away
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            self.future.set_result(self.results)


class _Item(Generic[In]):
    __slots__ = ("index", "queued_at", "request", "value")

    def __init__(self, value: In, request: _Request, index: int, queued_at: float) -> None:
        self.value = value
        self.request = request
        self.index = index
        self.queued_at = queued_at


@dataclass
class BatchStats:
    batches: int = 0
    inputs: int = 0
    dropped: int = 0


class Batcher(Generic[In, Out]):
    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out | BaseException]],
        *,
        max_batch_size: int,
        max_batch_wait_ms: float,
        length: Callable[[In], int] = len,  # type: ignore[assignment]
    ) -> None:
        self._run = run
        self._length = length
        self.max_batch_size = max_batch_size
        self.max_wait = max_batch_wait_ms / 1000.0
        self._queue: deque[_Item[In]] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
        self._task: asyncio.Task[None] | None = None
        self._free_at = 0.0  # when the last batch finished
        self.stats = BatchStats()
        self._sizes, self._dropped = _batch_metrics()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for item in self._queue:
            item.request.future.cancel()
        self._executor.shutdown(wait=True)

    def enqueue(self, values: Sequence[In]) -> asyncio.Future[Results]:
        """A future of the results for ``values``, in order; a failed input's result is its
        exception. Cancelling the future drops the inputs still queued."""
        future: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        request = _Request(future, len(values))
        now = time.monotonic()
        self._queue.extend(_Item(value, request, i, now) for i, value in enumerate(values))
        self._arrived.set()
        return future

    async def submit(self, values: Sequence[In]) -> Results:
        """``enqueue``, awaited; cancelling the caller drops the inputs still queued."""
        return await self.enqueue(values)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._next_batch_ready()
            batch = self._take()
            if not batch:
                continue
            batch.sort(key=lambda item: self._length(item.value))
            try:
                results: Sequence[Any] = await loop.run_in_executor(
                    self._executor, self._run, [item.value for item in batch]
                )
            except Exception as exc:
                log.exception("embedding batch of %d failed", len(batch))
                results = [exc] * len(batch)
            else:
                self.stats.batches += 1
                self.stats.inputs += len(batch)
                self._sizes.observe(len(batch))
            self._free_at = time.monotonic()
            for item, result in zip(batch, results, strict=True):
                item.request.settle(item.index, result)

    async def _next_batch_ready(self) -> None:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = max(self._queue[0].queued_at, self._free_at) + self.max_wait
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Item[In]]:
        batch: list[_Item[In]] = []
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue.popleft()
            if item.request.future.cancelled():
                self.stats.dropped += 1
                self._dropped.inc()
                continue
            batch.append(item)
        return batch
