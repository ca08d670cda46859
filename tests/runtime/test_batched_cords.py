"""Batched cords over real HTTP: batch sizes, the wait bound, errors per item, disconnects."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from .conftest import APPS, metric, wait_for


async def _post_all(url: str, numbers: list[int]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*(client.post(url, json={"n": n}) for n in numbers))


@pytest.fixture
def served(run_chute, tmp_path):
    return run_chute("batching:chute", env={"CHUTES_TEST_MARKS": str(tmp_path)})


def test_concurrent_clients_get_their_own_answers_in_batches_no_larger_than_the_max(
    served,
) -> None:
    numbers = [n for n in range(40) if n != 13]
    responses = asyncio.run(_post_all(f"{served.url}/double", numbers))
    assert [r.status_code for r in responses] == [200] * len(numbers)
    assert [r.json()["double"] for r in responses] == [2 * n for n in numbers]
    sizes = [len(batch) for batch in httpx.get(f"{served.url}/seen").json()["double"]]
    assert max(sizes) <= 4 and sum(sizes) == len(numbers)
    assert max(sizes) > 1, "concurrent requests were never batched"
    assert all(r.json()["batch"] <= 4 for r in responses)
    # The metrics count the same batches.
    assert metric(served.url, "chutes_batch_size_count", cord="double") == len(sizes)
    assert metric(served.url, "chutes_batch_size_sum", cord="double") == len(numbers)
    assert metric(served.url, "chutes_batch_queue_wait_seconds_count", cord="double") == len(
        numbers
    )


def test_a_lone_request_waits_no_longer_than_the_max_wait(served) -> None:
    began = time.monotonic()
    response = httpx.post(f"{served.url}/lone", json={"n": 4})
    elapsed = time.monotonic() - began
    assert response.json() == {"double": 8, "batch": 1}
    # batch_wait_timeout_s=0.5 with max_batch_size=64: it runs alone after at most 0.5 s.
    assert elapsed < 0.5 + 1.5
    assert metric(served.url, "chutes_batch_queue_wait_seconds_sum", cord="lone") <= 0.5 + 0.1


@pytest.mark.parametrize("cord", ["double", "strict"])
def test_one_bad_item_does_not_fail_its_neighbours(served, cord: str) -> None:
    responses = asyncio.run(_post_all(f"{served.url}/{cord}", [1, 13, 3, 5]))
    assert [r.status_code for r in responses] == [200, 500, 200, 200]
    assert [r.json()["double"] for r in (responses[0], responses[2], responses[3])] == [2, 6, 10]
    detail = responses[1].json()["detail"]
    assert detail.startswith(f"cord {cord!r} failed: ValueError: ") and "13" in detail
    assert responses[1].json()["request_id"] == responses[1].headers["x-request-id"]
    seen = httpx.get(f"{served.url}/seen").json()[cord]
    assert any(len(batch) > 1 and 13 in batch for batch in seen), seen
    if cord == "strict":  # the raising batch was retried one input at a time
        assert [13] in seen and [1] in seen


def test_invalid_input_is_refused_before_the_batch(served) -> None:
    response = httpx.post(f"{served.url}/double", json={"n": "many"})
    assert response.status_code == 422
    assert httpx.get(f"{served.url}/seen").json()["double"] == []


def test_a_disconnected_client_drops_out_before_its_batch_runs(served, tmp_path) -> None:
    def seen_held() -> list[list[int]]:
        return httpx.get(f"{served.url}/seen").json()["held"]

    def held_in_flight() -> float:
        return metric(served.url, "chutes_in_flight", cord="held")

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.ensure_future(client.post(f"{served.url}/held", json={"n": 1}))
            await asyncio.to_thread(wait_for, lambda: seen_held() == [[1]], "the first batch held")
            async with httpx.AsyncClient(timeout=30) as impatient:
                second = asyncio.ensure_future(impatient.post(f"{served.url}/held", json={"n": 2}))
                await asyncio.to_thread(wait_for, lambda: held_in_flight() == 2, "2 queued")
                second.cancel()  # its client leaves while its input waits for a batch
                await asyncio.gather(second, return_exceptions=True)
            await asyncio.to_thread(wait_for, lambda: held_in_flight() == 1, "the host to notice")
            (tmp_path / "release").touch()
            assert (await first).json()["double"] == 2
            assert (await client.post(f"{served.url}/held", json={"n": 3})).json()["double"] == 6

    asyncio.run(scenario())
    wait_for(
        lambda: httpx.get(f"{served.url}/seen").json()["held"] == [[1], [3]],
        "the disconnected input to be dropped",
        timeout=5,
    )


def test_called_from_python_a_batched_cord_sends_each_input_and_returns_a_list(
    served, monkeypatch
) -> None:
    import importlib
    import sys

    from chutes_core.client import CordCallError

    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.setenv("CHUTES_DEV_URL", served.url)
    app = importlib.import_module("batching")
    try:
        items = [app.Item(n=1), app.Item(n=13), app.Item(n=3)]
        results = asyncio.run(app.double(items))
    finally:
        sys.modules.pop("batching", None)
    assert results[0]["double"] == 2 and results[2]["double"] == 6
    assert isinstance(results[1], CordCallError) and results[1].status == 500
    assert max(len(b) for b in httpx.get(f"{served.url}/seen").json()["double"]) > 1
