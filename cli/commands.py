"""The typer application behind ``chutes`` (see :func:`chutes_cli.main`)."""

from __future__ import annotations

from typing import Annotated

import typer

from chutes_cli import build as _build
from chutes_cli import deploy as _deploy
from chutes_cli import platform_commands as _platform
from chutes_cli import plugins as _plugins
from chutes_cli import run as _run_options

app = typer.Typer(
    name="chutes",
    help="Build, run and deploy chutes: GPU inference apps with pluggable engines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("run")
def run(
    ref: Annotated[str, typer.Argument(help=_run_options.REF_HELP)],
    host: Annotated[str, typer.Option(help=_run_options.HOST_HELP)] = _run_options.DEFAULT_HOST,
    port: Annotated[int, typer.Option(help=_run_options.PORT_HELP)] = _run_options.DEFAULT_PORT,
    dev: Annotated[bool, typer.Option("--dev", help=_run_options.DEV_HELP)] = False,
    no_auth: Annotated[bool, typer.Option("--no-auth", help=_run_options.NO_AUTH_HELP)] = False,
) -> None:
    """Start the runtime host: load plugins, run startup hooks, then serve the chute."""
    raise typer.Exit(_run_options.serve(ref, host, port, dev, no_auth))


app.command("build")(_build.build)
app.command("deploy", **_deploy.PASS_THROUGH)(_deploy.deploy)
app.command("undeploy", **_deploy.PASS_THROUGH)(_deploy.undeploy)
_platform.register(app, app.command)
app.command("plugins")(_plugins.plugins)
