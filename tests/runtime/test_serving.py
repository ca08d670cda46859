"""Serving over real HTTP: one `chutes run serving:chute` (concurrency 3) for the module.

Requests and streams that must stay open are held by the chute until the test
creates a release mark, so every assertion follows an event, not a delay.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from .conftest import in_flight, metric, wait_for

CONCURRENCY = 3


@pytest.fixture(scope="module")
def serving(module_chute, tmp_path_factory):
    marks = tmp_path_factory.mktemp("marks")
    served = module_chute(
        "serving:chute",
        "--host",
        "127.0.0.1",
        env={"CHUTES_TEST_MARKS": str(marks), "CHUTES_JOB_RETRY_DELAY": "0.05"},
    )
    served.marks = marks
    return served


def release(served, key: str) -> None:
    (served.marks / f"release-{key}").touch()


def events(lines: list[str]) -> list[dict]:
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ")]


async def test_the_excess_over_concurrency_gets_429_with_retry_after(serving) -> None:
    url = serving.url
    async with httpx.AsyncClient(timeout=30) as client:
        held = [
            asyncio.create_task(client.post(f"{url}/hold", json={"key": "cap"}))
            for _ in range(CONCURRENCY)
        ]
        await asyncio.to_thread(wait_for, lambda: in_flight(url) == CONCURRENCY, "3 in flight")
        refused = await asyncio.gather(
            *[client.post(f"{url}/echo", json={"text": "x"}) for _ in range(4)]
        )
        assert {r.status_code for r in refused} == {429}
        assert refused[0].headers["retry-after"] == "1"
        assert f"{CONCURRENCY} at a time" in refused[0].json()["detail"]
        release(serving, "cap")
        assert [r.status_code for r in await asyncio.gather(*held)] == [200] * CONCURRENCY
    assert metric(url, "chutes_rejected_total", reason="concurrency") >= 4


async def test_no_slot_leaks_after_errors_and_disconnects(serving) -> None:
    url = serving.url
    async with httpx.AsyncClient(timeout=30) as client:
        # Failures of every kind give their slot back...
        for _ in range(CONCURRENCY):
            assert (await client.post(f"{url}/fail")).status_code == 500
            assert (await client.post(f"{url}/count", json={"n": -1})).status_code == 400
            assert (await client.post(f"{url}/echo", json={})).status_code == 422
        # ...so do clients that go away: in the middle of a (paused) stream, at once...
        body = {"n": 50, "hold": "gone"}
        async with client.stream("POST", f"{url}/count", json=body) as stream:
            assert stream.status_code == 200
            async for _ in stream.aiter_lines():
                break
        await asyncio.to_thread(wait_for, lambda: in_flight(url) == 0, "the stream's slot back")
        # ...while an async cord is held: its work is cancelled, counted as 499...
        left_before = metric(url, "chutes_invocations_total", cord="hold", status="499")
        await leave_once_held(url, "hold")
        await asyncio.to_thread(wait_for, lambda: in_flight(url) == 0, "cancelled cords' slots")
        left = metric(url, "chutes_invocations_total", cord="hold", status="499")
        assert left - left_before == CONCURRENCY
        # ...and while a sync cord is held, once it returns (a thread cannot be cancelled).
        await leave_once_held(url, "hold_sync")
        assert in_flight(url) == CONCURRENCY
        release(serving, "gone")
        await asyncio.to_thread(wait_for, lambda: in_flight(url) == 0, "every slot back")
        # All `concurrency` slots can be taken at once again.
        again = [
            asyncio.create_task(client.post(f"{url}/hold", json={"key": "again"}))
            for _ in range(CONCURRENCY)
        ]
        await asyncio.to_thread(wait_for, lambda: in_flight(url) == CONCURRENCY, "3 in flight")
        release(serving, "again")
        assert [r.status_code for r in await asyncio.gather(*again)] == [200] * CONCURRENCY


async def leave_once_held(url: str, cord: str) -> None:
    """Fill every slot with ``cord`` held (key "gone"), then have all its clients leave."""
    async with httpx.AsyncClient(timeout=30) as client:
        held = [
            asyncio.create_task(client.post(f"{url}/{cord}", json={"key": "gone"}))
            for _ in range(CONCURRENCY)
        ]
        await asyncio.to_thread(wait_for, lambda: in_flight(url) == CONCURRENCY, f"{cord} held")
        for request in held:
            request.cancel()
        await asyncio.gather(*held, return_exceptions=True)
    # Closing the client closed its connections: the host sees each client leave.


async def test_streams_are_sse_and_hold_their_slot_until_they_end(serving) -> None:
    url = serving.url
    async with httpx.AsyncClient(timeout=30) as client:
        streams, lines = [], []
        for _ in range(CONCURRENCY):
            stream = await client.send(
                client.build_request("POST", f"{url}/count", json={"n": 3, "hold": "streams"}),
                stream=True,
            )
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            stream_lines = stream.aiter_lines()
            lines.append([await anext(stream_lines)])
            streams.append((stream, stream_lines))
        # Every slot is held by a stream that has started answering.
        assert (await client.post(f"{url}/echo", json={"text": "x"})).status_code == 429
        release(serving, "streams")
        for (stream, stream_lines), seen in zip(streams, lines, strict=True):
            seen.extend([line async for line in stream_lines])
            await stream.aclose()
        assert [events(seen) for seen in lines] == [[{"i": 0}, {"i": 1}, {"i": 2}]] * 3
        assert (await client.post(f"{url}/echo", json={"text": "x"})).status_code == 200


def test_a_stream_failing_before_its_first_event_gets_a_real_status(serving) -> None:
    early = httpx.post(f"{serving.url}/count", json={"n": -1})
    assert early.status_code == 400 and early.json() == {"detail": "n must not be negative"}


def test_sys_exit_in_a_stream_ends_it_with_an_error_event_not_the_host(serving) -> None:
    answer = httpx.post(f"{serving.url}/quit_midway", timeout=30)
    assert answer.status_code == 200
    assert answer.text.startswith('data: {"i":0}\n\n')
    assert 'event: error\ndata: {"detail": "SystemExit: 5"}' in answer.text
    assert httpx.get(f"{serving.url}/_chutes/ready").status_code == 200


def test_websockets(serving) -> None:
    from websockets.sync.client import connect

    with connect(serving.url.replace("http", "ws") + "/ws", open_timeout=10) as socket:
        socket.send("hello")
        assert socket.recv(timeout=10) == "HELLO"
        socket.send("bye")


def finished_run(url: str, started: httpx.Response) -> dict:
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    assert started.headers["location"] == f"/_chutes/jobs/runs/{run_id}"
    deadline = time.monotonic() + 30
    while True:
        run = httpx.get(f"{url}/_chutes/jobs/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed"):
            return run
        assert time.monotonic() < deadline, f"job run {run} did not finish"
        time.sleep(0.02)


def test_jobs_over_http_retry_time_out_and_never_kill_the_host(serving) -> None:
    url = serving.url
    jobs = f"{url}/_chutes/jobs"
    retried = finished_run(url, httpx.post(f"{jobs}/flaky", json={"fail_times": 1, "key": "one"}))
    assert retried["status"] == "succeeded" and retried["attempts"] == 2
    assert retried["result"] == {"attempt": 2} and retried["error"] is None

    doomed = finished_run(url, httpx.post(f"{jobs}/flaky", json={"fail_times": 9, "key": "all"}))
    assert doomed["status"] == "failed" and doomed["attempts"] == 3  # retry_count=2
    assert doomed["error"] == "ValueError: failure 3" and doomed["finished_at"]

    slow = finished_run(url, httpx.post(f"{jobs}/sleepy"))
    assert slow["status"] == "failed" and slow["attempts"] == 1
    assert slow["error"] == "timed out after 1s"

    exited = finished_run(url, httpx.post(f"{jobs}/quits"))
    assert exited["status"] == "failed" and exited["attempts"] == 2
    assert exited["error"] == "JobExit: the job called sys.exit(3)"

    unknown = httpx.post(f"{jobs}/nope")
    assert unknown.status_code == 404 and "jobs: flaky, sleepy, quits" in unknown.json()["detail"]
    wrong = httpx.post(f"{jobs}/flaky", json={"fail_times": 1, "colour": "red"})
    assert wrong.status_code == 422 and "colour" in wrong.json()["detail"]
    assert httpx.post(f"{jobs}/flaky", json=[1]).status_code == 422

    assert httpx.get(f"{url}/_chutes/live").json()["status"] == "alive"
    assert httpx.get(f"{url}/_chutes/ready").status_code == 200
    listing = httpx.get(jobs).json()
    assert {job["name"] for job in listing["jobs"]} == {"flaky", "sleepy", "quits"}
    assert metric(url, "chutes_job_runs_total", job="flaky", outcome="error") >= 3


def test_metrics_by_cord_and_status(serving) -> None:
    url = serving.url
    before = metric(url, "chutes_invocations_total", cord="echo", status="200")
    httpx.post(f"{url}/echo", json={"text": "x"})
    httpx.post(f"{url}/echo", json={"text": "y"})
    httpx.post(f"{url}/echo", json={})
    response = httpx.get(f"{url}/_chutes/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    assert metric(url, "chutes_invocations_total", cord="echo", status="200") == before + 2
    assert metric(url, "chutes_invocations_total", cord="echo", status="422") >= 1
    assert metric(url, "chutes_invocation_duration_seconds_count", cord="echo") >= before + 3
    assert metric(url, "chutes_in_flight", cord="echo") == 0
    assert metric(url, "chutes_ready") == 1


def test_request_ids_are_echoed_or_generated_and_logged(serving) -> None:
    url = serving.url
    given = httpx.post(f"{url}/fail", headers={"x-request-id": "trace-me-42"})
    assert given.status_code == 500 and given.headers["x-request-id"] == "trace-me-42"
    assert given.json()["request_id"] == "trace-me-42"
    made = [httpx.post(f"{url}/fail") for _ in range(2)]
    ids = [response.headers["x-request-id"] for response in made]
    assert all(re.fullmatch(r"[0-9a-f]{16}", id_) for id_ in ids) and ids[0] != ids[1]
    assert [response.json()["request_id"] for response in made] == ids
    wait_for(lambda: f"[{ids[1]}] cord fail failed" in serving.log, "the generated id in the log")
    assert "[trace-me-42] cord fail failed" in serving.log
