"""`chutes build` asks before building when run in a terminal (a real pty here)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def build_in_a_terminal(output: Path, answer: bytes) -> tuple[int, str]:
    """Run the build with a pty as its terminal; answer the question once it is asked."""
    leader, follower = pty.openpty()
    env = {**os.environ, "PATH": "/nonexistent", "COLUMNS": "200", "TERM": "dumb"}
    process = subprocess.Popen(
        [sys.executable, "-m", "chutes_cli", "build", "example:chute", "--local",
         "--output", str(output)],
        cwd=SEEDS, stdin=follower, stdout=follower, stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"Build with these files?" in seen:
            os.write(leader, answer + b"\n")
            answered = True
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no end after 60s:\n{seen.decode(errors='replace')}")
    os.close(leader)
    return process.wait(30), seen.decode(errors="replace")


def test_build_asks_and_no_means_nothing_is_built(tmp_path) -> None:
    code, output = build_in_a_terminal(tmp_path / "ctx", b"n")
    assert "Build with these files?" in output and "example.py" in output
    assert code == 1, output
    assert not (tmp_path / "ctx" / "Dockerfile").exists()


def test_build_asks_and_yes_builds(tmp_path) -> None:
    code, output = build_in_a_terminal(tmp_path / "ctx", b"y")
    assert code == 0, output
    assert (tmp_path / "ctx" / "Dockerfile").read_text().startswith("FROM parachutes/python:3.12")
