"""`chutes build`: the Dockerfile (checked with a real parser) and its context."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from typer.testing import CliRunner

from chutes_cli import app
from chutes_cli.image_build import plan_build
from chutes_core.errors import ChutesError

SEEDS = Path(__file__).resolve().parents[1] / "seeds"
VALID = {
    "FROM",
    "RUN",
    "ENV",
    "ADD",
    "COPY",
    "WORKDIR",
    "USER",
    "LABEL",
    "ENTRYPOINT",
    "CMD",
    "EXPOSE",
}


def parse(path: Path) -> list[dict]:
    parser = DockerfileParser(path=str(path))
    return parser.structure


def test_build_local_writes_a_dockerfile_that_parses(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(SEEDS)
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker engine and no podman here
    out = tmp_path / "ctx"
    result = CliRunner().invoke(
        app, ["build", "example:chute", "--local", "--output", str(out), "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert "no docker engine or podman here" in result.output
    assert f"docker build -t foo:0.1 {out}" in result.output
    structure = parse(out / "Dockerfile")
    assert {item["instruction"] for item in structure} <= VALID
    assert (
        structure[0]["instruction"] == "FROM" and structure[0]["value"] == "parachutes/python:3.12"
    )
    adds = [item["value"] for item in structure if item["instruction"] == "ADD"]
    assert adds == ['["example.py", "/app/example.py"]']
    assert (out / "example.py").read_text() == (SEEDS / "example.py").read_text()
    assert structure[-1]["instruction"] == "CMD" and '"example:chute"' in structure[-1]["value"]


def test_every_add_source_exists_in_the_context(tmp_path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "assets").mkdir(parents=True)
    (project / "assets" / "vocab.txt").write_text("hello\n")
    (project / "app.py").write_text(
        textwrap.dedent(
            """
            from chutes.chute import Chute
            from chutes.image import Image

            image = (
                Image(username="me", name="app", tag="1.0")
                .from_base("python:3.12-slim")
                .apt_install("curl")
                .add("assets", "/opt/assets")
                .with_env("MODE", "prod")
            )
            chute = Chute(username="me", name="app", image=image)

            @chute.cord()
            async def hello(self) -> str:
                return "hi"
            """
        )
    )
    monkeypatch.chdir(project)
    plan = plan_build("app:chute")
    out = plan.write(tmp_path / "ctx")
    for item in parse(out / "Dockerfile"):
        assert item["instruction"] in VALID
        if item["instruction"] == "ADD":
            import json

            source = json.loads(item["value"])[0]
            assert (out / source).exists(), source
    assert sorted(p.as_posix() for p in plan.files) == ["app.py", "assets/vocab.txt"]


def test_include_cwd_sends_the_project_but_not_caches(tmp_path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "pkg" / "__pycache__").mkdir(parents=True)
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref")
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"")
    (project / "pkg" / "helpers.py").write_text("VALUE = 1\n")
    (project / "main.py").write_text(
        "from chutes.chute import Chute\nchute = Chute(username='me', name='app')\n"
    )
    monkeypatch.chdir(project)
    plan = plan_build("main:chute", include_cwd=True)
    assert sorted(p.as_posix() for p in plan.files) == [
        "main.py",
        "pkg/__init__.py",
        "pkg/helpers.py",
    ]


def test_files_outside_the_project_are_refused(tmp_path, monkeypatch) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("do not send")
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text(
        "from chutes.chute import Chute\nchute = Chute(username='me', name='app')\n"
    )
    os.symlink(outside, project / "linked.txt")
    monkeypatch.chdir(project)
    with pytest.raises(ChutesError, match="outside the project directory"):
        plan_build("main:chute", include_cwd=True)
    (project / "linked.txt").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "far.py").write_text(
        "from chutes.chute import Chute\nchute = Chute(username='me', name='far')\n"
    )
    with pytest.raises(ChutesError, match="outside the project directory"):
        plan_build(f"{elsewhere / 'far.py'}:chute")


def test_a_template_chute_gets_its_plugins_image(tmp_path, monkeypatch) -> None:
    (tmp_path / "plain.py").write_text(
        "from chutes.chute import Chute\nchute = Chute(username='me', name='plain')\n"
    )
    monkeypatch.chdir(tmp_path)
    dockerfile = plan_build("plain:chute").dockerfile()
    assert "pip install --no-cache-dir 'chutes==" in dockerfile  # the built-in default image


def test_platform_build_uploads_and_streams_the_log(tmp_path, monkeypatch, config, standin) -> None:
    monkeypatch.chdir(SEEDS)
    result = CliRunner().invoke(app, ["build", "example:chute", "--wait", "--public", "--yes"])
    assert result.exit_code == 0, result.output
    assert "image chutes/foo:0.1 submitted" in result.output
    assert "building foo:0.1" in result.output and "pushed" in result.output
    (image,) = standin.state.images.values()
    assert image["public"] is True and image["context_bytes"] > 0
    assert image["dockerfile"].startswith("FROM parachutes/python:3.12")


def test_the_image_runs_as_a_user_and_carries_the_seccomp_binding(tmp_path, monkeypatch) -> None:
    (tmp_path / "as_user.py").write_text(
        "from chutes.chute import Chute\nchute = Chute(username='me', name='plain')\n"
    )
    monkeypatch.chdir(tmp_path)
    lines = plan_build("as_user:chute").dockerfile().splitlines()
    assert any("pyseccomp" in line for line in lines)
    assert any("apt-get install" in line and "slirp4netns" in line for line in lines)
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER chutes"] and lines.index("USER chutes") < len(lines) - 1
    assert lines[-1].startswith("CMD ")
