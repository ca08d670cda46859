"""How `chutes run` fails before it serves: one line, and an exit code."""

from __future__ import annotations

import socket
import subprocess
import sys


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "chutes_cli", "run", "app:chute", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr, result.stderr
