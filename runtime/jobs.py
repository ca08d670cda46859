"""Running jobs: on demand over HTTP, or on a cron schedule.

Each run is recorded (status, attempts, result or error). A failed attempt is
retried up to the job's ``retry_count``, each attempt bounded by its
``timeout``. A failing job never takes the host down.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.cord import Job
    from chutes_runtime.metrics import Metrics

log = logging.getLogger("chutes.jobs")
#: Runs remembered; past it the oldest *finished* runs are forgotten.
KEEP_RUNS = int(os.environ.get("CHUTES_JOB_HISTORY", "1000"))
#: Runs of one job queued or running at once; more are refused (429 over HTTP).
MAX_IN_FLIGHT = int(os.environ.get("CHUTES_JOB_MAX_IN_FLIGHT", "4"))
RETRY_DELAY = float(os.environ.get("CHUTES_JOB_RETRY_DELAY", "1.0"))


class JobBusy(Exception):
    """The job has as many runs in flight as it may."""


class JobExit(Exception):
    """A job called ``sys.exit()``: that attempt failed; the host goes on."""


@dataclass
class JobRun:
    id: str
    job: str
    trigger: str
    status: str = "queued"  # queued | running | succeeded | failed
    attempts: int = 0
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    result: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "finished_at"):
            if data[key] is not None:
                data[key] = datetime.fromtimestamp(data[key], timezone.utc).isoformat()
        return data


class JobRunner:
    def __init__(self, chute: Chute, metrics: Metrics) -> None:
        self.chute = chute
        self.metrics = metrics
        self.jobs: dict[str, Job] = {job.name: job for job in chute.jobs}
        self.runs: OrderedDict[str, JobRun] = OrderedDict()
        self.in_flight: dict[str, int] = dict.fromkeys(self.jobs, 0)
        self.max_in_flight = MAX_IN_FLIGHT
        self.keep_runs = KEEP_RUNS
        self._tasks: set[asyncio.Task[Any]] = set()

    def start_schedules(self) -> None:
        for job in self.jobs.values():
            if job.schedule:
                self._spawn(self._schedule_loop(job))
                log.info("job %s scheduled (%s)", job.name, job.schedule)

    def trigger(self, name: str, kwargs: dict[str, Any], trigger: str = "http") -> JobRun:
        """Start a run; raises :class:`JobBusy` when the job has too many in flight."""
        job = self.jobs[name]
        if self.in_flight[name] >= self.max_in_flight:
            raise JobBusy(f"job {name!r} has {self.max_in_flight} runs in flight already")
        run = JobRun(id=os.urandom(8).hex(), job=name, trigger=trigger)
        self.runs[run.id] = run
        self._forget_finished()
        self.in_flight[name] += 1
        self._spawn(self._execute(job, run, kwargs))
        return run

    def _forget_finished(self) -> None:
        """Keep the history within ``keep_runs``, forgetting the oldest finished runs only."""
        excess = len(self.runs) - self.keep_runs
        if excess <= 0:
            return
        for run_id in [r.id for r in self.runs.values() if r.finished_at is not None][:excess]:
            del self.runs[run_id]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, job: Job, run: JobRun, kwargs: dict[str, Any]) -> None:
        try:
            await self._attempts(job, run, kwargs)
        finally:
            self.in_flight[job.name] -= 1
            if run.finished_at is None:
                run.finished_at = time.time()

    async def _attempts(self, job: Job, run: JobRun, kwargs: dict[str, Any]) -> None:
        run.status = "running"
        for attempt in range(1, job.retry_count + 2):
            run.attempts = attempt
            try:
                run.result = await asyncio.wait_for(self._call(job, kwargs), timeout=job.timeout)
            except asyncio.CancelledError:
                run.status, run.error = "failed", "cancelled: the host is shutting down"
                raise
            except Exception as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    run.error = f"timed out after {job.timeout}s"
                else:
                    run.error = f"{type(exc).__name__}: {exc}"
                self.metrics.job_runs[(job.name, "error")] += 1
                log.warning(
                    "job %s run %s attempt %d failed: %s", job.name, run.id, attempt, run.error
                )
                if attempt <= job.retry_count:
                    await asyncio.sleep(RETRY_DELAY)
                continue
            run.status, run.error = "succeeded", None
            self.metrics.job_runs[(job.name, "success")] += 1
            break
        else:
            run.status = "failed"
            log.error(
                "job %s run %s failed after %d attempts: %s",
                job.name,
                run.id,
                run.attempts,
                run.error,
            )
        run.finished_at = time.time()

    async def _call(self, job: Job, kwargs: dict[str, Any]) -> Any:
        try:
            if inspect.iscoroutinefunction(job.fn):
                return await job.fn(self.chute, **kwargs)
            return await run_in_threadpool(job.fn, self.chute, **kwargs)
        except SystemExit as exc:
            # Left alone, it would stop the event loop, and the host with it.
            raise JobExit(f"the job called sys.exit({exc.code!r})") from None

    async def _schedule_loop(self, job: Job) -> None:
        assert job.schedule is not None
        due = next_due(job.schedule, datetime.now(timezone.utc))
        while True:
            await asyncio.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
            try:
                self.trigger(job.name, {}, trigger="schedule")
            except JobBusy as exc:
                log.warning("scheduled run skipped: %s", exc)
            # From the due time, not the clock alone: a wake-up a little early
            # (the wall clock is slewed) must not run the same slot twice.
            due = next_due(job.schedule, max(due, datetime.now(timezone.utc)))


def next_due(schedule: str, after: datetime) -> datetime:
    """When a job on the cron ``schedule`` is next due, strictly after ``after``."""
    from cronsim import CronSim

    return next(CronSim(schedule, after))
