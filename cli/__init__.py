"""The ``chutes`` command line.

Each command imports what it needs inside its body, so ``chutes --help``
stays fast and never imports an engine. ``chutes run`` starts every
container, so it is parsed without building the rest of the CLI at all.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"] and not {"--help", "-h"} & set(args):
        from chutes_cli import run

        raise SystemExit(run.main(args[1:]))
    from chutes_cli.commands import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from chutes_cli.commands import app

        return app
    raise AttributeError(name)
