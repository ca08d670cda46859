"""Cords that take a batch: one batcher per cord, routes that feed it, and metrics.

Each request to a batched cord carries one input, validated by FastAPI as
usual. The route puts it in the cord's :class:`~chutes_core.batching.Batcher`
and waits for its own result: an output is rendered like any cord's return
value; an exception in its slot answers this request alone (an
``HTTPException`` with its status, anything else with a 500 naming the
cause). When the cord function raises for a whole batch, each input is
retried alone, so one bad input does not fail its neighbours. A client that
disconnects while its input is queued leaves the queue (answered 499, though
nobody reads it); one whose batch already runs gets its result discarded.

Metrics, per cord: ``chutes_batch_size`` (inputs per call) and
``chutes_batch_queue_wait_seconds`` (time from arrival to the call).
"""

from __future__ import annotations

import functools
import inspect
import logging
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import Body, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from chutes_core.batching import Batcher
from chutes_runtime import logs

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.cord import Cord

__all__ = ["BatchMetrics", "batch_endpoint", "start_batchers", "stop_batchers"]

log = logging.getLogger("chutes.runtime")

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class _Histogram:
    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.buckets, strict=True):
            running += count
            out.append((bound, running))
        return out


class BatchMetrics:
    """Batch sizes and queue waits of each batched cord of one host (a prometheus collector)."""

    def __init__(self) -> None:
        self.sizes: dict[str, _Histogram] = {}
        self.waits: dict[str, _Histogram] = {}

    def observer(self, cord: str) -> Any:
        sizes = self.sizes.setdefault(cord, _Histogram(SIZE_BUCKETS))
        waits = self.waits.setdefault(cord, _Histogram(WAIT_BUCKETS))

        def observe(size: int, queued: list[float]) -> None:
            sizes.observe(size)
            for seconds in queued:
                waits.observe(seconds)

        return observe

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import HistogramMetricFamily

        size = HistogramMetricFamily(
            "chutes_batch_size", "Inputs per call of a batched cord.", labels=["cord"]
        )
        wait = HistogramMetricFamily(
            "chutes_batch_queue_wait_seconds",
            "Time an input of a batched cord waited for its batch to start.",
            labels=["cord"],
        )
        for name, histogram in sorted(self.sizes.items()):
            size.add_metric([name], histogram.cumulative(), histogram.total)
        for name, histogram in sorted(self.waits.items()):
            wait.add_metric([name], histogram.cumulative(), histogram.total)
        yield from (size, wait)


def start_batchers(chute: Chute, metrics: BatchMetrics) -> dict[str, Batcher[Any, Any]]:
    """A started batcher for each batched cord of ``chute``, by cord name."""
    batchers: dict[str, Batcher[Any, Any]] = {}
    for cord in chute.cords:
        if not cord.batch:
            continue
        if cord.max_batch_size > chute.concurrency:
            log.warning(
                "cord %s batches up to %d inputs, but the chute serves %d request(s) at a time "
                "(concurrency): its batches hold at most %d",
                cord.name,
                cord.max_batch_size,
                chute.concurrency,
                chute.concurrency,
            )
        batcher: Batcher[Any, Any] = Batcher(
            functools.partial(cord.fn, chute),
            max_batch_size=cord.max_batch_size,
            batch_wait_timeout_s=cord.batch_wait_timeout_s,
            retry_singly=True,
            on_batch=metrics.observer(cord.name),
            name=f"cord-{cord.name}",
        )
        batcher.start()
        batchers[cord.name] = batcher
    return batchers


async def stop_batchers(batchers: dict[str, Batcher[Any, Any]]) -> None:
    for batcher in batchers.values():
        await batcher.stop()


def batch_endpoint(cord: Cord, batcher: Batcher[Any, Any], render: Any) -> Any:
    """The FastAPI endpoint of a batched cord: one input in, its own result out."""
    model = cord.input_schema

    async def endpoint(request: Request, item: Any = Body(...)) -> Any:
        results = await batcher.submit_while_connected([item], request.receive)
        if results is None:  # the client went away; its input left the queue
            return Response(status_code=499)
        (result,) = results
        if isinstance(result, HTTPException):
            raise result
        if isinstance(result, BaseException):
            detail = f"cord {cord.name!r} failed: {type(result).__name__}: {result}"
            log.error("%s", detail, exc_info=result)
            return JSONResponse(
                {"detail": detail, "request_id": logs.request_id.get()}, status_code=500
            )
        return render(result, cord.output_content_type)

    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            inspect.Parameter(
                "item", inspect.Parameter.KEYWORD_ONLY, annotation=model, default=Body(...)
            ),
        ]
    )
    endpoint.__name__ = cord.name
    return endpoint
