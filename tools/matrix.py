"""Run every nox session, one after another, and print each one's time.

Usage: python3 tools/matrix.py [session ...]

Installs nox into .venv-tools on first use. Exits non-zero if any session
fails. The last lines are a table of sessions with their outcome and time,
then the total of tests passed and failed across sessions, and how many
distinct tests that is (the core suite runs in several sessions).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".venv-tools"
PYTEST_SUMMARY = re.compile(r"=+ (.*?) in [\d.]+s")
#: pytest's short summary with -rfEp: one line per passed, failed or erroring test.
OUTCOME_LINE = re.compile(r"^(PASSED|FAILED|ERROR) (\S.*?)(?: - .*)?$")


def tools_python() -> str:
    python = TOOLS / "bin" / "python"
    if not python.exists():
        venv.create(TOOLS, with_pip=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                str(ROOT / "constraints.txt"),
                "nox>=2024.4",
            ],
            check=True,
        )
    return str(python)


def counts(output: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for match in PYTEST_SUMMARY.finditer(output):
        for number, word in re.findall(r"(\d+) (\w+)", match.group(1)):
            found[word] = found.get(word, 0) + int(number)
    # pytest -q ends with a bare "N passed in Xs" line
    for line in output.splitlines():
        m = re.fullmatch(r"((?:\d+ \w+(?:, )?)+) in [\d.]+s(?: \(.*\))?", line.strip())
        if m:
            for number, word in re.findall(r"(\d+) (\w+)", m.group(1)):
                found[word] = found.get(word, 0) + int(number)
    return found


def node_ids(output: str) -> set[str]:
    """The tests pytest reported (passed, failed or erroring) in a session's output."""
    found = set()
    for line in output.splitlines():
        match = OUTCOME_LINE.match(line.strip())
        if match:
            found.add(match.group(2))
    return found


def main(argv: list[str]) -> int:
    python = tools_python()
    nox = [python, "-m", "nox", "-f", str(ROOT / "noxfile.py")]
    listing = subprocess.run([*nox, "-l", "--json"], capture_output=True, text=True)
    if listing.returncode != 0:
        sys.exit(f"nox could not list the sessions:\n{listing.stderr}")
    sessions = [s["session"] for s in json.loads(listing.stdout)]
    if argv:
        sessions = [s for s in sessions if s in argv or s.split("(")[0] in argv]
    results = []
    distinct: set[str] = set()
    # Every test named in the short summary, so that tests run in several sessions count once.
    environ = {**os.environ, "PYTEST_ADDOPTS": f"{os.environ.get('PYTEST_ADDOPTS', '')} -rfEp"}
    began = time.monotonic()
    for session in sessions:
        print(f"\n===== nox -s {session}", flush=True)
        start = time.monotonic()
        process = subprocess.Popen(
            [*nox, "-s", session],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=environ,
        )
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            lines.append(line)
        code = process.wait()
        output = "".join(lines)
        tests = counts(output)
        distinct |= node_ids(output)
        if code == 0 and "no tests ran" in output:
            code = 5  # a session that collected nothing is a failure
        results.append((session, code, time.monotonic() - start, tests))
    total = time.monotonic() - began
    print("\n===== matrix summary")
    print(f"{'session':<34} {'result':<8} {'time':>8}  tests")
    passed = failed = 0
    for session, code, seconds, tests in results:
        passed += tests.get("passed", 0)
        failed += tests.get("failed", 0) + tests.get("error", 0) + tests.get("errors", 0)
        detail = ", ".join(f"{n} {w}" for w, n in sorted(tests.items())) or "-"
        outcome = "ok" if code == 0 else f"FAIL({code})"
        print(f"{session:<34} {outcome:<8} {seconds:>7.0f}s  {detail}")
    print(f"{'total':<34} {'':<8} {total:>7.0f}s")
    bad = [s for s, code, _, _ in results if code != 0]
    if bad:
        print(f"failed sessions: {', '.join(bad)}")
    print(f"{passed} passed, {failed} failed; {len(distinct)} distinct tests")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main(sys.argv[1:]))
