"""Exit statuses, confirmations and one-line failures, the same for every command.

Scripts tell failures apart by the status alone (docs/deploy.md has the table):

====  ==================================================================
0     done
1     failed here for another reason (a local build broke, a question
      answered "no")
2     bad input here: a wrong option, a reference that does not load, a
      chute that does not validate, a missing or broken config file,
      a wallet that cannot be read; nothing was sent
3     the platform refused: it answered with an HTTP error (4xx or 5xx)
4     the platform could not be reached
5     the platform has no public endpoint for what was asked
====  ==================================================================

Every failure is one line on stderr: ``chutes COMMAND: what happened; what to do``.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

OK = 0
FAILED = 1
BAD_INPUT = 2
REFUSED = 3
UNREACHABLE = 4
NO_ENDPOINT = 5

#: Set to 1 (or true/yes) to answer yes to every confirmation, as ``--yes`` does.
YES_ENV = "CHUTES_YES"


def fail(command: str, error: BaseException | str, *, code: int | None = None) -> NoReturn:
    """Print ``chutes COMMAND: error`` on one line and exit.

    Without ``code``, the status comes from the error's ``exit_code`` (platform
    errors carry theirs), else 1.
    """
    if code is None:
        code = int(getattr(error, "exit_code", FAILED))
    lines = str(error).strip().splitlines() or [type(error).__name__]
    typer.echo(f"chutes {command}: {lines[0]}", err=True)
    raise typer.Exit(code)


def yes_from_env() -> bool:
    return os.environ.get(YES_ENV, "").strip().lower() in {"1", "true", "yes", "y", "on"}


def interactive() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, *, yes: bool, command: str, destructive: bool = False) -> bool:
    """Ask in a terminal; never prompt without one.

    ``--yes`` or ``CHUTES_YES`` answer yes. Without a terminal, a step that only
    sends (build, deploy) goes ahead, as upstream's did in CI; one that destroys
    something stops with status 2, since nobody was there to agree.
    """
    if yes or yes_from_env():
        return True
    if not interactive():
        if destructive:
            fail(
                command,
                f"{question.rstrip('?')} needs confirming and there is no terminal; "
                f"pass --yes (or set {YES_ENV}=1)",
                code=BAD_INPUT,
            )
        return True
    return typer.confirm(question, default=not destructive)
