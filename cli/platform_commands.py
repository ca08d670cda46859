"""The platform commands: chutes, images, keys, share, warmup (deploying is ``chutes deploy``).

Each names the platform endpoint it calls in its help. Exit statuses are those
of :mod:`chutes_cli.exits`; every command that prints data takes ``--json``.
The account, register/login, secrets and report commands are in
:mod:`chutes_cli.account_commands`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from chutes_cli import exits

ConfigOption = Annotated[Path | None, typer.Option("--config-path", help="Platform config file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOption = Annotated[
    bool, typer.Option("--yes", "-y", envvar=exits.YES_ENV, help="Do not ask for confirmation.")
]


@contextmanager
def platform(config_path: Path | None, command: str) -> Iterator[Any]:
    """A platform client; a platform error becomes one line and its exit status."""
    from chutes_cli.platform import PlatformClient, PlatformConfig, PlatformError

    try:
        with PlatformClient(PlatformConfig.load(config_path)) as client:
            yield client
    except PlatformError as exc:
        exits.fail(command, exc)


def no_endpoint(command: str, what: str, instead: str) -> None:
    """Fail with status 5: the public platform API has no endpoint for ``what``."""
    from chutes_cli.platform import NoEndpointError

    exits.fail(
        command,
        NoEndpointError(f"the chutes platform API has no public endpoint for {what}; {instead}"),
    )


def dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def show(items: Any, columns: list[str], as_json: bool, title: str) -> None:
    """A Rich table, or JSON with --json."""
    if isinstance(items, dict) and "items" in items:
        items = items["items"]
    if as_json:
        dump(items)
        return
    from rich.console import Console
    from rich.table import Table

    rows = items if isinstance(items, list) else [items]
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[_cell(row.get(column, "")) for column in columns])
    Console().print(table)


def _cell(value: Any) -> str:
    """A nested object (a chute's image) shows by its name; JSON has it whole."""
    if isinstance(value, dict):
        return str(value.get("name") or next(iter(value.values()), ""))
    return str(value)


# Platform resources ------------------------------------------------------------------
chutes_app = typer.Typer(help="Chutes deployed on the platform (/chutes/).", no_args_is_help=True)
images_app = typer.Typer(help="Images built on the platform (/images/).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (/api_keys/).", no_args_is_help=True)

CHUTE_COLUMNS = ["chute_id", "name", "version", "public", "image"]
IMAGE_COLUMNS = ["image_id", "name", "tag", "status", "public"]
KEY_COLUMNS = ["api_key_id", "name", "admin", "scopes"]


def resource_commands(app: typer.Typer, path: str, columns: list[str], noun: str) -> None:
    """``list``, ``get`` and ``delete`` over ``/PATH/``."""

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
        yes: YesOption = False,
        as_json: JsonOption = False,
        config_path: ConfigOption = None,
    ) -> None:
        command = f"{noun} delete"
        if not exits.confirm(
            f"Delete {noun.rstrip('s')} {id_or_name}?", yes=yes, command=command, destructive=True
        ):
            exits.fail(command, "not deleted: the deletion was not confirmed", code=exits.FAILED)
        with platform(config_path, command) as client:
            answer = client.request("DELETE", f"/{path}/{id_or_name}")
        if as_json:
            dump({"deleted": id_or_name, "answer": answer})
        else:
            typer.echo(f"deleted {id_or_name}")

    list_.__doc__ = f"List {noun} (GET /{path}/)."
    get.__doc__ = f"Show one of the {noun} by id or name (GET /{path}/ID)."
    delete.__doc__ = f"Delete one of the {noun} (DELETE /{path}/ID); asks unless --yes."
    app.command("list")(list_)
    app.command("get")(get)
    app.command("delete")(delete)


resource_commands(chutes_app, "chutes", CHUTE_COLUMNS, "chutes")
resource_commands(images_app, "images", IMAGE_COLUMNS, "images")
resource_commands(keys_app, "api_keys", KEY_COLUMNS, "keys")


@keys_app.command("create")
def create_key(
    name: Annotated[str, typer.Option("--name", help="A name for the key.")],
    admin: Annotated[bool, typer.Option("--admin", help="Full access.")] = False,
    images: Annotated[bool, typer.Option("--images", help="Access to images.")] = False,
    chute_ids: Annotated[
        list[str] | None,
        typer.Option("--chute-ids", help="Access to these chutes only (repeatable)."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Limit the scopes to one verb: read, write, delete, invoke."),
    ] = None,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Create an API key, optionally limited in scope (POST /api_keys/)."""
    if action is not None and action not in {"read", "write", "delete", "invoke"}:
        exits.fail(
            "keys create",
            f"--action {action!r} is not one of read, write, delete, invoke",
            code=exits.BAD_INPUT,
        )
    verb = {"action": action} if action else {}
    scopes: list[dict[str, Any]] = []
    if images:
        scopes.append({"object_type": "images", **verb})
    scopes += [
        {"object_type": "chutes", "object_id": chute_id, **verb} for chute_id in chute_ids or []
    ]
    if not admin and not scopes:
        exits.fail("keys create", "give --admin, --images or --chute-ids", code=exits.BAD_INPUT)
    with platform(config_path, "keys create") as client:
        key = client.request(
            "POST", "/api_keys/", json={"name": name, "admin": admin, "scopes": scopes}
        )
    if as_json:
        dump(key)
    else:
        typer.echo(f"created key {key['name']} ({key['api_key_id']}): {key['secret_key']}")
        typer.echo("keep it now: the secret is not shown again")


# Versions and logs -------------------------------------------------------------------
@chutes_app.command("versions")
def versions(
    chute: Annotated[str, typer.Argument(help="The chute's name or id.")],
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """List a chute's versions. The public API keeps only the current one (exit status 5)."""
    no_endpoint(
        "chutes versions",
        "a chute's version history (GET /chutes/ID has only the current version)",
        f"`chutes chutes get {chute}` shows the current version",
    )


@chutes_app.command("rollback")
def rollback(
    chute: Annotated[str, typer.Argument(help="The chute's name or id.")],
    version: Annotated[str, typer.Option("--version", help="The version to go back to.")],
    yes: YesOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Go back to an earlier version. The public API cannot (exit status 5)."""
    no_endpoint(
        "chutes rollback",
        "rolling a chute back",
        "deploy the earlier code again with `chutes deploy REF --accept-fee`",
    )


@chutes_app.command("logs")
def logs(
    chute: Annotated[str, typer.Argument(help="The chute's name or id.")],
    build_logs: Annotated[
        bool, typer.Option("--build-logs", help="The build log of the chute's image.")
    ] = False,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Only this instance's logs.")
    ] = None,
    backfill: Annotated[
        int, typer.Option("--backfill", min=0, help="Lines of history per instance.")
    ] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, for scripts.")
    ] = False,
    config_path: ConfigOption = None,
) -> None:
    """A chute's logs: its image's build log, or its instances' logs.

    --build-logs: GET /chutes/ID for its image, then GET /images/IMAGE/logs.
    Otherwise GET /instances/INSTANCE/logs for each instance (private chutes only).
    """
    command = "chutes logs"
    with platform(config_path, command) as client:
        found = client.request("GET", f"/chutes/{chute}")
        if build_logs:
            image = found.get("image")
            image_id = image.get("image_id") if isinstance(image, dict) else None
            if not image_id:
                exits.fail(command, f"the platform did not say which image {chute} uses")
            streams: list[tuple[str, str, dict[str, Any] | None]] = [
                ("build", f"/images/{image_id}/logs", None)
            ]
        else:
            ids = [
                i.get("instance_id") for i in found.get("instances") or [] if isinstance(i, dict)
            ]
            if instance:
                ids = [instance]
            if not ids:
                exits.fail(
                    command,
                    f"{chute} has no running instance; start one with `chutes warmup {chute}` "
                    "or read its build log with --build-logs",
                )
            streams = [(str(i), f"/instances/{i}/logs", {"backfill": backfill}) for i in ids if i]
        for source, path, params in streams:
            for line in client.stream_lines(path, params=params):
                if not line.strip():
                    continue
                if as_json:
                    typer.echo(json.dumps({"source": source, "line": line}))
                else:
                    typer.echo(line)


# Sharing and warm-up -------------------------------------------------------------------
def share(
    chute_id: Annotated[str, typer.Option("--chute-id", help="The chute's name or id.")],
    user_id: Annotated[str, typer.Option("--user-id", help="The user's name or id.")],
    remove: Annotated[bool, typer.Option("--remove", help="Stop sharing.")] = False,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Share a chute with another user, or stop (POST /chutes/share, /chutes/unshare)."""
    action = "unshare" if remove else "share"
    with platform(config_path, "share") as client:
        answer = client.request(
            "POST",
            f"/chutes/{action}",
            json={"chute_id_or_name": chute_id, "user_id_or_name": user_id},
        )
    if as_json:
        dump({"chute": chute_id, "user": user_id, "shared": not remove, "answer": answer})
    else:
        typer.echo(f"{'stopped sharing' if remove else 'shared'} {chute_id} with {user_id}")


def warmup(
    chute: Annotated[str, typer.Argument(help="The chute's name or id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per progress line.")
    ] = False,
    config_path: ConfigOption = None,
) -> None:
    """Start an instance of a chute and wait for it, printing progress (GET /chutes/warmup/ID).

    A line that is a warm-up status document (``chutes.warmup/v1``, what
    ``/_chutes/warmup`` serves) is shown as one line of phase and progress.
    """
    from chutes_core.progress import describe

    with platform(config_path, "warmup") as client:
        for line in client.stream_lines(f"/chutes/warmup/{chute}"):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"status": line}
            if not isinstance(event, dict):
                event = {"status": event}
            if as_json:
                typer.echo(json.dumps(event))
            else:
                typer.echo(describe(event) or line)


def register(app: typer.Typer, command: Callable[..., Any]) -> None:
    """Attach these commands to the main CLI."""
    from chutes_cli import account_commands
    from chutes_cli.validate import validate

    command("share")(share)
    command("warmup")(warmup)
    chutes_app.command("validate")(validate)
    command("validate")(validate)
    app.add_typer(chutes_app, name="chutes")
    app.add_typer(images_app, name="images")
    app.add_typer(keys_app, name="keys")
    account_commands.register_commands(app, command)
