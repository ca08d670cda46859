"""``chutes plugins``: what is installed, what it provides, what failed."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def plugins(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a stable JSON document instead of a table.")
    ] = False,
) -> None:
    """List installed plugins with their hooks, templates and kernels, and any load failures."""
    from chutes_core.plugins import PluginManager

    # Failures are shown below; strict mode is for hosts, not for listing.
    manager = PluginManager(strict=False).load()
    infos = manager.info()
    if as_json:
        document = {
            "plugins": [info.to_dict() for info in infos],
            "failures": [failure.to_dict() for failure in manager.failures],
            "skipped": sorted(manager.skipped),
        }
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="chutes plugins")
    for column in ("plugin", "distribution", "hooks", "templates", "kernels"):
        table.add_column(column)
    for info in infos:
        dist = f"{info.distribution} {info.version}" if info.distribution else "-"
        table.add_row(
            info.name,
            dist,
            "\n".join(info.hooks) or "-",
            ", ".join(
                f"{name} (egress {'open' if info.egress.get(name, True) else 'closed'})"
                for name in info.templates
            )
            or "-",
            ", ".join(info.kernels) or "-",
        )
    if infos:
        console.print(table)
    else:
        console.print("No plugins installed. Try: pip install chutes-embeddings")
    for failure in manager.failures:
        console.print(f"[bold red]failed[/] {failure.name} ({failure.target}): {failure.error}")
    for name in sorted(manager.skipped):
        console.print(f"[dim]skipped {name} (CHUTES_PLUGINS / CHUTES_DISABLE_PLUGINS)[/]")
