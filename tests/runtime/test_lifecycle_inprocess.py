"""Startup and shutdown in process: shutdown failures, and egress decided once."""

from __future__ import annotations

import logging

import pytest

from chutes.chute import Chute
from chutes_core.cord import LifecycleHook
from chutes_core.plugins import PluginManager
from chutes_runtime.hosting import serve
from chutes_runtime.lifecycle import ShutdownError, StartupError, run_hook
from chutes_testing import ChuteClient
from chutes_testing.running import free_port


async def test_a_failing_shutdown_hook_is_a_shutdown_error_named_as_it_is(caplog) -> None:
    chute = Chute(username="test", name="closing")
    ran = []

    @chute.on_shutdown(priority=1)
    def close_startup_cache(self) -> None:
        raise RuntimeError("cache gone")

    @chute.on_shutdown(priority=2)
    def after(self) -> None:
        ran.append("after")

    with caplog.at_level(logging.INFO, logger="chutes.runtime"):
        async with ChuteClient(chute, plugins=PluginManager(entry_points=False)):
            pass
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    # The hook's own name, untouched (a leftover rename once made it close_shutdown_cache).
    name = chute.shutdown_hooks[0].name
    assert "close_startup_cache" in name
    assert errors == [f"shutdown hook {name} failed: RuntimeError: cache gone"]
    assert ran == ["after"]  # the next hook still ran

    host = ChuteClient(chute).host
    hook = chute.shutdown_hooks[0]
    with pytest.raises(
        ShutdownError, match=r"^shutdown hook .*close_startup_cache .*failed: RuntimeError"
    ) as info:
        await run_hook(host, hook, "shutdown")
    assert not isinstance(info.value, StartupError)

    def broken(self) -> None:
        raise RuntimeError("no")

    with pytest.raises(StartupError, match=r"startup hook .* failed: RuntimeError: no"):
        await run_hook(host, LifecycleHook(broken), "startup")


def test_serve_decides_egress_once(monkeypatch) -> None:
    asked = []
    original = PluginManager.egress_decision

    def counting(self, chute):
        asked.append(chute.name)
        return original(self, chute)

    monkeypatch.setattr(PluginManager, "egress_decision", counting)
    chute = Chute(username="test", name="once")

    @chute.on_startup()
    def leave(self) -> None:
        assert self.egress_allowed is True
        self.runtime.request_exit(0, "done")

    assert serve(chute, port=free_port(), log_level="warning") == 0
    assert asked == ["once"]
