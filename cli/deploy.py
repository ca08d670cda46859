"""``chutes deploy`` and the platform commands: chutes, images, keys, share, warmup."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOption = Annotated[Path | None, typer.Option("--config-path", help="Platform config file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
#: Set to 1 to deploy onto Ray without GPUs (the same as --cpu-only).
CPU_ONLY_ENV = "CHUTES_RAY_CPU_ONLY"


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


class Target(str, Enum):
    platform = "platform"
    ray = "ray"


def deploy(
    ref: Annotated[
        str, typer.Argument(help="The chute: module:attr, path/to/file.py:attr or pkg.module:attr.")
    ],
    accept_fee: Annotated[
        bool, typer.Option("--accept-fee", help="Accept the deployment fee.")
    ] = False,
    public: Annotated[bool, typer.Option("--public", help="Make the chute public.")] = False,
    logo: Annotated[Path | None, typer.Option("--logo", help="A logo image for the chute.")] = None,
    target: Annotated[
        Target, typer.Option("--target", help="Where to deploy: the platform, or Ray Serve.")
    ] = Target.platform,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray: the cluster's address (default: RAY_ADDRESS, else a local Ray head).",
        ),
    ] = None,
    cpu_only: Annotated[
        bool,
        typer.Option(
            "--cpu-only",
            envvar=CPU_ONLY_ENV,
            help="Ray: ask for no GPUs, whatever the node selector says (CPU-only machines).",
        ),
    ] = False,
    route_prefix: Annotated[
        str, typer.Option("--route-prefix", help="Ray: the HTTP path prefix of the chute.")
    ] = "/",
    http_host: Annotated[
        str | None,
        typer.Option("--http-host", help="Ray: the address Serve binds (when it starts Serve)."),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option("--http-port", help="Ray: the port Serve binds (when it starts Serve)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Print what is sent.")] = False,
    config_path: ConfigOption = None,
) -> None:
    """Deploy a chute to the platform, or onto Ray Serve with --target ray."""
    if target is Target.ray:
        _deploy_to_ray(
            ref,
            address=address,
            cpu_only=cpu_only,
            route_prefix=route_prefix,
            http_host=http_host,
            http_port=http_port,
            debug=debug,
        )
        return

    from chutes_cli.build import confirm
    from chutes_cli.platform import PlatformError, chute_payload
    from chutes_core.refs import RefError, load_ref

    try:
        chute = load_ref(ref)
    except RefError as exc:
        typer.echo(f"chutes deploy: {exc}", err=True)
        raise typer.Exit(2) from None
    source = _source_file(ref)
    if not confirm(f"Upload {source.name} and deploy {chute.name}?", yes=yes):
        raise typer.Exit(1)
    with platform(config_path, "deploy") as client:
        logo_id = client.upload_logo(logo) if logo else None
        payload = chute_payload(chute, ref=ref, source=source, public=public, logo_id=logo_id)
        if debug:
            typer.echo(json.dumps(payload, indent=2, default=str))
        try:
            answer = client.deploy(payload, accept_fee=accept_fee)
        except PlatformError as exc:
            if exc.status == 402:
                fee = _fee(exc.body)
                typer.echo(
                    f"chutes deploy: deploying {chute.name} costs "
                    f"{f'${fee}' if fee is not None else 'a fee'} (one time); "
                    "run again with --accept-fee to accept it",
                    err=True,
                )
                raise typer.Exit(1) from None
            if exc.status == 409:
                typer.echo(
                    f"chutes deploy: a chute named {chute.name!r} already exists; "
                    f"delete it (chutes chutes delete {chute.name}) or choose another name",
                    err=True,
                )
                raise typer.Exit(1) from None
            raise
    typer.echo(
        f"deployed chute {chute.name} chute_id={answer['chute_id']} version={answer['version']}"
    )


def _fee(body: Any) -> Any:
    """The fee in a 402 answer: ``{"detail": {"fee": ...}}`` or ``{"fee": ...}``."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, dict) and "fee" in detail:
        return detail["fee"]
    return body.get("fee")


def _source_file(ref: str) -> Path:
    """The file holding the chute's module (loaded already by ``load_ref``)."""
    import sys

    target = ref.partition(":")[0]
    if target.endswith(".py"):
        return Path(target)
    module = sys.modules[target]
    return Path(module.__file__ or "")


def _deploy_to_ray(
    ref: str,
    *,
    address: str | None,
    cpu_only: bool,
    route_prefix: str,
    http_host: str | None,
    http_port: int | None,
    debug: bool,
) -> None:
    from chutes_core.deploy_ray import deploy as deploy_to_ray
    from chutes_core.errors import ChutesError

    try:
        result = deploy_to_ray(
            ref,
            address=address,
            cpu_only=cpu_only,
            route_prefix=route_prefix,
            http_host=http_host,
            http_port=http_port,
            progress=lambda line: typer.echo(line, err=True),
        )
    except ChutesError as exc:
        typer.echo(f"chutes deploy: {exc}", err=True)
        raise typer.Exit(1) from None
    if debug:
        typer.echo(json.dumps(result.options, indent=2))
    typer.echo(f"deployed {result.application} on Ray ({result.address}): {result.url}")


def undeploy(
    ref: Annotated[str, typer.Argument(help="The chute: a reference or its name.")],
    target: Annotated[
        Target,
        typer.Option(
            "--target", help="Only ray: platform chutes are deleted with `chutes chutes delete`."
        ),
    ] = Target.ray,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="The Ray cluster's address (default: RAY_ADDRESS, else the local Ray head).",
        ),
    ] = None,
) -> None:
    """Remove a chute deployed with --target ray."""
    if target is not Target.ray:
        typer.echo(
            "chutes undeploy: only --target ray; use `chutes chutes delete` for the platform",
            err=True,
        )
        raise typer.Exit(2)
    from chutes_core.deploy_ray import undeploy as undeploy_from_ray
    from chutes_core.errors import ChutesError

    try:
        name = undeploy_from_ray(ref, address=address)
    except ChutesError as exc:
        typer.echo(f"chutes undeploy: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"removed {name} from Ray")


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
    command("deploy")(deploy)
    command("undeploy")(undeploy)
    command("share")(share)
    command("warmup")(warmup)
    app.add_typer(chutes_app, name="chutes")
    app.add_typer(images_app, name="images")
    app.add_typer(keys_app, name="keys")
