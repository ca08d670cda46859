"""Passthrough in process: headers resolved at mount time, one forwarding path, one error shape."""

from __future__ import annotations

import logging
import types

import pytest

from chutes.chute import Chute
from chutes_core import hookimpl
from chutes_core.plugins import PluginManager
from chutes_testing import ChuteClient


def forwarding_chute(*, middleware: bool) -> Chute:
    chute = Chute(username="test", name="forwarding")

    # Port 1: nothing listens there, so every forwarded request fails to connect.
    @chute.cord(passthrough=True, passthrough_port=1, public_api_path="/v1/chat")
    async def chat(self):
        """Forwarded."""

    @chute.cord(passthrough=True, passthrough_port=1, public_api_path="/v1/models", method="GET")
    async def models(self):
        """Forwarded."""

    if middleware:

        class Passing:  # a user middleware: the host must not bypass it
            def __init__(self, app):
                self.app = app

            async def __call__(self, scope, receive, send):
                await self.app(scope, receive, send)

        chute.add_middleware(Passing)
    return chute


def manager(**hooks) -> PluginManager:
    module = types.ModuleType("probe")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return PluginManager(entry_points=False, plugins=[("probe", module)], strict=True)


@pytest.mark.parametrize("middleware", [False, True], ids=["direct", "with-middleware"])
async def test_headers_are_resolved_once_per_cord_at_mount_time(middleware, monkeypatch) -> None:
    asked: list[str] = []

    def passthrough_headers(chute, cord):
        asked.append(cord.name)
        return {"x-probe": "1"}

    calls: list[str] = []
    plugins = manager(passthrough_headers=passthrough_headers)
    original = PluginManager.passthrough

    def counting(self, chute, cord, request):
        calls.append(cord.name)
        original(self, chute, cord, request)

    monkeypatch.setattr(PluginManager, "passthrough", counting)
    async with ChuteClient(forwarding_chute(middleware=middleware), plugins=plugins) as client:
        assert sorted(asked) == ["chat", "models"]  # at startup, before any request
        for _ in range(3):
            assert (await client.post("/v1/chat", json={})).status_code == 502
            assert (await client.get("/v1/models")).status_code == 502
    assert sorted(asked) == ["chat", "models"]
    # No installed plugin implements the per-request hook: it is never called.
    assert calls == []


async def test_a_plugins_per_request_hook_runs_for_every_request() -> None:
    seen: list[str] = []

    def passthrough(cord, request):
        seen.append(request.headers.get("x-probe", "-"))

    plugins = manager(passthrough=passthrough, passthrough_headers=lambda: {"x-probe": "set"})
    async with ChuteClient(forwarding_chute(middleware=False), plugins=plugins) as client:
        for _ in range(3):
            await client.post("/v1/chat", json={})
    # Runs after the mount-time headers are in place.
    assert seen == ["set", "set", "set"]


async def test_failures_have_one_body_shape_with_or_without_middleware() -> None:
    def passthrough(request):
        if request.path == "/v1/chat":
            raise RuntimeError("boom")

    bodies = {}
    for middleware in (False, True):
        plugins = manager(passthrough=passthrough)
        async with ChuteClient(forwarding_chute(middleware=middleware), plugins=plugins) as client:
            failed = await client.post("/v1/chat", json={})
            unreachable = await client.get("/v1/models")
        for answer in (failed, unreachable):
            assert answer.json()["request_id"] == answer.headers["x-request-id"]
        bodies[middleware] = (
            failed.status_code,
            failed.json()["detail"],
            unreachable.status_code,
            unreachable.json()["detail"].split(": ")[0],
        )
    assert bodies[False] == bodies[True]
    assert bodies[False][:3] == (500, "cord 'chat' failed: RuntimeError: boom", 502)
    assert bodies[False][3] == "upstream for cord 'models' on port 1 is not reachable"


async def test_forwarding_failures_are_logged_on_the_passthrough_logger(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="chutes.passthrough")
    async with ChuteClient(forwarding_chute(middleware=False), plugins=manager()) as client:
        assert (await client.get("/v1/models")).status_code == 502
    logged = [r.getMessage() for r in caplog.records if r.name == "chutes.passthrough"]
    assert any(
        m.startswith("passthrough models -> http://127.0.0.1:1/v1/models failed") for m in logged
    )
