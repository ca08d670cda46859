"""A deploy script with `set -e` stops at the first refusal: `chutes` exits non-zero whenever
the platform says no, and never waits for an answer without a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SEEDS = Path(__file__).resolve().parents[1] / "seeds"

SCRIPT = """\
set -e
chutes deploy example:chute --accept-fee --json > deployed.json
echo "deployed"
chutes warmup example
chutes chutes list --json > listed.json
echo "listed"
chutes deploy example:chute --accept-fee
echo "NOT REACHED"
"""


def run_script(script: str, config: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CHUTES_CONFIG_PATH=str(config))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in ("CHUTES_API_URL", "CHUTES_API_KEY", "CHUTES_YES"):
        env.pop(name, None)
    return subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_set_e_script_deploys_waits_lists_and_stops_at_the_first_refusal(
    config, standin, tmp_path
) -> None:
    (tmp_path / "example.py").write_text((SEEDS / "example.py").read_text())
    result = run_script(SCRIPT, config, tmp_path)
    assert result.returncode == 3, result.stderr  # the second deploy: the name is taken (409)
    assert result.stdout.split() == ["deployed", "cold", "starting", "hot", "listed"]
    assert "NOT REACHED" not in result.stdout
    (refusal,) = result.stderr.strip().splitlines()
    assert refusal.startswith("chutes deploy: a chute named 'example' already exists")
    deployed = json.loads((tmp_path / "deployed.json").read_text())
    listed = json.loads((tmp_path / "listed.json").read_text())
    assert [c["chute_id"] for c in listed] == [deployed["chute_id"]]


def test_set_e_script_stops_at_the_fee(config, standin, tmp_path) -> None:
    (tmp_path / "example.py").write_text((SEEDS / "example.py").read_text())
    script = "set -e\nchutes deploy example:chute --target platform\necho NOT REACHED\n"
    standin.state.chutes.clear()
    result = run_script(script, config, tmp_path)
    assert result.returncode == 3 and result.stdout == ""
    assert "--accept-fee" in result.stderr and not standin.state.chutes
