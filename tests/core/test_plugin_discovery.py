"""Discovery through real entry points (a distribution installed on sys.path for the test),
the environment switches, and what every failure and trace line says."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
import types

import pytest
from stevedore import ExtensionManager

from chutes.chute import Chute
from chutes_core import hookimpl
from chutes_core.cord import Cord
from chutes_core.errors import PluginError
from chutes_core.passthrough import UpstreamRequest
from chutes_core.plugins import PluginFailure, PluginInfo, PluginManager

SWITCHES = (
    "CHUTES_PLUGINS",
    "CHUTES_DISABLE_PLUGINS",
    "CHUTES_STRICT_PLUGINS",
    "CHUTES_TRACE_HOOKS",
)

FAKE = """
from chutes_core import hookimpl

@hookimpl
def passthrough_headers(chute, cord):
    return {"x-fake": "1"}
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The distribution chutes-fake 1.2, declaring the plugins "fake" and "broken"."""
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    info = tmp_path / "chutes_fake-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chutes-fake\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(
        "[chutes.plugins]\nfake = fake_plugin\nbroken = broken_plugin\n"
    )
    (tmp_path / "fake_plugin.py").write_text(FAKE)
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('no such engine')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # stevedore keeps each namespace's entry points for the life of the process: a
    # manager made earlier in this process would hide the distribution added here.
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {})
    monkeypatch.delitem(sys.modules, "fake_plugin", raising=False)
    monkeypatch.delitem(sys.modules, "broken_plugin", raising=False)
    return tmp_path


def forwarded_cord() -> Cord:
    def forwarded(self):
        """A passthrough cord."""

    return Cord(forwarded, passthrough=True, passthrough_port=1)


def ours(names: list[str]) -> list[str]:
    return [name for name in names if name in ("fake", "broken", "ghost")]


def test_entry_points_are_discovered_with_their_distribution(installed) -> None:
    pm = PluginManager(only=["fake", "broken"], strict=False).load()
    assert pm.names == ["fake"]
    (info,) = pm.info()
    assert info == PluginInfo(
        name="fake",
        target="fake_plugin",
        distribution="chutes-fake",
        version="1.2",
        hooks=["passthrough_headers"],
        templates=[],
        kernels=[],
    )
    assert pm.failures == [
        PluginFailure(
            "broken",
            "broken_plugin",
            "failed to import: ImportError: no such engine",
            "chutes-fake",
        )
    ]
    cord = forwarded_cord()
    assert pm.passthrough_headers(Chute(username="me", name="x"), cord)["x-fake"] == "1"


def test_by_default_every_installed_plugin_is_loaded_but_disabled_ones_never_imported(
    installed,
) -> None:
    pm = PluginManager(disabled=["broken"]).load()
    assert "fake" in pm.names and "broken" not in pm.names
    assert ours(pm.skipped) == ["broken"] and "broken_plugin" not in sys.modules
    assert not [failure for failure in pm.failures if failure.name in ("fake", "broken")]


def test_names_asked_for_but_not_installed_are_failures_once_each(installed) -> None:
    pm = PluginManager(only=["fake", "ghost", "fake", "broken"], disabled=["broken"]).load()
    assert pm.names == ["fake"]
    assert pm.failures == [
        PluginFailure("ghost", "", "named in CHUTES_PLUGINS but not installed", None)
    ]
    assert ours(pm.skipped) == ["broken"]
    # One that is installed but fails to import is reported as that, not as missing too.
    broken = PluginManager(only=["broken"]).load()
    assert [(f.name, f.error) for f in broken.failures] == [
        ("broken", "failed to import: ImportError: no such engine")
    ]
    # Without discovery, every name asked for is missing.
    alone = PluginManager(entry_points=False, only=["ghost"]).load()
    assert [(f.name, f.target) for f in alone.failures] == [("ghost", "")]


def test_strict_mode_names_the_first_failure_and_counts_the_rest(installed) -> None:
    message = (
        "failed to import: ImportError: no such engine (and 1 more); CHUTES_STRICT_PLUGINS is set"
    )
    with pytest.raises(PluginError) as raised:
        PluginManager(only=["broken", "ghost"], strict=True).load()
    assert str(raised.value) == f"plugin 'broken': {message}"
    with pytest.raises(PluginError) as single:
        PluginManager(only=["broken"], strict=True).load()
    assert str(single.value) == (
        "plugin 'broken': failed to import: ImportError: no such engine; "
        "CHUTES_STRICT_PLUGINS is set"
    )


def test_the_environment_switches_are_parsed_leniently(monkeypatch) -> None:
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHUTES_PLUGINS", " fake , ,broken ")
    monkeypatch.setenv("CHUTES_DISABLE_PLUGINS", "  ")
    pm = PluginManager(entry_points=False)
    assert (pm.only, pm.disabled, pm.strict) == (["fake", "broken"], [], False)
    truthy = [("1", True), ("TRUE", True), (" yes ", True), ("On", True)]
    for value, strict in [*truthy, ("0", False), ("no", False), ("", False)]:
        monkeypatch.setenv("CHUTES_STRICT_PLUGINS", value)
        assert PluginManager(entry_points=False).strict is strict, value
    monkeypatch.delenv("CHUTES_PLUGINS")
    assert PluginManager(entry_points=False).only is None


def test_descriptions_default_to_empty() -> None:
    failure = PluginFailure("a", "a_module", "why")
    assert failure.to_dict() == {
        "name": "a",
        "target": "a_module",
        "error": "why",
        "distribution": None,
    }
    info = PluginInfo("a", "a_module", None, None, [], [], [])
    assert info.egress == {} and info.to_dict()["egress"] == {}
    module = types.ModuleType("in_process_plugin")
    (described,) = PluginManager(entry_points=False, plugins=[("p", module)]).info()
    assert (described.target, described.distribution, described.version) == (
        "in_process_plugin",
        None,
        None,
    )
    assert PluginManager(entry_points=False).load().skipped == []


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, fn)
    return module


def test_each_rejection_says_why_on_the_plugins_logger(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="chutes.plugins")

    @hookimpl
    def egress_policy(chute):
        return False

    @hookimpl
    def register_templates(register):
        raise RuntimeError("boom")

    def not_a_hook(chute):
        return None

    first = plugin("first", egress_policy=egress_policy)
    unknown = plugin("unknown", no_such_hook=hookimpl(not_a_hook))
    pm = PluginManager(
        entry_points=False,
        strict=False,
        plugins=[
            ("same", first),
            ("same", plugin("second", egress_policy=egress_policy)),
            ("unknown", unknown),
            ("raising", plugin("raising", register_templates=register_templates)),
        ],
    ).load()
    errors = {failure.name: failure.error for failure in pm.failures}
    assert errors["same"].startswith("cannot be registered: ")
    assert errors["unknown"].startswith("implements an unknown hook: ")
    assert errors["raising"] == "registration failed: RuntimeError: boom"
    # The rejected duplicate did not take the first plugin of that name with it.
    assert pm.names == ["same"]
    assert pm.egress_decision(Chute(username="me", name="x")) == (False, "same")
    warned = [r for r in caplog.records if r.name == "chutes.plugins"]
    assert "plugin 'raising' disabled: registration failed: RuntimeError: boom" in [
        r.getMessage() for r in warned
    ]


def test_kernels_and_deploy_targets_are_registered_through_their_hooks() -> None:
    from chutes_core.deploy_targets import DeployTarget

    class Target(DeployTarget):
        description = "nowhere"

        def deploy(self, ref, chute, *, context, **options):
            return "deployed"

        def undeploy(self, ref_or_name, *, context, **options):
            return "removed"

    @hookimpl
    def register_kernels(register):
        register("demo.join", reference="os.path:join")

    @hookimpl
    def register_deploy_targets(register):
        register("nowhere", Target())

    module = plugin(
        "registering",
        register_kernels=register_kernels,
        register_deploy_targets=register_deploy_targets,
    )
    pm = PluginManager(entry_points=False, strict=True, plugins=[("registering", module)]).load()
    assert pm.kernels.by_plugin("registering") == ["demo.join"]
    assert pm.deploy_targets.by_plugin("registering") == ["nowhere"]


def test_a_bad_on_startup_answer_is_quoted() -> None:
    @hookimpl
    def on_startup(chute):
        return ["not a hook"]

    pm = PluginManager(entry_points=False, plugins=[("odd", plugin("odd", on_startup=on_startup))])
    with pytest.raises(PluginError) as raised:
        pm.startup_hooks(Chute(username="me", name="x"))
    assert (
        str(raised.value) == "plugin 'odd': on_startup returned 'not a hook', not a LifecycleHook"
    )


def test_passthrough_abort_returns_only_the_work_plugins_gave_back() -> None:
    async def tell() -> None:
        return None

    work = tell()

    @hookimpl
    def passthrough_abort(chute, cord, request, request_id):
        return work

    @hookimpl
    def quiet_abort(chute, cord, request, request_id):
        return None

    quiet = plugin("quiet", passthrough_abort=quiet_abort)
    pm = PluginManager(
        entry_points=False,
        plugins=[("abort", plugin("abort", passthrough_abort=passthrough_abort)), ("quiet", quiet)],
    ).load()
    cord = forwarded_cord()
    chute = Chute(username="me", name="x")
    upstream = UpstreamRequest("POST", "/v1/x", 1)
    assert pm.passthrough_abort(chute, cord, upstream, "id-1") == [work]
    asyncio.run(work)


def test_answers_are_asked_of_each_plugin_with_every_wrapper_kept() -> None:
    wrapped: list[str] = []

    @hookimpl(wrapper=True)
    def new_style(chute):
        result = yield
        wrapped.append(f"new:{result}")
        return result

    @hookimpl(hookwrapper=True)
    def old_style(chute):
        outcome = yield
        wrapped.append(f"old:{outcome.get_result()}")

    @hookimpl
    def answer(chute):
        return False

    pm = PluginManager(
        entry_points=False,
        strict=True,
        plugins=[
            ("answering", plugin("answering", egress_policy=answer)),
            ("new", plugin("new", egress_policy=new_style)),
            ("old", plugin("old", egress_policy=old_style)),
        ],
    ).load()
    assert pm.egress_decision(Chute(username="me", name="x")) == (False, "answering")
    assert sorted(wrapped) == ["new:False", "old:False"]


def test_the_trace_says_who_answered_what_and_how_long_it_took(monkeypatch, caplog) -> None:
    monkeypatch.setenv("CHUTES_TRACE_HOOKS", "1")
    caplog.set_level(logging.INFO, logger="chutes.plugins.trace")

    @hookimpl
    def egress_policy(chute):
        time.sleep(0.02)
        raise RuntimeError("boom")

    @hookimpl
    def passthrough_headers(chute, cord):
        return {"x-a": "1"}

    pm = PluginManager(
        entry_points=False,
        plugins=[
            ("slow", plugin("slow", egress_policy=egress_policy)),
            ("headers", plugin("headers", passthrough_headers=passthrough_headers)),
        ],
    ).load()
    chute = Chute(username="me", name="x")
    with pytest.raises(RuntimeError):
        pm.egress_policy(chute)
    cord = forwarded_cord()
    pm.passthrough(chute, cord, UpstreamRequest("POST", "/v1/x", 1))
    pm.passthrough_headers(chute, cord)
    lines = [r.getMessage() for r in caplog.records if r.name == "chutes.plugins.trace"]
    raised = [line for line in lines if line.startswith("hook egress_policy(chute) on [slow] ")]
    assert raised and " raised RuntimeError: boom in " in raised[0], lines
    elapsed = float(re.search(r" in ([0-9.]+) ms$", raised[0]).group(1))
    assert 20 <= elapsed < 60_000
    assert "hook passthrough(chute, cord, request) on [no plugin] -> [] in " in "\n".join(lines)
    # Every plugin a call reached, in call order (the built-in answers last).
    assert "hook passthrough_headers(chute, cord) on [headers, builtin] -> " in "\n".join(lines)


def test_the_process_wide_manager_is_made_once_and_loaded() -> None:
    code = (
        "from chutes_core.plugins import get_plugin_manager\n"
        "first = get_plugin_manager()\n"
        "assert first is get_plugin_manager()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CHUTES_PLUGINS": "none-installed"},  # nothing heavy to import
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "ok", result.stderr
