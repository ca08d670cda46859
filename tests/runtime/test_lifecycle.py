"""`chutes run` from reference to exit, over real HTTP: references, startup, modes, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from .conftest import APPS, wait_for


def run_cli(*args: str, cwd=APPS, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    return subprocess.run(
        [sys.executable, "-m", "chutes_cli", "run", *args, "--port", "1"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("missing.py:chute", "chutes run: file 'missing.py' does not exist"),
        ("no_such_module:chute", "chutes run: no module named 'no_such_module'"),
        ("pkg.sub.nope:chute", "chutes run: no module named 'pkg.sub.nope'"),
        (
            "serving:nope",
            "chutes run: module 'serving' has no attribute 'nope' (chutes it defines: chute)",
        ),
        (
            "not_a_chute:chute",
            "chutes run: 'not_a_chute:chute' is a dict, not a Chute or a template result",
        ),
        ("syntax_error.py:chute", "chutes run: syntax error in "),
        ("syntax_error:chute", "chutes run: syntax error in "),
        (
            "needs_missing:chute",
            "chutes run: importing 'needs_missing' failed: "
            "No module named 'chutes_no_such_dependency'",
        ),
    ],
)
def test_a_bad_reference_exits_with_one_clear_line(ref: str, message: str) -> None:
    result = run_cli(ref)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message), lines[0]
    if "syntax" in message:
        assert lines[0].endswith("syntax_error.py line 3: '(' was never closed")


def test_file_and_dotted_references_and_template_results(run_chute) -> None:
    by_file = run_chute(str(APPS / "serving.py") + ":chute", "--host", "127.0.0.1", cwd=APPS.parent)
    assert httpx.post(f"{by_file.url}/echo", json={"text": "a"}).json() == {"text": "a"}
    packed = run_chute("pkg.sub.packed:pack", "--dev")  # a ChutePack, unwrapped
    assert httpx.get(f"{packed.url}/hello").text == "hello from a pack"
    assert "chute test/packed on http://127.0.0.1:" in packed.log


def test_production_serves_internal_paths_too_and_dev_only_public_ones(run_chute) -> None:
    prod = run_chute("pkg.sub.packed:pack")
    dev = run_chute("pkg.sub.packed:pack", "--dev")
    for served in (prod, dev):
        assert httpx.get(f"{served.url}/hello").text == "hello from a pack"
        assert httpx.get(f"{served.url}/public/name").text == "renamed"
    # Production also answers POST at each cord's internal path...
    assert httpx.post(f"{prod.url}/hello", json={}).text == "hello from a pack"
    assert httpx.post(f"{prod.url}/internal_name", json={}).text == "renamed"
    # ...dev mode does not.
    assert httpx.post(f"{dev.url}/hello", json={}).status_code == 405
    assert httpx.post(f"{dev.url}/internal_name", json={}).status_code == 404
    assert "(production mode)" in prod.log and "(dev mode)" in dev.log


def test_startup_is_logged_step_by_step_and_only_liveness_answers_meanwhile(
    run_chute, tmp_path
) -> None:
    served = run_chute("slow_startup:chute", ready=False, env={"CHUTES_TEST_MARKS": str(tmp_path)})

    def live() -> bool:
        try:
            return httpx.get(f"{served.url}/_chutes/live").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(live, "liveness while the startup hook runs")
    assert httpx.get(f"{served.url}/_chutes/live").json() == {
        "status": "alive",
        "state": "starting",
    }
    ready = httpx.get(f"{served.url}/_chutes/ready")
    assert ready.status_code == 503 and ready.json()["state"] == "starting"
    early = httpx.get(f"{served.url}/hello")
    assert early.status_code == 503 and early.headers["retry-after"] == "5"
    assert early.json() == {"detail": "not ready: starting"}

    (tmp_path / "go").touch()
    served.wait_ready()
    assert httpx.get(f"{served.url}/hello").text == "hello"
    log = served.log
    steps = [
        "step 1/7: discovering plugins",
        "step 2/7: resolving the egress policy",
        "step 3/7: running 1 startup hook(s)",
        "startup hook chute: slow_startup.download_weights",
        "step 4/7: collecting declared cords",
        "step 5/7: mounting routes",
        "step 6/7: egress stays open",
        "step 7/7: ready in ",
    ]
    positions = [log.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), log
    assert f"serving on {served.url}" in log


def test_a_startup_failure_names_the_hook_runs_shutdown_hooks_and_exits_1(
    run_chute, tmp_path
) -> None:
    served = run_chute(
        "broken_startup:chute", ready=False, env={"CHUTES_TEST_MARKS": str(tmp_path)}
    )
    assert served.process.wait(30) == 1
    log = served.log
    assert (
        "startup failed: startup hook chute: broken_startup.load_weights "
        f"({APPS / 'broken_startup.py'}:14) failed: "
        "FileNotFoundError: weights.safetensors is missing"
    ) in log
    assert (tmp_path / "cleanup").read_text() == "ran"
    assert "step 3/7" in log and "step 4/7" not in log


def test_sigterm_drains_in_flight_streams_then_runs_shutdown_hooks_and_exits_0(
    run_chute, tmp_path
) -> None:
    served = run_chute(
        "serving:chute", env={"CHUTES_TEST_MARKS": str(tmp_path), "TEST_CONCURRENCY": "8"}
    )

    def refused() -> bool:
        try:
            httpx.get(f"{served.url}/_chutes/live", timeout=2)
        except httpx.ConnectError:
            return True
        except (httpx.ReadError, httpx.RemoteProtocolError):
            # Connected in the moment between the signal and the listener closing: the
            # kernel resets what was still queued. Not refused yet; ask again.
            return False
        return False

    async def drain() -> list[list[int]]:
        async with httpx.AsyncClient(timeout=30) as client:
            first_events = [asyncio.Event() for _ in range(4)]

            async def one(started: asyncio.Event) -> list[int]:
                got = []
                body = {"n": 10, "delay": 0.02, "hold": "drain"}
                async with client.stream("POST", f"{served.url}/count", json=body) as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            got.append(json.loads(line[6:])["i"])
                            started.set()
                return got

            streams = [asyncio.create_task(one(started)) for started in first_events]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_events)), 15)
            served.process.send_signal(signal.SIGTERM)
            # New connections are refused at once; the streams carry on.
            await asyncio.to_thread(wait_for, refused, "the host to stop accepting")
            assert not any(stream.done() for stream in streams)
            (tmp_path / "release-drain").touch()
            return await asyncio.gather(*streams)

    assert asyncio.run(drain()) == [list(range(10))] * 4
    assert served.process.wait(30) == 0
    assert (tmp_path / "shutdown").read_text() == "ran"
    log = served.log
    assert "received SIGTERM: draining in-flight requests" in log
    assert log.index("draining") < log.index("shutdown hook chute: serving.mark_shutdown")


def test_streams_past_the_grace_period_are_cut_and_shutdown_still_completes(
    run_chute, tmp_path
) -> None:
    served = run_chute(
        "serving:chute", env={"CHUTES_TEST_MARKS": str(tmp_path), "CHUTES_GRACE_SECONDS": "1"}
    )
    got = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", f"{served.url}/count", json={"n": 5, "hold": "never"}, timeout=30
        ) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data: "):
                got.append(line)
                served.process.send_signal(signal.SIGTERM)
    assert len(got) == 1
    assert served.process.wait(30) == 0
    assert (tmp_path / "shutdown").read_text() == "ran"
    assert "timeout graceful shutdown exceeded" in served.log


def test_engine_death_turns_readiness_false_and_exits_non_zero(run_chute, tmp_path) -> None:
    served = run_chute("engine_death:chute", env={"CHUTES_TEST_MARKS": str(tmp_path)})
    engine = int((tmp_path / "engine.pid").read_text())
    assert served.readiness() == 200
    os.kill(engine, signal.SIGKILL)
    statuses = []
    while served.process.poll() is None and len(statuses) < 3000:
        statuses.append(served.readiness())
    assert served.process.wait(30) == 1
    # Unready from the moment the engine died (503 while the host stops, then nothing).
    first_unready = next(i for i, status in enumerate(statuses) if status != 200)
    assert set(statuses[first_unready:]) <= {503, None}, statuses
    log = served.log
    assert "not ready: engine exited with code -9" in log
    assert "exiting with code 1: engine exited with code -9" in log
    assert (tmp_path / "shutdown").read_text() == "ran"
