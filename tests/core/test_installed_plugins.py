"""Plugins installed as real distributions are discovered through entry points.

A throwaway plugin (and a broken one) are built in a temporary directory and
pip-installed into a fresh virtualenv that sees this environment's packages
through a .pth file, so the test installs nothing from the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

GOOD = """
from chutes_core import hookimpl
from chutes.chute import Chute


def build_hello_chute(username: str = "me") -> Chute:
    chute = Chute(username=username, name="hello", standard_template="hello")

    @chute.cord()
    async def hello(self, name: str) -> str:
        return f"hello {name}"

    return chute


@hookimpl
def register_templates(register):
    register("hello", build_hello_chute, description="says hello")


@hookimpl
def egress_policy(chute):
    return False if chute.standard_template == "hello" else None
"""

BROKEN = """
raise ImportError("this plugin needs libfoo, which is not installed")
"""


def make_distribution(root: Path, name: str, module: str, source: str) -> Path:
    project = root / name
    (project / module).mkdir(parents=True)
    (project / module / "__init__.py").write_text(textwrap.dedent(source))
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "1.2.3"

            [project.entry-points."chutes.plugins"]
            {module.removeprefix("chutes_")} = "{module}"

            [tool.setuptools]
            packages = ["{module}"]
            """
        )
    )
    return project


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    env_dir = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The new venv sees this environment's packages (chutes included) after its own,
    # editable installs too (addsitedir runs the parent's .pth files).
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib, "parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    for name, module, source in (
        ("chutes-hello", "chutes_hello", GOOD),
        ("chutes-broken", "chutes_broken", BROKEN),
    ):
        project = make_distribution(root, name, module, source)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                purelib,
                str(project),
            ],
            check=True,
        )
    return python


def run(python: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")}
    environ.update(env)
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=environ)


def test_plugins_json_lists_the_installed_plugin_and_the_failure(venv_python) -> None:
    result = run(venv_python, "-m", "chutes_cli", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (hello,) = [p for p in document["plugins"] if p["name"] == "hello"]
    assert hello["distribution"] == "chutes-hello" and hello["version"] == "1.2.3"
    assert hello["hooks"] == ["egress_policy", "register_templates"]
    assert hello["templates"] == ["hello"] and hello["kernels"] == []
    (broken,) = document["failures"]
    assert broken["name"] == "broken" and "libfoo" in broken["error"]
    assert broken["distribution"] == "chutes-broken"


def test_hooks_are_called_while_a_broken_plugin_only_warns(venv_python) -> None:
    script = textwrap.dedent(
        """
        from chutes.chute.template.hello import build_hello_chute
        from chutes_core.plugins import get_plugin_manager
        chute = build_hello_chute()
        manager = get_plugin_manager()
        print(chute.name, manager.egress_policy(chute), manager.egress_source(chute))
        """
    )
    result = run(venv_python, "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", "False", "hello"]
    assert "plugin 'broken' disabled" in result.stderr and "libfoo" in result.stderr


def test_strict_mode_fails_naming_the_broken_plugin(venv_python) -> None:
    result = run(
        venv_python,
        "-c",
        "from chutes_core.plugins import get_plugin_manager; get_plugin_manager()",
        CHUTES_STRICT_PLUGINS="1",
    )
    assert result.returncode != 0
    assert "plugin 'broken'" in result.stderr and "CHUTES_STRICT_PLUGINS" in result.stderr


def test_disabling_the_broken_plugin_silences_it(venv_python) -> None:
    result = run(
        venv_python,
        "-m",
        "chutes_cli",
        "plugins",
        "--json",
        CHUTES_DISABLE_PLUGINS="broken",
        CHUTES_STRICT_PLUGINS="1",
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["failures"] == [] and document["skipped"] == ["broken"]
    only = run(venv_python, "-m", "chutes_cli", "plugins", "--json", CHUTES_PLUGINS="hello")
    assert [p["name"] for p in json.loads(only.stdout)["plugins"]] == ["hello"]


def test_a_missing_template_names_the_package(venv_python) -> None:
    # (Disabled, in case the vLLM plugin is installed in this environment.)
    result = run(
        venv_python,
        "-c",
        "from chutes.chute.template.vllm import build_vllm_chute",
        CHUTES_DISABLE_PLUGINS="vllm",
    )
    assert result.returncode != 0
    assert "pip install chutes-vllm" in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("chutes_core.errors.TemplateNotInstalledError")
    )
