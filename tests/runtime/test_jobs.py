"""Cron schedules, in process: the next-due computation is replaced so no test waits a minute.

Jobs triggered over HTTP (retries, timeouts, failures) are tested against a
real server in test_serving.py.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from chutes_core.chute import Chute
from chutes_runtime import jobs
from chutes_runtime.metrics import Metrics
from chutes_testing import ChuteClient


def test_next_due_follows_the_cron_expression() -> None:
    two_am = datetime(2026, 3, 1, 2, 0, tzinfo=timezone.utc)
    assert jobs.next_due("0 2 * * *", two_am - timedelta(seconds=30)) == two_am
    # Strictly after: a job that just ran at 02:00 is next due the day after.
    assert jobs.next_due("0 2 * * *", two_am) == two_am + timedelta(days=1)
    assert jobs.next_due("*/15 * * * *", two_am + timedelta(minutes=1)) == two_am + timedelta(
        minutes=15
    )


async def test_a_schedule_triggers_runs_until_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    chute = Chute(username="test", name="scheduled")
    asked: list[str] = []

    def every_fifty_ms(schedule: str, after: datetime) -> datetime:
        asked.append(schedule)
        return after + timedelta(seconds=0.05)

    monkeypatch.setattr(jobs, "next_due", every_fifty_ms)
    monkeypatch.setattr(jobs, "RETRY_DELAY", 0.0)

    @chute.job(schedule="0 2 * * *", retry_count=1)
    async def nightly(self: Chute) -> str:
        self.state.ticks = getattr(self.state, "ticks", 0) + 1
        if self.state.ticks == 2:
            raise RuntimeError("the second run fails once")
        return f"tick {self.state.ticks}"

    async with ChuteClient(chute) as client:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            runs = (await client.get("/_chutes/jobs")).json()["runs"]
            if sum(run["status"] == "succeeded" for run in runs) >= 3:
                break
            assert asyncio.get_running_loop().time() < deadline, runs
            await asyncio.sleep(0.02)
        runner = client.host.jobs
    assert set(asked) == {"0 2 * * *"}
    finished = [run for run in runs if run["status"] == "succeeded"]
    assert len(finished) >= 3
    assert {run["trigger"] for run in runs} == {"schedule"}
    assert finished[0]["result"] == "tick 1"
    # The failure was retried within its run, and the schedule went on.
    assert finished[1]["attempts"] == 2 and finished[1]["result"] == "tick 3"
    # Shutdown stopped the schedule: nothing of it is left running.
    assert not runner._tasks


async def test_a_running_job_is_cancelled_at_shutdown_and_says_so() -> None:
    chute = Chute(username="test", name="long-job")
    started = asyncio.Event()
    seen: list[str] = []

    @chute.job(timeout=600)
    async def forever(self: Chute) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    @chute.on_shutdown()
    async def after(self: Chute) -> None:
        seen.append("shutdown hook")

    async with ChuteClient(chute) as client:
        triggered = await client.post("/_chutes/jobs/forever", json={})
        assert triggered.status_code == 202, triggered.text
        await asyncio.wait_for(started.wait(), 30)
        run = client.host.jobs.runs[triggered.json()["id"]]
        assert run.status == "running"
    # Shutdown cancelled the run (the job saw it) and the shutdown hooks still ran.
    assert seen == ["cancelled", "shutdown hook"]
    assert (run.status, run.error) == ("failed", "cancelled: the host is shutting down")


async def until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_runs_in_flight_are_capped_and_only_finished_runs_are_forgotten() -> None:
    chute = Chute(username="test", name="jobs-cap")
    gate = asyncio.Event()

    @chute.job()
    async def held(self) -> str:
        await gate.wait()
        return "done"

    @chute.job()
    async def quick(self) -> str:
        return "done"

    runner = jobs.JobRunner(chute, Metrics())
    runner.max_in_flight, runner.keep_runs = 2, 3
    first, second = runner.trigger("held", {}), runner.trigger("held", {})
    with pytest.raises(jobs.JobBusy, match="2 runs in flight"):
        runner.trigger("held", {})
    finished = []
    for _ in range(3):
        finished.append(runner.trigger("quick", {}))
        await until(lambda: finished[-1].status == "succeeded", "the quick run to end")
    # Over the history's size, the oldest *finished* runs went; the held ones stay.
    assert first.id in runner.runs and second.id in runner.runs
    assert [run.id for run in finished if run.id in runner.runs] == [finished[-1].id]
    gate.set()
    await until(lambda: first.status == second.status == "succeeded", "the held runs to end")
    assert runner.trigger("held", {}).status == "queued"  # room again
    await runner.stop()
