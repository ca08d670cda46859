"""The ``chutes`` command line (``chutes_cli``, in ``cli/``): the commands, the
image build (:mod:`chutes_cli.image_build`), the platform client
(:mod:`chutes_cli.platform`) and the built-in ``platform`` deploy target.

It sits on top: it imports the runtime and the core, and neither imports it.
Each command imports what it needs inside its body, so ``chutes --help``
stays fast, never imports an engine and loads no plugin. ``chutes run``
starts every container, so it is parsed without building the rest of the
CLI at all.
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
