"""The shared engine driver, against a stand-in OpenAI-compatible server.

The real thing (vLLM on CPU) is exercised by the vLLM plugin's suite; here a
small FastAPI server plays the engine so that failures can be staged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from chutes.chute import Chute
from chutes_core.cord import Cord
from chutes_core.engines.process import EngineError, OpenAIServerEngine, completion_warmup
from chutes_core.plugins import PluginManager
from chutes_testing.running import free_port

STANDIN = str(Path(__file__).with_name("engine_standin.py"))


class RecordingHost:
    """Records what the driver asks of the host."""

    def __init__(self) -> None:
        self.unready: list[str] = []
        self.exits: list[int] = []

    def set_unready(self, reason: str) -> None:
        self.unready.append(reason)

    def request_exit(self, code: int, reason: str) -> None:
        self.exits.append(code)


def engine_and_chute(**kwargs) -> tuple[OpenAIServerEngine, Chute, RecordingHost]:
    engine = OpenAIServerEngine("standin", port=free_port(), stop_timeout=2.0, **kwargs)
    chute = Chute(username="me", name="engine-test")
    host = RecordingHost()
    chute.runtime = host
    return engine, chute, host


def argv(engine: OpenAIServerEngine, *extra: str) -> list[str]:
    return [sys.executable, STANDIN, *engine.server_flags(), *extra]


async def eventually(condition, what: str, timeout: float = 30.0) -> None:
    """Wait for ``condition`` on the event loop; fail naming ``what`` after ``timeout`` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_start_waits_for_readiness_warms_up_and_prefixes_logs(caplog) -> None:
    caplog.set_level(logging.INFO, logger="chutes.engine")
    engine, chute, host = engine_and_chute(warmup=completion_warmup("standin", prompt="warm"))
    await engine.start(chute, argv(engine))
    try:
        assert engine.ready
        assert OpenAIServerEngine.of(chute) is engine
        models = await engine.request("GET", "/v1/models")
        assert models.json()["data"][0]["id"] == "standin"
        await eventually(
            lambda: "[standin] standin: completion for 'warm'" in caplog.text, "the engine's log"
        )
        assert "[standin] standin: loading weights" in caplog.text
        assert engine.api_key not in caplog.text  # redacted from the logged command line
    finally:
        await engine.stop()
    assert host.exits == []  # a requested stop is not a death


async def test_exit_before_ready_fails_at_once_with_the_last_output() -> None:
    engine, chute, _ = engine_and_chute(ready_timeout=120)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(
        EngineError, match=r"exited with code 3 before it was ready(.|\n)*out of memory"
    ):
        await engine.start(chute, argv(engine, "--exit-early"))
    assert loop.time() - began < 30


@pytest.mark.parametrize("child_holds_the_pipe", [False, True])
async def test_death_after_ready_makes_the_host_unready_and_exit(
    tmp_path, child_holds_the_pipe: bool
) -> None:
    # With a child: vLLM's EngineCore outlives a killed API server and keeps its
    # stdout open; asyncio's Process.wait() waits for the pipes too, so it must
    # not be what the driver watches.
    engine, chute, host = engine_and_chute()
    child_file = tmp_path / "child.pid"
    extra = ["--spawn-child", str(child_file)] if child_holds_the_pipe else []
    await engine.start(chute, argv(engine, *extra))
    assert engine.process is not None
    os.kill(engine.process.pid, signal.SIGKILL)
    await eventually(lambda: host.exits, "the driver to report the death")
    assert host.exits == [1]
    assert "standin exited with code -9" in host.unready[0]
    assert engine.ready is False
    if child_holds_the_pipe:
        assert alive(int(child_file.read_text()))  # the pipe really was still held open
    await engine.stop()
    if child_holds_the_pipe:
        child = int(child_file.read_text())
        await eventually(lambda: not alive(child), "the engine's child to be gone after stop()")


async def test_death_after_ready_against_the_real_host() -> None:
    # The runtime's own Host (through the testing kit), not a recording stand-in.
    from chutes_testing import ChuteClient

    engine = OpenAIServerEngine("standin", port=free_port(), stop_timeout=2.0)
    chute = Chute(username="me", name="engine-host")
    engine.attach(chute)

    @chute.on_startup()
    async def start(self) -> None:
        await engine.start(chute, argv(engine))

    @chute.on_shutdown()
    async def stop(self) -> None:
        await engine.stop()

    async with ChuteClient(chute, plugins=PluginManager(entry_points=False)) as client:
        assert (await client.get("/_chutes/ready")).status_code == 200
        assert engine.process is not None
        os.kill(engine.process.pid, signal.SIGKILL)
        await eventually(lambda: client.host.exit_code, "the host to be asked to exit")
        ready = await client.get("/_chutes/ready")
        assert ready.status_code == 503
        assert "standin exited with code -9" in ready.text
        assert client.host.exit_code == 1


async def test_stop_escalates_to_sigkill_and_leaves_no_orphans(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="chutes.engine.standin")
    engine, chute, host = engine_and_chute()
    child_file = tmp_path / "child.pid"
    await engine.start(chute, argv(engine, "--ignore-sigterm", "--spawn-child", str(child_file)))
    child = int(child_file.read_text())
    assert alive(child)
    await engine.stop()
    assert engine.process is not None and engine.process.returncode == -signal.SIGKILL
    await eventually(lambda: not alive(child), "the engine's child to be gone after stop()")
    assert host.exits == []
    warned = [r.getMessage() for r in caplog.records if r.name == "chutes.engine.standin"]
    assert warned == ["standin ignored SIGTERM for 2s; killing it"]


async def test_not_ready_in_time_is_an_error_and_cleans_up() -> None:
    engine, chute, _ = engine_and_chute(ready_timeout=1.0)
    with pytest.raises(EngineError, match=r"^standin was not ready after 1s(; last output|$)"):
        await engine.start(chute, argv(engine, "--slow-start", "30"))
    assert engine.process is not None and engine.process.returncode is not None


def test_passthrough_requests_to_the_engine_carry_its_key() -> None:
    engine, chute, _ = engine_and_chute()
    engine.attach(chute)
    manager = PluginManager(entry_points=False).load()

    def forwarded(self):
        """A passthrough cord."""

    to_engine = Cord(forwarded, passthrough=True, passthrough_port=engine.port)
    assert manager.passthrough_headers(chute, to_engine) == {
        "authorization": f"Bearer {engine.api_key}"
    }
    elsewhere = Cord(forwarded, passthrough=True, passthrough_port=engine.port + 1)
    assert manager.passthrough_headers(chute, elsewhere) == {}


def test_generated_keys_never_look_like_a_flag() -> None:
    # A key that began with "-" made the engine's argparse reject --api-key.
    keys = {OpenAIServerEngine("e").api_key for _ in range(500)}
    assert len(keys) == 500
    assert not any(key.startswith("-") for key in keys)


@pytest.mark.parametrize("key", ["", "-starts-with-a-dash"])
def test_a_given_key_that_argparse_would_misread_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="api_key must be non-empty"):
        OpenAIServerEngine("e", api_key=key)
