"""Schema fuzzing: schemathesis against the seeds' example chute and the embeddings demo.

Each chute is served by a real ``chutes run`` on loopback; schemathesis then
generates requests from its OpenAPI schema for ``--max-time`` seconds and
checks that no answer is a 5xx and that every answer (status, content type,
body) is the one the schema declares. The example's ``complex`` and
``image`` cords are left out: they fail in the example's own code.

    python tools/fuzz.py [SECONDS_PER_CHUTE]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from chutes_testing.running import run_chute

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)
TARGETS = [
    # (reference, file to serve it from, extra schemathesis arguments)
    (
        "example:chute",
        ROOT / "tests" / "seeds" / "example.py",
        ["--exclude-path-regex", "^/(complex|image)$"],
    ),
    ("chutes_embeddings.demo:chute", None, []),
]


def main() -> int:
    seconds = sys.argv[1] if len(sys.argv) > 1 else "40"
    schemathesis = shutil.which("schemathesis") or str(
        Path(sys.executable).with_name("schemathesis")
    )
    failed: list[str] = []
    for ref, source, extra in TARGETS:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            if source is not None:  # served from a copy: the host writes its log beside it
                shutil.copy(source, tmp)
            with run_chute(ref, cwd=tmp, env={"HF_HUB_OFFLINE": "1"}, ready_timeout=120) as chute:
                failed += fuzz(schemathesis, ref, chute, seconds, extra)
    if failed:
        print(f"schema fuzzing failed for: {', '.join(failed)}")
        return 1
    return 0


def fuzz(schemathesis: str, ref: str, chute: Any, seconds: str, extra: list[str]) -> list[str]:
    """Fuzz one served chute; returns ``[ref]`` when schemathesis found a failure."""
    command = [
        schemathesis, "run", f"{chute.url}/openapi.json",
        "--checks", CHECKS,
        "--max-time", seconds,
        "--seed", "1",
        "--request-timeout", "30",
        "--warnings", "off",
        *extra,
    ]  # fmt: skip
    print(f"== {ref}: {' '.join(command[1:])}", flush=True)
    if subprocess.run(command, env={**os.environ, "NO_COLOR": "1"}).returncode:
        print(chute.tail(), flush=True)
        return [ref]
    return []


if __name__ == "__main__":
    sys.exit(main())
