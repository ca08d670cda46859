"""Dynamic batching: concurrent requests share one call of a batch function.

The host uses it for cords declared with ``batch=True``; plugins use it
directly (the embeddings plugin for its forward passes). The options are
named as Ray Serve names them, whose meaning is the same: at most
``max_batch_size`` inputs per call, and a batch waits at most
``batch_wait_timeout_s`` to fill.

Inputs from all requests wait in one queue. A batch starts when it is full,
or ``batch_wait_timeout_s`` after its oldest input arrived or after the
previous batch finished, whichever is later: clients answered by one batch
have that long to send their next input and join the next one, so under load
batches stay full instead of splitting in halves. Batches run one at a time:
a sync ``run`` in one worker thread (off the event loop), an async one on the
loop. Inputs whose request was cancelled (the client went away) before their
batch started are dropped, so they cost no compute.

``run`` takes a list of inputs and returns one result per input, in order. A
result that is an exception fails only its own input. If ``run`` raises, then
with ``retry_singly`` each input of the batch is retried alone, so only the
inputs that fail by themselves fail; without it every input gets the error.
``sort_key`` orders a batch (by length, to cut padding); ``group_key`` puts
only inputs with equal keys in one batch (images of one size).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from chutes_core.validation import check_int, check_number

__all__ = ["BatchError", "BatchStats", "Batcher", "list_item"]

log = logging.getLogger("chutes.batching")

In = TypeVar("In")
Out = TypeVar("Out")
Results = list[Any]  # one result per input: an output, or the exception that failed it
RunFn = Callable[[list[Any]], "Sequence[Any] | Awaitable[Sequence[Any]]"]


def list_item(annotation: Any) -> Any:
    """``X`` of ``list[X]`` (or ``Sequence[X]``, ``List[X]``), else ``None``."""
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (list, Sequence, typing.Sequence) and len(args) == 1:
        return args[0]
    return None


class BatchError(Exception):
    """A batch function broke its contract (not one result per input)."""


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


class _Item:
    __slots__ = ("index", "key", "queued_at", "request", "value")

    def __init__(
        self, value: Any, request: _Request, index: int, queued_at: float, key: Hashable
    ) -> None:
        self.value = value
        self.request = request
        self.index = index
        self.queued_at = queued_at
        self.key = key


@dataclass
class BatchStats:
    batches: int = 0
    inputs: int = 0
    dropped: int = 0
    retried: int = 0


class Batcher(Generic[In, Out]):
    """Gathers inputs into batches for ``run``; see the module docstring.

    ``on_batch(size, waits)`` is called for each batch that runs, with the
    seconds each input waited in the queue; ``on_drop(n)`` when ``n`` inputs
    of cancelled requests are dropped. Both are for metrics.
    """

    def __init__(
        self,
        run: Callable[[list[In]], Sequence[Out | BaseException]]
        | Callable[[list[In]], Awaitable[Sequence[Out | BaseException]]],
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        sort_key: Callable[[In], Any] | None = None,
        group_key: Callable[[In], Hashable] | None = None,
        retry_singly: bool = False,
        on_batch: Callable[[int, list[float]], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
        name: str = "batch",
    ) -> None:
        self._run: RunFn = run
        self._is_async = inspect.iscoroutinefunction(run) or inspect.iscoroutinefunction(
            getattr(run, "__call__", None)  # noqa: B004 (callable objects with async __call__)
        )
        self.max_batch_size = check_int("max_batch_size", max_batch_size, low=1, high=1_000_000)
        self.max_wait = check_number("batch_wait_timeout_s", batch_wait_timeout_s, low=0, high=3600)
        self._sort_key = sort_key
        self._group_key = group_key
        self.retry_singly = retry_singly
        self._on_batch = on_batch
        self._on_drop = on_drop
        self.name = name
        self._queue: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._free_at = 0.0  # when the last batch finished
        self.stats = BatchStats()

    def start(self) -> None:
        """Start serving batches on the running event loop."""
        self._arrived = asyncio.Event()
        if not self._is_async:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Stop serving; requests still queued are cancelled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for item in self._queue:
            item.request.future.cancel()
        self._queue.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def enqueue(self, values: Sequence[In]) -> asyncio.Future[Results]:
        """A future of the results for ``values``, in order; a failed input's result is its
        exception. Cancelling the future drops the inputs still queued."""
        if self._task is None or self._arrived is None:
            raise RuntimeError(f"{self.name}: the batcher is not started")
        future: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        request = _Request(future, len(values))
        if not values:
            future.set_result([])
            return future
        now = time.monotonic()
        key = self._group_key
        self._queue.extend(
            _Item(value, request, i, now, key(value) if key is not None else None)
            for i, value in enumerate(values)
        )
        self._arrived.set()
        return future

    async def submit(self, values: Sequence[In]) -> Results:
        """``enqueue``, awaited; cancelling the caller drops the inputs still queued."""
        return await self.enqueue(values)

    async def submit_while_connected(
        self, values: Sequence[In], receive: Callable[[], Awaitable[Mapping[str, Any]]]
    ) -> Results | None:
        """``submit`` for an HTTP request: ``None`` if its client disconnects first.

        ``receive`` is the request's ASGI receive (Starlette's
        ``request.receive``); once it says ``http.disconnect`` the inputs
        still queued leave the queue, and never reach the function.
        """
        work = self.enqueue(values)

        async def cancel_when_gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            work.cancel()

        watcher = asyncio.get_running_loop().create_task(cancel_when_gone())
        try:
            return await work
        except asyncio.CancelledError:
            if watcher.done():  # the client went away; its inputs left the queue
                return None
            raise
        finally:
            watcher.cancel()

    async def _serve(self) -> None:
        while True:
            await self._next_batch_ready()
            batch = self._take()
            if not batch:
                continue
            if self._sort_key is not None:
                key = self._sort_key
                batch.sort(key=lambda item: key(item.value))
            began = time.monotonic()
            if self._on_batch is not None:
                self._on_batch(len(batch), [began - item.queued_at for item in batch])
            results = await self._call_batch([item.value for item in batch])
            self.stats.batches += 1
            self.stats.inputs += len(batch)
            self._free_at = time.monotonic()
            for item, result in zip(batch, results, strict=True):
                item.request.settle(item.index, result)

    async def _call_batch(self, values: list[Any]) -> Results:
        try:
            return await self._call(values)
        except Exception as exc:
            log.exception("%s: a batch of %d failed", self.name, len(values))
            if not self.retry_singly or len(values) == 1:
                return [exc] * len(values)
        self.stats.retried += len(values)
        results: Results = []
        for value in values:  # one at a time: only the inputs that fail alone fail
            try:
                results += await self._call([value])
            except Exception as exc:
                results.append(exc)
        return results

    async def _call(self, values: list[Any]) -> Results:
        if self._is_async:
            results = await self._run(values)  # type: ignore[misc]
        else:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._executor, self._run, values)
        if isinstance(results, (str, bytes)) or not isinstance(results, Sequence):
            raise BatchError(
                f"{self.name}: the batch function returned {type(results).__name__}, "
                f"not a list of {len(values)} results"
            )
        if len(results) != len(values):
            raise BatchError(
                f"{self.name}: the batch function returned {len(results)} results "
                f"for {len(values)} inputs"
            )
        return list(results)

    async def _next_batch_ready(self) -> None:
        assert self._arrived is not None
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

    def _take(self) -> list[_Item]:
        """Up to ``max_batch_size`` live inputs, of one group; the rest stay queued in order."""
        batch: list[_Item] = []
        kept: list[_Item] = []
        dropped = 0
        queue = self._queue
        while queue and len(batch) < self.max_batch_size:
            item = queue.popleft()
            if item.request.future.cancelled():
                dropped += 1
            elif batch and item.key != batch[0].key:
                kept.append(item)
            else:
                batch.append(item)
        queue.extendleft(reversed(kept))
        if dropped:
            self.stats.dropped += dropped
            if self._on_drop is not None:
                self._on_drop(dropped)
        return batch
