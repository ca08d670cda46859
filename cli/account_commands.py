"""Account commands: register, auth login, account, nodes, secrets, report, startup-logs.

Each calls the public platform endpoint named in its help; where the public
API has none for what a command would do (``account alerts``), it says so and
exits with status 5 (:mod:`chutes_cli.exits`) instead of guessing one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from chutes_cli import exits
from chutes_cli.platform_commands import (
    ConfigOption,
    JsonOption,
    YesOption,
    dump,
    no_endpoint,
    platform,
    resource_commands,
    show,
)

WalletsOption = Annotated[
    Path | None,
    typer.Option(
        "--wallets-path", help="Bittensor wallets folder [default: ~/.bittensor/wallets]."
    ),
]
WalletOption = Annotated[str, typer.Option("--wallet", help="Wallet name.")]
HotkeyOption = Annotated[str, typer.Option("--hotkey", help="Hotkey name in the wallet.")]
REGISTRATION_TOKEN_URL = "https://rtok.chutes.ai/users/registration_token"
PUBLIC_API = "https://api.chutes.ai"

auth_app = typer.Typer(help="Sign in to the platform.", no_args_is_help=True)
account_app = typer.Typer(help="Your account: usage and alerts.", no_args_is_help=True)
nodes_app = typer.Typer(help="GPU nodes on the platform (/nodes/).", no_args_is_help=True)
secrets_app = typer.Typer(help="Secrets your chutes read (/secrets/).", no_args_is_help=True)


# Register and log in ------------------------------------------------------------------
def register(
    username: Annotated[str, typer.Option("--username", help="The username to register.")],
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CHUTES_REGISTRATION_TOKEN",
            help=f"Registration token (get one at {REGISTRATION_TOKEN_URL}).",
        ),
    ] = None,
    wallets_path: WalletsOption = None,
    wallet: WalletOption = "default",
    hotkey: HotkeyOption = "default",
    yes: YesOption = False,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Create an account signed with your Bittensor hotkey (POST /users/register).

    Writes the config file (~/.chutes/config.ini, or CHUTES_CONFIG_PATH) with the
    hotkey, which then signs every request. Needs the wallet extra:
    pip install 'chutes[wallet]'.
    """
    from chutes_cli.platform import (
        PlatformClient,
        PlatformConfig,
        PlatformConfigError,
        PlatformError,
        api_url,
    )
    from chutes_cli.platform import config_path as where_config
    from chutes_cli.wallet import Wallet, WalletError

    command = "register"
    target = where_config(config_path)
    try:
        keys = Wallet.load(wallet, hotkey, wallets_path)
        base_url = api_url()
    except (WalletError, PlatformConfigError) as exc:
        exits.fail(command, exc)
    if not token and exits.interactive():
        typer.echo(f"Get a registration token at {REGISTRATION_TOKEN_URL}", err=True)
        token = typer.prompt("Registration token").strip()
    if not token:
        exits.fail(
            command,
            f"no registration token: get one at {REGISTRATION_TOKEN_URL} (from this machine) "
            "and pass --token or set CHUTES_REGISTRATION_TOKEN",
            code=exits.BAD_INPUT,
        )
    if target.exists() and not exits.confirm(
        f"Replace {target}?", yes=yes, command=command, destructive=True
    ):
        exits.fail(command, f"not registered: {target} was kept")
    body = json.dumps({"username": username, "coldkey": keys.coldkey_ss58}).encode()
    headers = {"content-type": "application/json", **keys.hotkey.signed_headers(body)}
    anonymous = PlatformConfig(base_url=base_url, api_key="", username=None, path=target)
    try:
        with PlatformClient(anonymous) as client:
            user = client.request(
                "POST", _register_url(base_url), content=body, headers=headers,
                params={"token": token},
            )  # fmt: skip
    except PlatformError as exc:
        exits.fail(command, exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "[api]\n"
        f"base_url = {base_url}\n\n"
        "[auth]\n"
        f"username = {user.get('username', username)}\n"
        f"user_id = {user['user_id']}\n"
        f"hotkey_seed = {keys.hotkey.seed_hex}\n"
        f"hotkey_name = {keys.hotkey.name}\n"
        f"hotkey_ss58address = {keys.hotkey.ss58_address}\n\n"
        "[payment]\n"
        f"address = {user.get('payment_address', '')}\n"
    )
    target.chmod(0o600)  # it holds the hotkey's seed
    if as_json:
        dump({**user, "config_path": str(target)})
        return
    typer.echo(f"registered {user.get('username', username)} (user_id {user['user_id']})")
    typer.echo(f"wrote {target}")
    if user.get("fingerprint"):
        typer.echo(f"fingerprint (your login secret, keep it safe): {user['fingerprint']}")
    if user.get("payment_address"):
        typer.echo(f"add balance by sending tao to {user['payment_address']}")


def _register_url(base_url: str) -> str:
    """Registration on the public platform goes through its token host, as upstream's does."""
    if base_url.startswith(PUBLIC_API):
        return REGISTRATION_TOKEN_URL.rsplit("/", 1)[0] + "/register"
    return "/users/register"


@auth_app.command("login")
def login(
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="CHUTES_API_KEY",
            help="Save this API key in the config after checking it (GET /users/me).",
        ),
    ] = None,
    wallets_path: WalletsOption = None,
    wallet: Annotated[
        str | None, typer.Option("--wallet", help="Sign with this wallet, not the config's hotkey.")
    ] = None,
    hotkey: HotkeyOption = "default",
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open the URL (only in a terminal).")
    ] = True,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Sign in: save an API key, or print a hotkey-signed browser login URL.

    With --api-key (or CHUTES_API_KEY): check the key (GET /users/me) and save it
    in the config. Otherwise: sign a login nonce (GET /idp/cli_login/nonce) with
    the config's hotkey, or --wallet's, and print the /idp/cli_login URL.
    """
    from urllib.parse import urlencode

    from chutes_cli.platform import PlatformClient, PlatformConfig, PlatformError, api_url
    from chutes_cli.platform import config_path as where_config
    from chutes_cli.wallet import Hotkey, Wallet, WalletError

    command = "auth login"
    target = where_config(config_path)
    try:
        if api_key:
            base_url = api_url()
            checking = PlatformConfig(
                base_url=base_url, api_key=api_key, username=None, path=target
            )
            with PlatformClient(checking) as client:
                me = client.request("GET", "/users/me")
            _save_api_key(target, base_url, api_key, me)
            if as_json:
                dump({"username": me.get("username"), "user_id": me.get("user_id"),
                      "config_path": str(target)})  # fmt: skip
            else:
                typer.echo(f"logged in as {me.get('username')}; saved the key in {target}")
            return
        if wallet:
            key, base_url = Wallet.load(wallet, hotkey, wallets_path).hotkey, api_url()
        else:
            config = PlatformConfig.load(config_path)
            if not config.hotkey_seed:
                exits.fail(
                    command,
                    f"{config.path} has no hotkey; pass --wallet NAME (and --hotkey) or --api-key",
                    code=exits.BAD_INPUT,
                )
            key, base_url = Hotkey.from_seed(config.hotkey_seed), config.base_url
        anonymous = PlatformConfig(base_url=base_url, api_key="", username=None, path=target)
        with PlatformClient(anonymous) as client:
            nonce = str(client.request("GET", "/idp/cli_login/nonce")["nonce"])
    except (PlatformError, WalletError) as exc:
        exits.fail(command, exc)
    query = {"hotkey": key.ss58_address, "signature": key.sign(nonce.encode()), "nonce": nonce}
    url = f"{base_url}/idp/cli_login?{urlencode(query)}"
    if as_json:
        dump({"url": url, "hotkey": key.ss58_address})
        return
    if browser and exits.interactive():
        import webbrowser

        webbrowser.open(url)
    typer.echo(url)


def _save_api_key(target: Path, base_url: str, api_key: str, me: dict[str, Any]) -> None:
    import configparser

    parser = configparser.ConfigParser()
    if target.is_file():
        parser.read(target)
    for section in ("api", "auth"):
        if not parser.has_section(section):
            parser.add_section(section)
    parser.set("api", "base_url", base_url)
    parser.set("auth", "api_key", api_key)
    for field in ("username", "user_id"):
        if me.get(field):
            parser.set("auth", field, str(me[field]))
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        parser.write(out)
    target.chmod(0o600)


# Account and nodes ---------------------------------------------------------------------
@account_app.command("usage")
def usage(
    per_chute: Annotated[bool, typer.Option("--per-chute", help="One row per chute.")] = False,
    chute_id: Annotated[str | None, typer.Option("--chute-id", help="Only this chute.")] = None,
    start: Annotated[str | None, typer.Option("--start", help="From (ISO date).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Until (ISO date).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows per page.")] = 24,
    page: Annotated[int, typer.Option("--page", min=0, help="Page number.")] = 0,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Your usage, by hour: amount in USD and invocations (GET /users/me/usage)."""
    params: dict[str, Any] = {"limit": limit, "page": page, "per_chute": str(per_chute).lower()}
    for name, value in (("chute_id", chute_id), ("start_date", start), ("end_date", end)):
        if value:
            params[name] = value
    with platform(config_path, "account usage") as client:
        answer = client.request("GET", "/users/me/usage", params=params)
    columns = (
        ["bucket", "chute_id", "amount", "count"] if per_chute else ["bucket", "amount", "count"]
    )
    show(answer, columns, as_json, "usage")


@account_app.command("alerts")
def alerts(
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Alert above this amount (USD).")
    ] = None,
    config_path: ConfigOption = None,
) -> None:
    """Billing alerts. The public API has no endpoint for them (exit status 5)."""
    no_endpoint(
        "account alerts",
        "billing alerts",
        "check `chutes account usage --json` against your threshold in a script instead",
    )


@nodes_app.command("list")
def list_nodes(
    available: Annotated[
        bool, typer.Option("--available", help="Only GPU types with idle nodes.")
    ] = False,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """GPU nodes by type: how many are idle and how many provisioned (GET /nodes/)."""
    with platform(config_path, "nodes list") as client:
        inventory = client.request("GET", "/nodes/")
    rows = [
        {"gpu": gpu, "idle": int(counts.get("idle", 0)), "provisioned": int(counts.get("provisioned", 0))}
        for gpu, counts in sorted((inventory or {}).items())
        if isinstance(counts, dict)
    ]  # fmt: skip
    if available:
        rows = [row for row in rows if row["idle"] > 0]
    show(rows, ["gpu", "idle", "provisioned"], as_json, "nodes")


# Secrets, reports and startup logs ------------------------------------------------------
SECRET_COLUMNS = ["secret_id", "key", "purpose", "created_at"]
resource_commands(secrets_app, "secrets", SECRET_COLUMNS, "secrets")


@secrets_app.command("create")
def create_secret(
    purpose: Annotated[str, typer.Option("--purpose", help="The chute (name or id) it is for.")],
    key: Annotated[str, typer.Option("--key", help="The variable name, e.g. HF_TOKEN.")],
    value: Annotated[
        str,
        typer.Option(
            "--value",
            envvar="CHUTES_SECRET_VALUE",
            help="The value; '-' reads it from stdin (keeps it out of the shell history).",
        ),
    ],
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Store a secret for one of your chutes (POST /secrets/)."""
    if value == "-":
        value = sys.stdin.read().rstrip("\n")
    if not value:
        exits.fail("secrets create", "the value is empty", code=exits.BAD_INPUT)
    with platform(config_path, "secrets create") as client:
        secret = client.request(
            "POST", "/secrets/", json={"purpose": purpose, "key": key, "value": value}
        )
    if as_json:
        dump(secret)
    else:
        typer.echo(f"stored secret {key} for {purpose} (secret_id {secret.get('secret_id')})")


def report(
    invocation_id: Annotated[str, typer.Option("--invocation-id", help="The invocation.")],
    reason: Annotated[str, typer.Option("--reason", help="What was wrong with it.")],
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """Report a bad invocation (POST /invocations/ID/report)."""
    if not reason.strip():
        exits.fail("report", "give a --reason", code=exits.BAD_INPUT)
    with platform(config_path, "report") as client:
        answer = client.request(
            "POST", f"/invocations/{invocation_id}/report", json={"reason": reason}
        )
    if as_json:
        dump(answer)
    else:
        typer.echo(str((answer or {}).get("status", f"reported {invocation_id}")))


def startup_logs(
    chute_id: Annotated[str, typer.Argument(help="The chute's id.")],
    instance: Annotated[
        str | None, typer.Option("--instance", "-i", help="Fetch this instance's log.")
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", "-l", help="Fetch the newest session's log.")
    ] = False,
    as_json: JsonOption = False,
    config_path: ConfigOption = None,
) -> None:
    """List a private chute's startup log sessions, or fetch one's chunks.

    Sessions: GET /encrypted_logs/ID/sessions; with --instance or --latest, the
    chunks: GET /encrypted_logs/ID/sessions/INSTANCE/chunks. The chunks are
    encrypted to your hotkey; this CLI prints them as sent (base64) and does not
    decrypt them.
    """
    command = "startup-logs"
    with platform(config_path, command) as client:
        sessions = client.request("GET", f"/encrypted_logs/{chute_id}/sessions") or []
        sessions.sort(key=lambda s: s.get("started_at") or 0, reverse=True)
        if not (instance or latest):
            show(sessions, ["instance_id", "started_at", "chunk_count"], as_json, "sessions")
            return
        if not sessions:
            exits.fail(command, f"{chute_id} has no startup logs (they expire after 4 hours)")
        target = instance or sessions[0]["instance_id"]
        data = client.request("GET", f"/encrypted_logs/{chute_id}/sessions/{target}/chunks")
    if as_json:
        dump(data)
        return
    typer.echo(
        f"chutes {command}: these chunks are encrypted to your hotkey; "
        "this CLI does not decrypt them",
        err=True,
    )
    for chunk in data.get("chunks", []):
        typer.echo(chunk)


def register_commands(app: typer.Typer, command: Any) -> None:
    command("register")(register)
    command("login", help="Same as `chutes auth login`.")(login)
    command("report")(report)
    command("startup-logs")(startup_logs)
    app.add_typer(auth_app, name="auth")
    app.add_typer(account_app, name="account")
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(secrets_app, name="secrets")
