"""The engine driver's settings, output and probes, with small stand-ins that start fast
(``python -c`` scripts and ``python -m http.server``); the OpenAI stand-in is in test_engine."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from chutes.chute import Chute
from chutes_core import progress
from chutes_core.engines.process import EngineError, OpenAIServerEngine, completion_warmup
from chutes_testing.running import free_port


class RecordingHost:
    """Records what the driver asks of the host."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def set_unready(self, reason: str) -> None:
        self.calls.append(("unready", reason))

    def clear_unready(self, reason: str) -> None:
        self.calls.append(("ready", reason))

    def request_exit(self, code: int, reason: str) -> None:
        self.calls.append(("exit", code))


def proxy_everywhere(monkeypatch) -> None:
    """The engine is on loopback: a proxy in the environment must not be asked for it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


async def eventually(condition, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_settings_are_checked_and_the_defaults_are_the_documented_ones() -> None:
    for bad in (
        {"health_interval": 0},
        {"health_timeout": 0},
        {"unready_after": 3, "exit_after": 2},
    ):
        with pytest.raises(
            ValueError, match="must be positive, and unready_after at most exit_after"
        ):
            OpenAIServerEngine("e", **bad)
    OpenAIServerEngine("e", unready_after=2, exit_after=2)  # equal is fine
    with pytest.raises(ValueError) as refused:
        OpenAIServerEngine("e", api_key="-k")
    assert str(refused.value) == (
        "engine 'e': api_key must be non-empty and must not start with '-' "
        "(the engine's argument parser would read it as a flag)"
    )
    engine = OpenAIServerEngine("e", api_key="k")
    assert engine.base_url == "http://127.0.0.1:10101"
    assert engine.headers == {"authorization": "Bearer k"}
    assert engine.server_flags() == ["--host", "127.0.0.1", "--port", "10101", "--api-key", "k"]
    assert (engine.ready_path, engine.ready_timeout, engine.stop_timeout) == (
        "/v1/models",
        1800,
        30,
    )
    assert (engine.health_interval, engine.health_timeout) == (5, 5)
    assert (engine.unready_after, engine.exit_after) == (20, 120)
    assert engine.process is None and engine.ready is False
    chute = Chute(username="me", name="x")
    assert OpenAIServerEngine.of(chute) is None
    chute.state.engine = "not an engine"
    assert OpenAIServerEngine.of(chute) is None
    assert engine.attach(chute) is engine and OpenAIServerEngine.of(chute) is engine
    assert engine.of(chute) is engine  # a static method: from an instance too


def script(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_an_early_exit_quotes_the_last_ten_lines_even_after_an_overlong_one(
    tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine.early")
    code = (
        "import os, sys\n"
        "print('x' * 200_000, flush=True)\n"  # longer than the pipe reader's line limit
        "sys.stdout.buffer.write(b'bad \\xff byte\\n'); sys.stdout.flush()\n"
        "for i in range(30): print(f'line {i}', flush=True)\n"
        "print('env', os.environ['X_DRIVER'], 'cwd', os.getcwd(), flush=True)\n"
        "sys.exit(3)\n"
    )
    engine = OpenAIServerEngine("early", port=free_port(), stop_timeout=2)
    with pytest.raises(EngineError) as raised:
        await engine.start(None, script(code), env={"X_DRIVER": "given"}, cwd=tmp_path)
    message = str(raised.value)
    assert message.startswith("early exited with code 3 before it was ready; last output:\n  ")
    quoted = message.split("last output:\n  ", 1)[1].split("\n  ")
    assert quoted == [f"line {i}" for i in range(21, 30)] + [f"env given cwd {tmp_path}"]
    assert engine.process is not None and engine.process.returncode == 3
    started = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.early"]
    assert started[0] == f"starting early: {sys.executable} -c {code}"
    # Each line of output is logged with the engine's name, undecodable bytes replaced.
    assert "[early] bad \ufffd byte" in started and "[early] line 29" in started


@pytest.fixture
def site(tmp_path) -> Path:
    """What ``python -m http.server`` serves: a readiness file at /v1/models and /health."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("{}")
    (tmp_path / "health").write_text("ok")
    return tmp_path


def http_server(engine: OpenAIServerEngine, site: Path) -> list[str]:
    return [sys.executable, "-m", "http.server", str(engine.port), "--bind", "127.0.0.1",
            "--directory", str(site)]  # fmt: skip


async def test_a_failed_warm_up_says_so_and_stops_the_engine(site) -> None:
    # http.server answers POST with 501: the warm-up's completion fails.
    engine = OpenAIServerEngine(
        "plain", port=free_port(), stop_timeout=2, warmup=completion_warmup("m")
    )
    with pytest.raises(EngineError, match=r"^plain warm-up failed: HTTP 501 "):
        await engine.start(None, http_server(engine, site))
    assert engine.process is not None and engine.process.returncode is not None
    assert engine.ready is False


async def test_start_reports_its_phases_and_logs_the_warm_up(site, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine.plain")
    proxy_everywhere(monkeypatch)
    warmed: list[str] = []

    async def warmup(engine: OpenAIServerEngine) -> None:
        warmed.append(engine.name)

    engine = OpenAIServerEngine(
        "plain", port=free_port(), stop_timeout=2, warmup=warmup, ready_timeout=20
    )
    tracker = progress.Tracker()
    token = progress.activate(tracker)
    try:
        await engine.start(None, http_server(engine, site))
    finally:
        progress.deactivate(token)
        await engine.stop()
    assert warmed == ["plain"] and engine.process is not None
    reported = [(p.name, p.detail, p.state) for p in tracker.snapshot()]
    assert reported == [
        (progress.ENGINE_START, f"plain, pid {engine.process.pid}", "done"),
        (progress.ENGINE_READY, f"plain on {engine.base_url}", "done"),
        (progress.WARMUP, "plain", "done"),
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.plain"]
    took = [m for line in logged if (m := re.fullmatch(r"plain warmed up in (\d+\.\d)s", line))]
    assert len(took) == 1 and 0 <= float(took[0].group(1)) < 60, logged
    ready = [m for line in logged if (m := re.fullmatch(r"plain ready in (\d+\.\d)s", line))]
    assert len(ready) == 1 and 0 <= float(ready[0].group(1)) < 10, logged
    # Ready within 10 s: no "still waiting" report.
    assert not [line for line in logged if line.startswith("waiting for")], logged


async def test_stop_before_start_does_nothing() -> None:
    engine = OpenAIServerEngine("idle")
    await engine.stop()
    assert engine.process is None and not engine.ready


async def test_a_hang_turns_the_host_unready_then_ready_again_then_makes_it_exit(
    site, caplog, monkeypatch
) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine.plain")
    proxy_everywhere(monkeypatch)  # the probes too go straight to the engine
    engine = OpenAIServerEngine(
        "plain",
        port=free_port(),
        ready_path="/health",
        stop_timeout=2,
        health_interval=0.05,
        health_timeout=0.5,
        unready_after=1.0,
        exit_after=3.0,
    )
    chute = Chute(username="me", name="hang")
    host = RecordingHost()
    chute.runtime = host
    await engine.start(chute, http_server(engine, site))
    assert engine.process is not None
    try:
        assert engine.ready and host.calls == []
        os.kill(engine.process.pid, signal.SIGSTOP)
        await eventually(lambda: host.calls, "the host to be made unready")
        reason = "plain is not answering its health probe (hung or overloaded)"
        assert host.calls == [("unready", reason)]
        os.kill(engine.process.pid, signal.SIGCONT)
        await eventually(lambda: len(host.calls) > 1, "the host to be ready again")
        assert host.calls[1] == ("ready", reason)
        os.kill(engine.process.pid, signal.SIGSTOP)
        await eventually(lambda: ("exit", 1) in host.calls, "the host to be asked to exit")
        exit_reason = host.calls[-2][1]
        assert host.calls[2] == ("unready", reason)
        assert str(exit_reason).startswith("plain has not answered its health probe for ")
        assert engine.ready is False
    finally:
        os.kill(engine.process.pid, signal.SIGCONT)
        await engine.stop()
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.plain"]
    assert f"stopping plain (pid {engine.process.pid})" in logged
    assert logged.count("plain answers its health probe again") == 1, logged


def slow_clock():
    """Readings of the driver's clock while an engine loads for 40 s: 1000 when it starts,
    then per round of the readiness loop ``now`` (every 5 s) and _exited(0.5)'s deadline
    and check; then (stop()) a clock that hardly moves."""
    yield 1000.0
    for second in range(5, 45, 5):
        yield from (1000.0 + second, 1000.0 + second, 1001.0 + second)
    later = 2000.0
    while True:
        yield later
        later += 0.001


async def test_a_slow_engine_is_reported_every_ten_seconds_until_it_is_given_up(
    caplog, monkeypatch
) -> None:
    """40 s of loading pass in a few real milliseconds; nothing listens on the port."""
    from chutes_core.engines import process as driver

    readings = slow_clock()
    clock = type("Clock", (), {"monotonic": staticmethod(lambda: next(readings))})
    monkeypatch.setattr(driver, "time", clock)
    caplog.set_level(logging.INFO, logger="chutes.engine.slow")
    engine = OpenAIServerEngine("slow", port=free_port(), ready_timeout=35, stop_timeout=30)
    with pytest.raises(EngineError, match=r"^slow was not ready after 35s$"):
        await engine.start(None, script("import time; time.sleep(60)"))
    assert engine.process is not None and engine.process.returncode == -signal.SIGTERM
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.slow"]
    # Due 10 s after the start, then 10 s after the last report; met exactly each time.
    assert [line for line in logged if line.startswith("waiting")] == [
        "waiting for slow to be ready (10s so far)",
        "waiting for slow to be ready (20s so far)",
        "waiting for slow to be ready (30s so far)",
    ]


class StopWaitsForTheMonitor(OpenAIServerEngine):
    """Once stop() has seen the engine exit, it lets the exit monitor see it too before
    the monitor is cancelled: without this the two race."""

    monitor_saw_the_exit: asyncio.Event

    async def _exited(self, timeout: float | None) -> int | None:
        code = await super()._exited(timeout)
        if timeout is None:  # the monitor (stop() waits with its stop_timeout)
            self.monitor_saw_the_exit.set()
        elif code is not None:
            await self.monitor_saw_the_exit.wait()
        return code


async def test_a_requested_stop_is_not_reported_as_a_death(site, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine.plain")
    engine = StopWaitsForTheMonitor("plain", port=free_port(), stop_timeout=10, health_interval=60)
    engine.monitor_saw_the_exit = asyncio.Event()
    chute = Chute(username="me", name="stopped")
    host = RecordingHost()
    chute.runtime = host
    await engine.start(chute, http_server(engine, site))
    await engine.stop()
    assert engine.monitor_saw_the_exit.is_set()
    assert host.calls == [] and not engine.ready
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.plain"]
    assert not [line for line in logged if "exited with code" in line], logged
    # It went at SIGTERM, well within stop_timeout: no SIGKILL warning.
    assert not [line for line in logged if "ignored SIGTERM" in line], logged


WARMUP_STANDIN = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"])).decode()
        print(self.path, self.headers["authorization"], body, flush=True)
        self.send_response(400); self.end_headers(); self.wfile.write(b"e" * 600)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


async def test_the_completion_warm_up_asks_for_one_token_and_quotes_a_refusal(
    caplog, monkeypatch
) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine.warm")
    proxy_everywhere(monkeypatch)
    engine = OpenAIServerEngine(
        "warm", port=free_port(), stop_timeout=2, warmup=completion_warmup("m")
    )
    # 400 is the first failure (>= 400); only the first 500 characters are quoted.
    with pytest.raises(EngineError) as raised:
        await engine.start(None, [*script(WARMUP_STANDIN), str(engine.port)])
    assert str(raised.value) == "warm warm-up failed: HTTP 400 " + "e" * 500
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.warm"]
    asked = '{"model":"m","prompt":"Hello","max_tokens":1}'
    assert f"[warm] /v1/completions Bearer {engine.api_key} {asked}" in logged, logged


class SteppingClock:
    """A stand-in for the driver's clock: one second later at each reading, while ticking."""

    def __init__(self, start: float) -> None:
        self.now = start - 1
        self.ticking = True

    def monotonic(self) -> float:
        if self.ticking:
            self.now += 1
        return self.now


async def test_a_failing_probe_counts_its_silence_from_one_interval_before_it_failed(
    site, caplog, monkeypatch
) -> None:
    """The probe reads the clock once a failed round: at 100, 101, ... Silence counts from
    a quarter second (one interval) before the first failure, so it is k + 0.25 at round
    k and meets both limits exactly."""
    from chutes_core.engines import process as driver

    caplog.set_level(logging.INFO, logger="chutes.engine.plain")
    engine = OpenAIServerEngine(
        "plain",
        port=free_port(),
        stop_timeout=2,
        health_interval=0.25,
        unready_after=2.25,
        exit_after=4.25,
    )
    chute = Chute(username="me", name="silent")
    host = RecordingHost()
    unready_at: list[float] = []
    host.set_unready = lambda reason: (  # type: ignore[method-assign]
        unready_at.append(clock.now),
        host.calls.append(("unready", reason)),
    )
    chute.runtime = host
    await engine.start(chute, http_server(engine, site))
    clock = SteppingClock(100.0)
    monkeypatch.setattr(driver, "time", clock)
    engine.ready_path = "/missing"  # answered at once, with 404: every probe fails
    try:
        await eventually(lambda: ("exit", 1) in host.calls, "the host to be asked to exit")
        assert engine.ready is False  # before stop() clears it too
    finally:
        clock.ticking = False
        await engine.stop()
    hung = "plain is not answering its health probe (hung or overloaded)"
    silent = "plain has not answered its health probe for 4s"
    assert host.calls == [("unready", hung), ("unready", silent), ("exit", 1)]
    assert unready_at == [102.0, 104.0]
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.plain"]
    assert silent in logged, logged


async def test_an_early_exit_without_output_quotes_nothing(caplog) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine.mute")
    engine = OpenAIServerEngine("mute", port=free_port(), stop_timeout=2)
    with pytest.raises(EngineError) as raised:
        await engine.start(None, [*script("raise SystemExit(4)"), "--api-key", engine.api_key])
    assert str(raised.value) == "mute exited with code 4 before it was ready"
    # The key is not logged with the command line.
    started = f"starting mute: {sys.executable} -c raise SystemExit(4) --api-key ***"
    assert started in [r.getMessage() for r in caplog.records if r.name == "chutes.engine.mute"]
