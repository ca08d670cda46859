"""`chutes deploy --target NAME` over the installed targets, with a fake target plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.testing import CliRunner

from chutes_cli import app
from chutes_core.deploy_targets import DeployContext, DeployOption, DeployTarget
from chutes_core.errors import ChutesError
from chutes_core.hookspecs import hookimpl
from chutes_core.plugins import PluginManager

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


class Recorder(DeployTarget):
    description = "records what it is asked"
    options = (
        DeployOption("region", "Where it runs.", undeploy=True),
        DeployOption("replicas", "How many.", type=int, envvar="FAKE_REPLICAS"),
        DeployOption("dry_run", "Only say what it would do.", type=bool),
    )

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def deploy(self, ref: str, chute: Any, *, context: DeployContext, **options: Any) -> str:
        self.calls.append(("deploy", ref, chute.name, options))
        context.progress("fake: working")
        context.debug("fake: the details")
        if not context.confirm("Go ahead?"):
            raise ChutesError("declined")
        return f"fake deployed {chute.name}"

    def undeploy(self, ref_or_name: str, *, context: DeployContext, **options: Any) -> str:
        self.calls.append(("undeploy", ref_or_name, options))
        return f"fake removed {ref_or_name}"


class Quiet(DeployTarget):
    description = "takes no options"

    def deploy(self, ref: str, chute: Any, *, context: DeployContext, **options: Any) -> str:
        return f"quietly deployed {chute.name} with {options}"


def plugin(**targets: DeployTarget) -> ModuleType:
    @hookimpl
    def register_deploy_targets(register):
        for name, target in targets.items():
            register(name, target)

    # A module, as entry points give: pluggy needs plugins to be hashable.
    module = ModuleType("deploy_target_plugin")
    module.register_deploy_targets = register_deploy_targets  # type: ignore[attr-defined]
    return module


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def manager(recorder) -> PluginManager:
    return PluginManager(
        entry_points=False, plugins=[("fakes", plugin(fake=recorder, quiet=Quiet()))]
    )


@pytest.fixture(autouse=True)
def in_seeds(monkeypatch) -> None:
    monkeypatch.chdir(SEEDS)
    monkeypatch.delenv("FAKE_REPLICAS", raising=False)


def run(manager: PluginManager, *args: str, **env: str):
    return CliRunner().invoke(app, list(args), obj=manager, env=env or None)


def test_help_lists_the_installed_targets_and_their_options(manager) -> None:
    result = run(manager, "deploy", "--help")
    assert result.exit_code == 0, result.output
    assert "Where to deploy: fake, platform, quiet." in result.output
    for line in (
        "fake: records what it is asked",
        "quiet: takes no options",
        "platform: the Chutes platform",
    ):
        assert line in result.output
    for flag in ("--region", "--replicas", "--dry-run", "--accept-fee", "--config-path"):
        assert flag in result.output
    assert "Options of --target fake" in result.output
    assert "Options of --target platform" in result.output


def test_the_target_named_is_the_one_that_deploys(manager, recorder) -> None:
    result = run(manager, "deploy", "example:chute", "--target", "fake", "--region", "eu")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "fake deployed example"
    assert "fake: working" in result.stderr
    assert "fake: the details" not in result.output  # only with --debug
    # Only the options given reach the target.
    assert recorder.calls == [("deploy", "example:chute", "example", {"region": "eu"})]


def test_options_flags_environment_and_debug_reach_the_target(manager, recorder) -> None:
    result = run(
        manager, "deploy", "example:chute", "--target", "fake", "--dry-run", "--debug",
        FAKE_REPLICAS="3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert recorder.calls[0][3] == {"replicas": 3, "dry_run": True}
    assert "fake: the details" in result.stdout


def test_another_targets_option_is_refused_on_the_command_line_not_from_the_environment(
    manager,
) -> None:
    refused = run(manager, "deploy", "example:chute", "--target", "quiet", "--region", "eu")
    assert refused.exit_code == 2
    assert "--region is not an option of target 'quiet' (its options: none)" in refused.output
    from_env = run(manager, "deploy", "example:chute", "--target", "quiet", FAKE_REPLICAS="3")
    assert from_env.exit_code == 0, from_env.output
    assert "quietly deployed example with {}" in from_env.stdout


def test_an_unknown_target_lists_the_installed_ones(manager) -> None:
    result = run(manager, "deploy", "example:chute", "--target", "unknown")
    assert result.exit_code == 2
    assert (
        "chutes deploy: no deploy target 'unknown' (installed targets: fake, platform, quiet)"
        in result.stderr
    )
    # A first-party target that is not installed says what to install.
    ray = run(manager, "deploy", "example:chute", "--target", "ray")
    assert ray.exit_code == 2 and "pip install chutes-ray" in ray.stderr


def test_a_bad_reference_is_a_usage_error(manager, recorder) -> None:
    result = run(manager, "deploy", "no_such_module:chute", "--target", "fake")
    assert result.exit_code == 2 and "chutes deploy:" in result.stderr
    assert recorder.calls == []


def test_undeploy_goes_to_the_target_with_its_undeploy_options(manager, recorder) -> None:
    result = run(manager, "undeploy", "example", "--target", "fake", "--region", "eu")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "fake removed example"
    assert recorder.calls == [("undeploy", "example", {"region": "eu"})]
    as_json = run(manager, "undeploy", "example", "--target", "fake", "--json")
    assert json.loads(as_json.stdout) == {
        "target": "fake",
        "name": "example",
        "message": "fake removed example",
    }
    # --replicas is a deploy option only.
    assert run(manager, "undeploy", "example", "--target", "fake", "--replicas", "2").exit_code == 2
    cannot = run(manager, "undeploy", "example", "--target", "quiet")
    assert cannot.exit_code == 2
    assert "chutes undeploy: the quiet target cannot undeploy" in cannot.stderr
    platform = run(manager, "undeploy", "example")  # the platform is the default target
    assert platform.exit_code == 2
    assert "the platform target cannot undeploy; use `chutes chutes delete NAME`" in platform.stderr


def test_chutes_plugins_shows_each_plugins_targets_and_clashes(recorder) -> None:
    manager = PluginManager(
        entry_points=False,
        plugins=[
            ("fakes", plugin(fake=recorder, quiet=Quiet())),
            ("rival", plugin(quiet=Quiet(), platform=Quiet())),
        ],
    )
    document = json.loads(run(manager, "plugins", "--json").stdout)
    targets = {p["name"]: p["deploy_targets"] for p in document["plugins"]}
    assert targets == {"fakes": ["fake", "quiet"], "rival": ["platform", "quiet"]}
    assert document["deploy_target_clashes"] == {
        "platform": ["rival", "chutes"],
        "quiet": ["fakes", "rival"],
    }
    table = run(manager, "plugins", COLUMNS="200").output
    assert "deploy target 'quiet' is registered by fakes and rival: neither is used" in table
    assert "deploy target 'platform' is registered by rival and chutes: the built-in one" in table
    # Neither plugin can take the built-in platform target; the clashed name is unusable.
    help_text = run(manager, "deploy", "--help").output
    assert "Where to deploy: fake, platform." in help_text
    assert run(manager, "deploy", "example:chute", "--target", "quiet").exit_code == 2


def test_the_installed_targets_without_a_test_manager() -> None:
    """The real command, as installed: the platform target is always there."""
    result = subprocess.run(
        [sys.executable, "-m", "chutes_cli", "deploy", "--help"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "platform: the Chutes platform" in result.stdout
    assert "--accept-fee" in result.stdout
