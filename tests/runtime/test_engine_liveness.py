"""A hung engine (SIGSTOP, not dead) turns readiness false, then makes the host exit."""

from __future__ import annotations

import os
import signal
import time

from .conftest import free_port, wait_for


def test_a_hung_engine_turns_readiness_false_then_the_host_exits(run_chute, tmp_path) -> None:
    served = run_chute(
        "hung_engine:chute",
        env={"CHUTES_TEST_MARKS": str(tmp_path), "ENGINE_PORT": str(free_port())},
    )
    engine = int((tmp_path / "engine.pid").read_text())
    assert served.readiness() == 200
    try:
        # A hang the engine recovers from: unready for a while, then ready again.
        os.kill(engine, signal.SIGSTOP)
        began = time.monotonic()
        wait_for(lambda: served.readiness() == 503, "readiness false", timeout=10)
        assert time.monotonic() - began < 5  # unready_after 1 s, probes every 0.2 s
        os.kill(engine, signal.SIGCONT)
        wait_for(lambda: served.readiness() == 200, "ready again", timeout=10)
        # A hang that lasts: past exit_after the host exits non-zero.
        os.kill(engine, signal.SIGSTOP)
        began = time.monotonic()
        assert served.process.wait(30) == 1
        assert time.monotonic() - began < 20
    finally:
        if _alive(engine):
            os.kill(engine, signal.SIGCONT)
    log = served.log
    assert "not ready: standin is not answering its health probe" in log
    assert "ready again" in log
    assert "exiting with code 1: standin has not answered its health probe" in log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
