"""Deploy targets registered by plugins: the registry, clashes, and bad registrations."""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from chutes_core.deploy_targets import (
    DeployContext,
    DeployOption,
    DeployTarget,
    DeployTargetClashError,
    DeployTargetRegistry,
    UndeployNotSupportedError,
    UnknownDeployTargetError,
)
from chutes_core.hookspecs import hookimpl
from chutes_core.plugins import PluginManager


class Target(DeployTarget):
    description = "a test target"
    options = (DeployOption("zone", "Where."), DeployOption("fast", "Hurry.", type=bool))

    def deploy(self, ref: str, chute: Any, *, context: DeployContext, **options: Any) -> str:
        return f"deployed {ref} with {options}"


def plugin_registering(*targets: tuple[str, Any]) -> ModuleType:
    @hookimpl
    def register_deploy_targets(register):
        for name, target in targets:
            register(name, target)

    # A module, as entry points give: pluggy needs plugins to be hashable.
    module = ModuleType("deploy_target_plugin")
    module.register_deploy_targets = register_deploy_targets  # type: ignore[attr-defined]
    return module


def test_a_plugin_registers_a_target_that_the_manager_lists() -> None:
    target = Target()
    manager = PluginManager(
        entry_points=False, plugins=[("mine", plugin_registering(("k8s", target)))]
    )
    entry = manager.load().deploy_targets.get("k8s")
    assert (entry.target, entry.plugin, entry.builtin) == (target, "mine", False)
    assert manager.deploy_targets.names() == ["k8s"]
    assert manager.deploy_targets.by_plugin("mine") == ["k8s"]
    assert manager.failures == [] and manager.names == ["mine"]
    assert "k8s" in manager.deploy_targets and "other" not in manager.deploy_targets


def test_a_clash_between_two_plugins_is_reported_not_fatal(caplog) -> None:
    caplog.set_level(logging.WARNING, "chutes.plugins")
    manager = PluginManager(
        entry_points=False,
        plugins=[
            ("one", plugin_registering(("k8s", Target()), ("only-one", Target()))),
            ("two", plugin_registering(("k8s", Target()))),
        ],
    ).load()
    # Both plugins stay loaded; the contested name is used by neither.
    assert manager.names == ["one", "two"] and manager.failures == []
    assert manager.deploy_targets.names() == ["only-one"]
    assert manager.deploy_targets.clashes == {"k8s": ["one", "two"]}
    with pytest.raises(DeployTargetClashError, match="'one' and 'two'"):
        manager.deploy_targets.get("k8s")
    assert "deploy target 'k8s' is registered by 'one' and 'two'; neither is used" in caplog.text
    # Whoever registered it, it is still theirs to report.
    assert manager.deploy_targets.by_plugin("two") == ["k8s"]


def test_a_builtin_target_keeps_its_name_in_a_clash() -> None:
    builtin, theirs = Target(), Target()
    registry = DeployTargetRegistry()
    registry.register_for("plugin")("platform", theirs)
    registry.add_builtin("platform", builtin)
    assert registry.get("platform").target is builtin
    assert registry.clashes == {"platform": ["plugin", "chutes"]}
    # Dropping the plugin ends the clash.
    registry.drop_plugin("plugin")
    assert registry.clashes == {} and registry.get("platform").target is builtin


def test_an_unknown_name_lists_the_installed_targets() -> None:
    registry = DeployTargetRegistry()
    registry.register_for("a")("k8s", Target())
    registry.add_builtin("platform", Target())
    with pytest.raises(UnknownDeployTargetError) as caught:
        registry.get("nomad")
    assert str(caught.value) == "no deploy target 'nomad' (installed targets: k8s, platform)"


@pytest.mark.parametrize(
    ("name", "target", "complaint"),
    [
        ("Bad Name", Target(), "deploy target name"),
        ("k8s", object(), "a DeployTarget instance"),
        ("k8s", type("T", (Target,), {"options": (DeployOption("target", "x"),)})(), "other than"),
        ("k8s", type("T", (Target,), {"options": (DeployOption("n", "x", type=list),)})(), "type"),
        (
            "k8s",
            type("T", (Target,), {"options": (DeployOption("n", "x"), DeployOption("n", "y"))})(),
            "a name given once",
        ),
    ],
)
def test_a_bad_registration_disables_only_that_plugin(name, target, complaint) -> None:
    manager = PluginManager(
        entry_points=False,
        plugins=[
            ("bad", plugin_registering((name, target))),
            ("good", plugin_registering(("ok", Target()))),
        ],
    ).load()
    assert manager.names == ["good"] and manager.deploy_targets.names() == ["ok"]
    (failure,) = manager.failures
    assert failure.name == "bad" and complaint in failure.error


def test_the_contract_defaults() -> None:
    target = Target()
    context = DeployContext()
    # A program calling a target directly: silent, and questions answered yes.
    assert context.confirm("sure?") is True and context.progress("x") is None
    assert (
        target.deploy("m:chute", None, context=context, zone="z")
        == "deployed m:chute with {'zone': 'z'}"
    )
    with pytest.raises(UndeployNotSupportedError):
        target.undeploy("m:chute", context=context)
    assert [option.flag for option in target.options] == ["--zone", "--fast"]
    assert DeployOption("config_path", "x", type=Path).flag == "--config-path"
