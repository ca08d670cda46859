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


HELLO_TOO = """
from chutes_core import hookimpl
from chutes_hello import build_hello_chute


@hookimpl
def register_templates(register):
    register("hello", build_hello_chute, description="also says hello")
"""

HEAVY = """
import torch  # at module level: what the conformance kit must catch

from chutes_core import hookimpl
from chutes.chute import Chute


def build_heavy_chute(username: str = "me", fail: bool = False) -> Chute:
    if fail:
        raise RuntimeError("cannot build without a model")
    chute = Chute(username=username, name="heavy", standard_template="heavy")

    @chute.cord()
    async def echo(self, text: str) -> str:
        return text

    return chute


@hookimpl
def register_templates(register):
    register("heavy", build_heavy_chute)
"""


def make_venv(root: Path, distributions: list[tuple[str, str, str]]) -> Path:
    """A virtualenv with ``(name, module, source)`` plugins, over this environment's packages."""
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
    for name, module, source in distributions:
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


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    return make_venv(
        tmp_path_factory.mktemp("plugins"),
        [("chutes-hello", "chutes_hello", GOOD), ("chutes-broken", "chutes_broken", BROKEN)],
    )


@pytest.fixture(scope="module")
def clash_python(tmp_path_factory) -> Path:
    """Two plugins that both register ``hello``, and one that imports (a stand-in) torch."""
    root = tmp_path_factory.mktemp("clash")
    python = make_venv(
        root,
        [
            ("chutes-hello", "chutes_hello", GOOD),
            ("chutes-hello-too", "chutes_hello_too", HELLO_TOO),
            ("chutes-heavy", "chutes_heavy", HEAVY),
        ],
    )
    purelib = next((root / "venv" / "lib").glob("python*/site-packages"))
    (purelib / "torch").mkdir()
    (purelib / "torch" / "__init__.py").write_text('"""Stands in for torch."""\n')
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


def test_a_name_in_chutes_plugins_that_is_not_installed_is_reported(venv_python) -> None:
    result = run(
        venv_python, "-m", "chutes_cli", "plugins", "--json", CHUTES_PLUGINS="hello,nothere"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [p["name"] for p in document["plugins"]] == ["hello"]
    (missing,) = document["failures"]  # and broken, not named, is not even imported
    assert missing["name"] == "nothere" and "not installed" in missing["error"]
    assert "broken" in document["skipped"]


def test_a_template_clash_is_listed_and_the_host_keeps_serving(clash_python, tmp_path) -> None:
    listed = run(clash_python, "-m", "chutes_cli", "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert sorted(p["name"] for p in document["failures"]) == ["hello", "hello_too"]
    for failure in document["failures"]:
        assert "template 'hello'" in failure["error"]
        assert "'hello'" in failure["error"] and "'hello_too'" in failure["error"]
    assert {f["distribution"] for f in document["failures"]} == {"chutes-hello", "chutes-hello-too"}
    assert "heavy" in [p["name"] for p in document["plugins"]]

    (tmp_path / "plain.py").write_text(
        "from chutes.chute import Chute\n"
        "chute = Chute(username='me', name='plain')\n\n"
        "@chute.cord(method='GET')\n"
        "async def ping(self) -> dict:\n"
        "    return {'pong': True}\n"
    )
    script = textwrap.dedent(
        """
        import os, httpx
        from chutes_testing.running import run_chute
        with run_chute("plain:chute", cwd=os.getcwd()) as chute:
            print(httpx.get(chute.url + "/ping").json())
        """
    )
    served = subprocess.run(
        [str(clash_python), "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")},
        timeout=120,
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "{'pong': True}"

    strict = run(
        clash_python,
        "-c",
        "from chutes_core.plugins import get_plugin_manager; get_plugin_manager()",
        CHUTES_STRICT_PLUGINS="1",
    )
    assert strict.returncode != 0
    assert "PluginConflictError" in strict.stderr and "'hello_too'" in strict.stderr


def test_the_conformance_kit_catches_a_heavy_import(clash_python) -> None:
    result = run(
        clash_python, "-c", "import chutes_testing as testing; testing.check_plugin('heavy')"
    )
    assert result.returncode != 0
    assert "ConformanceError: importing chutes_heavy imports torch" in result.stderr
    light = run(
        clash_python,
        "-c",
        "import chutes_testing as testing; print(testing.check_plugin('hello').name)",
    )
    assert light.returncode == 0, light.stderr
    assert light.stdout.strip() == "hello"


def test_a_missing_documented_template_names_its_package(venv_python) -> None:
    # The documented import names whose plugin is not chutes-<template>.
    for template, distribution in [
        ("diffusion", "diffusers"),
        ("embedding", "embeddings"),
        ("rerank", "embeddings"),
        ("whisper", "audio"),
        ("tts", "audio"),
    ]:
        result = run(
            venv_python,
            "-c",
            f"import chutes.chute.template.{template}",
            CHUTES_DISABLE_PLUGINS=distribution,
        )
        assert result.returncode != 0
        assert f"pip install chutes-{distribution}" in result.stderr
