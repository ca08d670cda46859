"""The platform commands: chutes, images, keys, share, warmup (deploying is ``chutes deploy``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[Path | None, typer.Option("--config-path", help="Platform config file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@contextmanager
def platform(config_path: Path | None, command: str) -> Iterator[Any]:
    """A platform client; any platform error becomes one line and exit status 1."""
    from chutes_cli.platform import PlatformClient, PlatformConfig, PlatformError

    try:
        with PlatformClient(PlatformConfig.load(config_path)) as client:
            yield client
    except PlatformError as exc:
        typer.echo(f"chutes {command}: {exc}", err=True)
        raise typer.Exit(1) from None


def show(items: Any, columns: list[str], as_json: bool, title: str) -> None:
    """A Rich table, or JSON with --json."""
    if isinstance(items, dict) and "items" in items:
        items = items["items"]
    if as_json:
        typer.echo(json.dumps(items, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    rows = items if isinstance(items, list) else [items]
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row.get(column, "")) for column in columns])
    Console().print(table)


# Platform resources ------------------------------------------------------------------
chutes_app = typer.Typer(help="Chutes deployed on the platform.", no_args_is_help=True)
images_app = typer.Typer(help="Images built on the platform.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)

CHUTE_COLUMNS = ["chute_id", "name", "version", "public", "image"]
IMAGE_COLUMNS = ["image_id", "name", "tag", "status", "public"]
KEY_COLUMNS = ["api_key_id", "name", "admin", "scopes"]


def _resource_commands(app: typer.Typer, path: str, columns: list[str], noun: str) -> None:
    def list_(
        name: Annotated[
            str | None, typer.Option("--name", help="Only those with this name.")
        ] = None,
        as_json: JsonOption = False,
        config_path: ConfigOption = None,
    ) -> None:
        with platform(config_path, f"{noun} list") as client:
            params = {"name": name} if name else {}
            show(client.request("GET", f"/{path}/", params=params), columns, as_json, noun)

    def get(
        id_or_name: Annotated[str, typer.Argument(help="Id or name.")],
        as_json: JsonOption = False,
        config_path: ConfigOption = None,
    ) -> None:
        with platform(config_path, f"{noun} get") as client:
            show(client.request("GET", f"/{path}/{id_or_name}"), columns, as_json, noun)

    def delete(
        id_or_name: Annotated[str, typer.Argument(help="Id or name.")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        config_path: ConfigOption = None,
    ) -> None:
        if not yes and not typer.confirm(f"Delete {noun[:-1]} {id_or_name}?"):
            raise typer.Exit(1)
        with platform(config_path, f"{noun} delete") as client:
            client.request("DELETE", f"/{path}/{id_or_name}")
        typer.echo(f"deleted {id_or_name}")

    app.command("list")(list_)
    app.command("get")(get)
    app.command("delete")(delete)


_resource_commands(chutes_app, "chutes", CHUTE_COLUMNS, "chutes")
_resource_commands(images_app, "images", IMAGE_COLUMNS, "images")
_resource_commands(keys_app, "api_keys", KEY_COLUMNS, "keys")


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="A name for the key.")],
    admin: Annotated[bool, typer.Option("--admin", help="Full access.")] = False,
    images: Annotated[bool, typer.Option("--images", help="Access to images.")] = False,
    chute_ids: Annotated[
        list[str] | None,
        typer.Option("--chute-ids", help="Access to these chutes only (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Create an API key, optionally limited in scope."""
    scopes: list[dict[str, Any]] = []
    if images:
        scopes.append({"object_type": "images"})
    scopes += [{"object_type": "chutes", "object_id": chute_id} for chute_id in chute_ids or []]
    if not admin and not scopes:
        typer.echo("chutes keys create: give --admin, --images or --chute-ids", err=True)
        raise typer.Exit(2)
    with platform(config_path, "keys create") as client:
        key = client.request(
            "POST", "/api_keys/", json={"name": name, "admin": admin, "scopes": scopes}
        )
    if as_json:
        typer.echo(json.dumps(key, indent=2, sort_keys=True))
    else:
        typer.echo(f"created key {key['name']} ({key['api_key_id']}): {key['secret_key']}")
        typer.echo("keep it now: the secret is not shown again")


def share(
    chute_id: Annotated[str, typer.Option("--chute-id", help="The chute's name or id.")],
    user_id: Annotated[str, typer.Option("--user-id", help="The user's name or id.")],
    remove: Annotated[bool, typer.Option("--remove", help="Stop sharing.")] = False,
    config_path: ConfigOption = None,
) -> None:
    """Share a chute with another user (or stop sharing it)."""
    action = "unshare" if remove else "share"
    with platform(config_path, "share") as client:
        client.request(
            "POST",
            f"/chutes/{action}",
            json={"chute_id_or_name": chute_id, "user_id_or_name": user_id},
        )
    typer.echo(f"{'stopped sharing' if remove else 'shared'} {chute_id} with {user_id}")


def warmup(
    chute: Annotated[str, typer.Argument(help="The chute's name or id.")],
    config_path: ConfigOption = None,
) -> None:
    """Ask the platform to start an instance of a chute, and follow its progress."""
    with platform(config_path, "warmup") as client:
        for line in client.stream_lines(f"/chutes/warmup/{chute}"):
            if line.strip():
                typer.echo(line)


def register(app: typer.Typer, command: Callable[..., Any]) -> None:
    """Attach these commands to the main CLI."""
    command("share")(share)
    command("warmup")(warmup)
    app.add_typer(chutes_app, name="chutes")
    app.add_typer(images_app, name="images")
    app.add_typer(keys_app, name="keys")
