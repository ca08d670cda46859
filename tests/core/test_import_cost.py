"""The core and the CLI never import an engine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "vllm", "sglang", "diffusers", "sentence_transformers", "triton")


def imported_modules(code: str) -> set[str]:
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert names, "no -X importtime output was captured"
    return names


def test_import_chutes_core_is_light() -> None:
    names = imported_modules("import chutes_core")
    assert not names & set(HEAVY), sorted(names & set(HEAVY))
    # The SDK classes load on first use, not on import.
    assert "fastapi" not in names


def test_sdk_import_has_no_engine() -> None:
    names = imported_modules(
        "from chutes.chute import Chute, NodeSelector; from chutes.image import Image"
    )
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_cli_help_has_no_engine_and_no_fastapi() -> None:
    names = imported_modules(
        "import sys; sys.argv = ['chutes', '--help']\n"
        "from chutes_cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert not names & {*HEAVY, "fastapi", "uvicorn"}, sorted(names & {*HEAVY, "fastapi"})


def test_cli_help_loads_no_plugin() -> None:
    # Deploy targets come from plugins, but only `chutes deploy` needs them.
    names = imported_modules(
        "import sys; sys.argv = ['chutes', '--help']\n"
        "from chutes_cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert not names & {"stevedore", "pluggy"}, sorted(names & {"stevedore", "pluggy"})


def test_cli_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "chutes_cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for command in ("run", "plugins"):
        assert command in result.stdout


def test_chutes_run_skips_the_full_cli() -> None:
    names = imported_modules(
        "import sys; sys.argv = ['chutes', 'run', 'no_such_module:chute']\n"
        "from chutes_cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert not names & {"typer", "rich", "click"}, sorted(names & {"typer", "rich", "click"})


def test_the_fast_run_parser_matches_the_cli() -> None:
    import typer.main

    from chutes_cli import app
    from chutes_cli.run import parser

    command = typer.main.get_command(app).commands["run"]
    cli = {param.name: param.default for param in command.params}
    fast = {action.dest: action.default for action in parser()._actions if action.dest != "help"}
    assert cli == fast


def test_chutes_run_serves_without_importing_an_engine(tmp_path) -> None:
    # The whole `chutes run` path up to serving: CLI, host, every installed plugin loaded.
    from chutes_testing.running import run_chute

    (tmp_path / "light.py").write_text(
        "from chutes.chute import Chute\n\n"
        "chute = Chute(username='me', name='light')\n\n\n"
        "@chute.cord()\nasync def echo(self, text: str) -> str:\n    return text\n"
    )
    env = {"PYTHONPROFILEIMPORTTIME": "1", "HF_HUB_OFFLINE": "1"}
    with run_chute("light:chute", cwd=tmp_path, env=env, ready_timeout=60) as running:
        log = running.log()
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in log.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"chutes_runtime", "uvicorn", "stevedore"} <= names, "no import-time output captured"
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_the_heavy_packages_are_installed_where_every_plugin_is() -> None:
    # With every plugin installed (CHUTES_EXPECT_PLUGINS), torch and transformers are there,
    # so the light-import checks above can fail; without them they prove nothing.
    import importlib.util

    if not os.environ.get("CHUTES_EXPECT_PLUGINS"):
        pytest.skip("only where every plugin is installed (the all_plugins session)")
    assert importlib.util.find_spec("torch") is not None
    assert importlib.util.find_spec("transformers") is not None
