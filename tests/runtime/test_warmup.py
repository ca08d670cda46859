"""The warm-up status over real HTTP: phases, byte progress, liveness meanwhile, failure."""

from __future__ import annotations

import os
import threading
import time

import httpx

from .conftest import wait_for


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def test_status_advances_through_the_phases_of_a_real_download(run_chute, tmp_path) -> None:
    source = tmp_path / "model.safetensors"
    source.write_bytes(os.urandom(1_000_000))  # 16 chunks of 64 KiB
    served = run_chute(
        "warmup_phases:chute",
        ready=False,
        env={"CHUTES_TEST_MARKS": str(tmp_path), "CHUTES_TEST_SOURCE": str(source)},
    )
    warmup = f"{served.url}/_chutes/warmup"
    wait_for(lambda: _get(warmup) is not None, "the warm-up status", timeout=30)

    # The hook is running (held by the mark): status and liveness both answer.
    status = httpx.get(warmup).json()
    assert status["schema"] == "chutes.warmup/v1"
    assert status["state"] == "starting" and status["error"] is None
    assert status["phase"] is None and status["phases"] == []
    assert status["elapsed"] > 0
    assert httpx.get(f"{served.url}/_chutes/live").json()["state"] == "starting"
    assert httpx.get(f"{served.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{served.url}/v2/health/ready").status_code == 503
    assert httpx.get(f"{served.url}/hello").status_code == 503

    seen: list[dict] = []
    (tmp_path / "go").touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snapshot = httpx.get(warmup).json()
        seen.append(snapshot)
        if snapshot["state"] != "starting":
            break
        time.sleep(0.01)
    final = seen[-1]
    assert final["state"] == "ready", final

    downloads = [s["progress"] for s in seen if s["phase"] == "download"]
    done = [p["done"] for p in downloads]
    assert done == sorted(done), "progress went backwards"
    assert any(0 < d < 1_000_000 for d in done), "no progress seen between start and end"
    assert all(p["total"] == 1_000_000 and p["unit"] == "bytes" for p in downloads)
    assert downloads[-1]["files"]["model.safetensors"]["total"] == 1_000_000
    order = [s["phase"] for s in seen if s["phase"]]
    firsts = sorted(set(order), key=order.index)
    assert firsts[0] == "download" and firsts[-1] == "ready", firsts
    assert firsts.index("download") < firsts.index("warmup"), firsts

    by_name = {p["name"]: p for p in final["phases"]}
    assert [p["name"] for p in final["phases"]] == ["download", "engine_start", "warmup", "ready"]
    assert all(p["state"] == "done" for p in final["phases"])
    assert by_name["download"]["progress"]["done"] == 1_000_000
    assert by_name["engine_start"]["detail"] == "pid 0"
    assert (tmp_path / "weights.bin").read_bytes() == source.read_bytes()
    assert httpx.get(f"{served.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{served.url}/hello").text == "hello"
    # In a pipe, the phases are plain log lines.
    log = served.log
    assert "warm-up: download started" in log and "warm-up: download done in" in log
    assert "warm-up: ready" in log


def test_a_failed_phase_shows_in_the_status_and_the_host_exits_1(run_chute, tmp_path) -> None:
    served = run_chute(
        "warmup_failure:chute", ready=False, env={"CHUTES_TEST_MARKS": str(tmp_path)}
    )
    warmup = f"{served.url}/_chutes/warmup"

    def failed() -> bool:
        response = _get(warmup)
        return response is not None and response.json()["state"] == "failed"

    wait_for(failed, "the failed state", timeout=30)
    status = httpx.get(warmup).json()
    assert status["phase"] == "engine_ready"
    assert status["error"] == "RuntimeError: engine exited with code 3 before it was ready"
    phases = {p["name"]: p for p in status["phases"]}
    assert phases["engine_start"]["state"] == "done"
    assert phases["engine_ready"]["state"] == "failed"
    assert phases["engine_ready"]["error"] == status["error"]
    assert httpx.get(f"{served.url}/v2/health/ready").status_code == 503
    threading.Timer(0.1, (tmp_path / "release").touch).start()
    assert served.process.wait(30) == 1
    assert "warm-up: engine_ready failed: RuntimeError: engine exited" in served.log
