"""Prometheus metrics for everything the host serves.

Every number is kept as plain Python state on the event loop (no locks, no
label lookups on the hot path) and turned into Prometheus metric families
only when ``/_chutes/metrics`` is scraped; prometheus-client itself is
imported then, not at startup. Each host has its own metrics, so several
chutes in one process (tests, Ray replicas) never share counters. Plugins
register their own metrics (engine step times and the like) in
prometheus-client's default registry; the endpoint serves both.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from typing import Any

__all__ = ["CONTENT_TYPE_LATEST", "CordStats", "Metrics"]

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class CordStats:
    """What one cord has served: in flight now, answers by status, durations."""

    __slots__ = ("buckets", "count", "in_flight", "statuses", "total")

    def __init__(self) -> None:
        self.in_flight = 0
        self.statuses: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def finished(self, status: int, seconds: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class Metrics:
    def __init__(self) -> None:
        self.cords: dict[str, CordStats] = {}
        self.rejected: Counter[str] = Counter()  # by reason
        self.job_runs: Counter[tuple[str, str]] = Counter()  # by (job, outcome)
        self.ready = False
        #: Egress layers in force (set at the lock).
        self.egress_layers: list[str] = []
        #: More prometheus collectors of this host (batched cords), served beside these.
        self.collectors: list[Any] = []
        self._registry: Any = None

    def cord(self, name: str) -> CordStats:
        """The stats of cord ``name`` (made on first use)."""
        stats = self.cords.get(name)
        if stats is None:
            stats = self.cords[name] = CordStats()
        return stats

    def render(self) -> bytes:
        from prometheus_client import REGISTRY, CollectorRegistry
        from prometheus_client.exposition import generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=True)
            self._registry.register(_Collector(self))
            for collector in self.collectors:
                self._registry.register(collector)
        return generate_latest(self._registry) + generate_latest(REGISTRY)


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        metrics = self.metrics
        invocations = CounterMetricFamily(
            "chutes_invocations",
            "Requests answered, by cord and HTTP status.",
            labels=["cord", "status"],
        )
        in_flight = GaugeMetricFamily(
            "chutes_in_flight", "Requests in progress, by cord.", labels=["cord"]
        )
        duration = HistogramMetricFamily(
            "chutes_invocation_duration_seconds",
            "Time from request start to the end of the response body, by cord.",
            labels=["cord"],
        )
        for name, stats in sorted(metrics.cords.items()):
            for status, count in sorted(stats.statuses.items()):
                invocations.add_metric([name, str(status)], count)
            in_flight.add_metric([name], stats.in_flight)
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], stats.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            duration.add_metric([name], buckets, stats.total)
        rejected = CounterMetricFamily(
            "chutes_rejected",
            "Requests refused before reaching a cord, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(metrics.rejected.items()):
            rejected.add_metric([reason], count)
        job_runs = CounterMetricFamily(
            "chutes_job_runs", "Job attempts, by job and outcome.", labels=["job", "outcome"]
        )
        for (job, outcome), count in sorted(metrics.job_runs.items()):
            job_runs.add_metric([job, outcome], count)
        ready = GaugeMetricFamily("chutes_ready", "1 when the host is ready to serve.")
        ready.add_metric([], 1.0 if metrics.ready else 0.0)
        layers = GaugeMetricFamily(
            "chutes_egress_layer", "1 for each egress layer in force.", labels=["layer"]
        )
        for layer in metrics.egress_layers:
            layers.add_metric([layer], 1.0)
        yield from (invocations, in_flight, duration, rejected, job_runs, ready, layers)
