"""Every `chutes ...` command the seeds' documents name exists, takes the options they show,
and is in the README's command table."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from chutes_cli import app

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT.parent / "shared" / "seeds"
SEED_TEXT = Path(__file__).with_name("seed_commands.txt")
#: `deploy` takes the installed targets' options, known only once plugins load.
DYNAMIC = {"deploy", "undeploy"}


def seed_command_lines() -> list[str]:
    """`chutes …` lines from the seeds (a copy is kept beside this test for CI without them)."""
    if SEEDS.is_dir():
        text = "\n".join(p.read_text() for p in sorted(SEEDS.glob("*.md")))
        found = sorted(set(re.findall(r"(?:^|`|\s)(chutes [a-z][^`\n]*)", text)))
        return [
            line.strip()
            for line in found
            if not line.startswith(("chutes platform", "chutes are", "chutes is"))
        ]
    return SEED_TEXT.read_text().splitlines()


def resolve(words: list[str]):
    command = typer.main.get_command(app)
    path = []
    for word in words:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, path = sub, [*path, word]
    return command, path


def in_readme_table(path: list[str]) -> bool:
    """A row names ``chutes A B``, or ``chutes A`` with ``B`` among its verbs (``list·get·delete``)."""
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("|")]
    whole, group = f"chutes {' '.join(path)}", f"chutes {' '.join(path[:-1])} "
    return any(
        whole in row or (len(path) > 1 and re.search(rf"`{group}[^`]*\b{path[-1]}\b", row))
        for row in rows
    )


def test_every_seed_command_exists_with_its_options() -> None:
    checked = set()
    for line in seed_command_lines():
        words = line.split()[1:]
        command, path = resolve(words)
        if not path:
            continue  # prose, such as "chutes for ..."
        checked.add(" ".join(path))
        assert in_readme_table(path), f"chutes {' '.join(path)} is not in the README's table"
        if path[0] in DYNAMIC:
            continue
        flags = {flag for param in command.params for flag in param.opts}
        for option in re.findall(r"(--[a-z][a-z-]*)", line):
            assert option in flags, (
                f"`{line}`: {option} is not an option of chutes {' '.join(path)}"
            )
    assert {
        "register", "auth login", "keys create", "chutes versions", "chutes rollback",
        "chutes logs", "chutes validate", "nodes list", "account usage", "account alerts",
        "deploy", "build", "share", "warmup", "images list", "images get", "chutes list",
        "chutes get", "chutes delete",
    } <= checked  # fmt: skip


def test_the_upstream_0_6_commands_exist() -> None:
    for words in (
        ["secrets", "create"],
        ["secrets", "list"],
        ["report"],
        ["startup-logs"],
        ["login"],
    ):
        assert resolve(words)[1] == words
