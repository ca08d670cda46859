"""`chutes validate` (and `chutes chutes validate --file`): offline, every problem with its fix."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from chutes_cli import app

SEEDS = Path(__file__).resolve().parents[1] / "seeds"

BROKEN = """\
from chutes.chute import Chute, NodeSelector
from chutes.image import Image

image = Image(username="Bad User", name="img", tag="has space")
chute = Chute(
    username="me",
    name="Bad_Name",
    image=image,
    concurrency=0,
    node_selector=NodeSelector(gpu_count=9, min_vram_gb_per_gpu=8, max_hourly_price_per_gpu=-1),
)


@chute.cord(public_api_path="/same")
async def first(self):
    return {}


@chute.cord(public_api_path="/same")
async def second(self):
    return {}


@chute.cord(path="not a path")
async def third(self):
    return {}
"""


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def problems_of(result) -> list[dict]:
    return json.loads(result.stdout)["problems"]


def test_a_good_chute_passes_offline(monkeypatch, tmp_path) -> None:
    # No config and an API address nothing answers on: nothing is sent.
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(tmp_path / "none.ini"))
    monkeypatch.setenv("CHUTES_API_URL", "http://127.0.0.1:1")
    monkeypatch.chdir(SEEDS)
    for args in (("validate", "example:chute"), ("chutes", "validate", "--file", "example.py")):
        result = run(*args, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"ok": True, "ref": args[-1], "problems": []}
    assert "no problems found" in run("validate", "--file", "example.py").stdout


def test_every_problem_is_listed_with_its_line_and_fix(tmp_path) -> None:
    path = tmp_path / "broken.py"
    path.write_text(BROKEN)
    result = run("chutes", "validate", "--file", str(path), "--json")
    assert result.exit_code == 2
    found = {(p["line"], p["field"]): p["problem"] for p in problems_of(result)}
    assert set(found) == {
        (4, "username"),
        (4, "tag"),
        (5, "name"),
        (5, "concurrency"),
        (10, "gpu_count"),
        (10, "min_vram_gb_per_gpu"),
        (10, "max_hourly_price_per_gpu"),
        (19, "cord.public_api_path"),
        (24, "path"),
    }
    assert "lowercase letters, digits and hyphens" in found[5, "name"]
    assert "an integer from 1 to 4096" in found[5, "concurrency"]
    assert "GPUs per instance, 1 to 8" in found[10, "gpu_count"]
    assert "greater than 0" in found[10, "max_hourly_price_per_gpu"]
    assert "also the cord's on line 14" in found[19, "cord.public_api_path"]
    assert found[24, "path"].startswith("cord 'third': path: got 'not a path'")

    plain = run("validate", "--file", str(path))
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 9 and all(line.startswith(f"{path}:") for line in lines)
    assert plain.stdout.strip() == f"{path}: 9 problem(s)"


def test_a_template_without_a_revision_says_how_to_find_one(tmp_path) -> None:
    path = tmp_path / "llm.py"
    path.write_text(
        "from chutes.chute.template.vllm import build_vllm_chute\n"
        "chute = build_vllm_chute(username='Me', model_name='org/model')\n"
    )
    result = run("validate", "--file", str(path), "--json")
    assert result.exit_code == 2
    found = {p["field"]: p["problem"] for p in problems_of(result)}
    assert set(found) == {"username", "revision"}
    assert "huggingface.co/org/model/commits/main" in found["revision"]


def test_problems_seen_only_once_loaded(tmp_path) -> None:
    path = tmp_path / "empty.py"
    path.write_text(
        "from chutes.chute import Chute\n"
        "IMAGE = 'Not An Image'\n"
        "chute = Chute(username='me', name='empty', image=IMAGE)\n"
    )
    result = run("validate", "--file", f"{path}:chute", "--json")
    assert result.exit_code == 2
    found = {p["field"]: p["problem"] for p in problems_of(result)}
    assert set(found) == {"cords", "image"}
    assert "add one with @chute.cord" in found["cords"]


def test_unloadable_input_is_a_problem_too(tmp_path) -> None:
    path = tmp_path / "syntax.py"
    path.write_text("chute = (\n")
    (problem,) = problems_of(run("validate", "--file", str(path), "--json"))
    assert problem["field"] == "syntax" and problem["line"] == 1
    missing = run("validate", "--file", str(tmp_path / "nope.py"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    wrong_attr = run("validate", f"{path.with_name('empty2.py')}:x")
    assert wrong_attr.exit_code == 2
    assert run("validate").exit_code == 2
