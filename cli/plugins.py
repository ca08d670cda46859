"""``chutes plugins``: what is installed, what it provides, what failed."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def plugins(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a stable JSON document instead of a table.")
    ] = False,
) -> None:
    """List installed plugins (hooks, templates, kernels, deploy targets) and load failures."""
    from chutes_cli.deploy import installed_targets
    from chutes_core.plugins import PluginManager

    # Failures are shown below; strict mode is for hosts, not for listing.
    manager = ctx.obj if isinstance(ctx.obj, PluginManager) else PluginManager(strict=False)
    manager.load()
    infos = manager.info()
    targets = installed_targets(manager)  # with the built-in one, which wins a clash
    if as_json:
        document = {
            "plugins": [
                {**info.to_dict(), "deploy_targets": targets.by_plugin(info.name)} for info in infos
            ],
            "failures": [failure.to_dict() for failure in manager.failures],
            "skipped": sorted(manager.skipped),
            "deploy_target_clashes": targets.clashes,
        }
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="chutes plugins")
    for column in ("plugin", "distribution", "hooks", "templates", "kernels", "deploy targets"):
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
            ", ".join(targets.by_plugin(info.name)) or "-",
        )
    if infos:
        console.print(table)
    else:
        console.print("No plugins installed. Try: pip install chutes-embeddings")
    for failure in manager.failures:
        console.print(f"[bold red]failed[/] {failure.name} ({failure.target}): {failure.error}")
    for name, owners in targets.clashes.items():
        console.print(
            f"[bold red]clash[/] deploy target {name!r} is registered by "
            f"{' and '.join(owners)}: "
            + ("the built-in one is used" if name in targets else "neither is used")
        )
    for name in sorted(manager.skipped):
        console.print(f"[dim]skipped {name} (CHUTES_PLUGINS / CHUTES_DISABLE_PLUGINS)[/]")
