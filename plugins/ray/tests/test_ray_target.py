"""The `ray` deploy target as a plugin: registered, listed, light, mapped. No Ray head here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chutes_ray import plugin
from chutes_ray.target import RayTarget

from chutes_core.deploy_targets import DeployContext
from chutes_core.errors import ChutesError
from chutes_core.plugins import PluginManager


def chutes(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chutes_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=120,
    )


def test_the_plugin_registers_the_ray_target() -> None:
    manager = PluginManager(entry_points=False, plugins=[("ray", plugin)]).load()
    entry = manager.deploy_targets.get("ray")
    assert isinstance(entry.target, RayTarget) and entry.plugin == "ray"
    flags = {option.flag for option in entry.target.options}
    assert flags == {"--address", "--cpu-only", "--route-prefix", "--http-host", "--http-port"}
    assert [o.name for o in entry.target.options if o.undeploy] == ["address"]


def test_it_is_installed_through_its_entry_point_and_listed_by_the_cli() -> None:
    listed = chutes("deploy", "--help")
    assert listed.returncode == 0, listed.stderr
    assert "ray: Ray Serve" in listed.stdout and "Options of --target ray" in listed.stdout
    for flag in ("--address", "--cpu-only", "--route-prefix", "--http-host", "--http-port"):
        assert flag in listed.stdout
    assert "--address" in chutes("undeploy", "--help").stdout
    assert '"ray"' in chutes("plugins", "--json").stdout


def test_loading_the_plugin_does_not_import_ray() -> None:
    # Ray must not be imported before a loopback cluster can be kept on loopback.
    code = (
        "import sys; from chutes_core.plugins import PluginManager\n"
        "PluginManager().load().deploy_targets.get('ray')\n"
        "print('ray' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_a_file_reference_becomes_relative_to_the_shipped_directory(tmp_path: Path) -> None:
    from chutes_ray.serve import replica_ref

    (tmp_path / "app").mkdir()
    assert replica_ref(str(tmp_path / "app" / "main.py"), tmp_path) == "app/main.py:chute"
    assert replica_ref("pkg.module:thing", tmp_path) == "pkg.module:thing"
    with pytest.raises(ChutesError, match="outside"):
        replica_ref(str(tmp_path.parent / "elsewhere.py:chute"), tmp_path)


def test_the_address_is_the_flag_then_ray_address_then_a_local_head(monkeypatch) -> None:
    from chutes_ray.cluster import resolve_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CHUTES_RAY_PORT", "6400")
    assert resolve_address(None) == ("127.0.0.1:6400", True)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert resolve_address(None) == ("ray://head:10001", False)
    assert resolve_address("10.0.0.1:6379") == ("10.0.0.1:6379", False)
    monkeypatch.setenv("CHUTES_RAY_PORT", "80")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(ChutesError, match="CHUTES_RAY_PORT"):
        resolve_address(None)


def test_undeploy_without_a_local_head_says_so(monkeypatch) -> None:
    from chutes_testing.running import free_port

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CHUTES_RAY_PORT", str(free_port()))  # nothing listens there
    with pytest.raises(ChutesError, match="no local Ray head"):
        RayTarget().undeploy("some-chute", context=DeployContext())
