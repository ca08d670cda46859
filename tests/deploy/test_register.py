"""`chutes register` and `chutes auth login`, signed with a Bittensor hotkey from a wallet folder
the test creates; the stand-in platform checks each signature with sr25519 itself."""

from __future__ import annotations

import configparser
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chutes_cli import app

from .platform_standin import API_KEY
from .platform_standin_account import NONCE, REGISTRATION_TOKEN, verify_signature

sr25519 = pytest.importorskip("sr25519", reason="needs the wallet extra (py-sr25519-bindings)")
ss58 = pytest.importorskip("scalecodec.utils.ss58", reason="needs the wallet extra (scalecodec)")


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def make_wallet(root: Path, wallet: str = "chutes-user", hotkey: str = "hk") -> dict[str, str]:
    """A wallet folder laid out as btcli writes it: coldkeypub.txt and hotkeys/<name>."""
    seed = os.urandom(32)
    public, _ = sr25519.pair_from_seed(seed)
    cold_public, _ = sr25519.pair_from_seed(os.urandom(32))
    address = ss58.ss58_encode(public, 42)
    folder = root / wallet
    (folder / "hotkeys").mkdir(parents=True)
    (folder / "hotkeys" / hotkey).write_text(json.dumps({
        "accountId": "0x" + public.hex(), "publicKey": "0x" + public.hex(),
        "secretSeed": "0x" + seed.hex(), "ss58Address": address,
    }))  # fmt: skip
    cold = ss58.ss58_encode(cold_public, 42)
    (folder / "coldkeypub.txt").write_text(json.dumps({"ss58Address": cold}))
    return {"address": address, "coldkey": cold, "seed": seed.hex()}


@pytest.fixture
def fresh(tmp_path, monkeypatch, standin) -> Path:
    """No config yet; the API is the stand-in."""
    target = tmp_path / "chutes" / "config.ini"
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(target))
    monkeypatch.setenv("CHUTES_API_URL", standin.state.url)
    for name in ("CHUTES_API_KEY", "CHUTES_YES", "CHUTES_REGISTRATION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return target


def test_register_signs_with_the_hotkey_and_writes_the_config(tmp_path, fresh, standin) -> None:
    keys = make_wallet(tmp_path / "wallets")
    result = run(
        "register", "--username", "alice", "--token", REGISTRATION_TOKEN,
        "--wallets-path", str(tmp_path / "wallets"), "--wallet", "chutes-user", "--hotkey", "hk",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    user = json.loads(result.stdout)
    # The stand-in accepted the signature: the user exists under that hotkey and coldkey.
    assert standin.state.users[keys["address"]]["coldkey"] == keys["coldkey"]
    assert user["username"] == "alice" and user["config_path"] == str(fresh)

    config = configparser.ConfigParser()
    config.read(fresh)
    assert config["api"]["base_url"] == standin.state.url
    assert config["auth"]["hotkey_ss58address"] == keys["address"]
    assert config["auth"]["hotkey_seed"] == keys["seed"]
    assert config["auth"]["user_id"] == user["user_id"]
    assert config["payment"]["address"] == user["payment_address"]
    assert fresh.stat().st_mode & 0o077 == 0  # the seed is for its owner only

    # Every later request is signed with the hotkey, and the platform accepts it.
    listed = run("nodes", "list", "--json")
    assert listed.exit_code == 0
    keys_list = run("keys", "list", "--json")
    assert keys_list.exit_code == 0, keys_list.output
    assert ("GET", "/api_keys/", keys["address"]) in standin.state.signed
    created = run("keys", "create", "--name", "from-hotkey", "--admin", "--json")
    assert (
        created.exit_code == 0 and ("POST", "/api_keys/", keys["address"]) in standin.state.signed
    )

    # The same hotkey cannot register twice: the platform refuses (409).
    again = run("register", "--username", "alice2", "--token", REGISTRATION_TOKEN,
                "--wallets-path", str(tmp_path / "wallets"), "--wallet", "chutes-user",
                "--hotkey", "hk", "--yes")  # fmt: skip
    assert again.exit_code == 3 and "already registered" in again.stderr


def test_a_signature_by_another_key_is_refused(tmp_path, fresh, standin) -> None:
    keys = make_wallet(tmp_path / "wallets")
    other = make_wallet(tmp_path / "other")
    hotkey_file = tmp_path / "wallets" / "chutes-user" / "hotkeys" / "hk"
    data = json.loads(hotkey_file.read_text())
    # A damaged file whose address is not its seed's: caught here, nothing sent.
    hotkey_file.write_text(json.dumps({**data, "ss58Address": other["address"]}))
    damaged = run("register", "--username", "bob", "--token", REGISTRATION_TOKEN,
                  "--wallets-path", str(tmp_path / "wallets"), "--wallet", "chutes-user", "--hotkey", "hk")  # fmt: skip
    assert damaged.exit_code == 2 and "does not match its seed" in damaged.stderr
    assert (
        keys["address"] not in standin.state.users and other["address"] not in standin.state.users
    )

    # The verifier itself rejects a signature over another message or by another key.
    seed = bytes.fromhex(keys["seed"])
    signature = sr25519.sign(sr25519.pair_from_seed(seed), f"{keys['address']}:1:x".encode()).hex()
    assert verify_signature(keys["address"], "1", signature, "x")
    assert not verify_signature(keys["address"], "1", signature, "y")
    assert not verify_signature(other["address"], "1", signature, "x")


def test_register_input_errors_are_status_2_and_refusals_status_3(tmp_path, fresh) -> None:
    make_wallet(tmp_path / "wallets")
    base = ["register", "--username", "carol", "--wallets-path", str(tmp_path / "wallets")]
    no_wallet = run(*base, "--token", REGISTRATION_TOKEN, "--wallet", "nope")
    assert no_wallet.exit_code == 2 and "btcli wallet new_coldkey" in no_wallet.stderr
    no_hotkey = run(
        *base, "--token", REGISTRATION_TOKEN, "--wallet", "chutes-user", "--hotkey", "x"
    )
    assert no_hotkey.exit_code == 2 and "has: hk" in no_hotkey.stderr
    bad_token = run(*base, "--token", "wrong", "--wallet", "chutes-user", "--hotkey", "hk")
    assert bad_token.exit_code == 3 and "HTTP 403" in bad_token.stderr
    assert not fresh.exists()
    missing_token = run(*base, "--wallet", "chutes-user", "--hotkey", "hk")
    assert missing_token.exit_code == 2 and "rtok.chutes.ai" in missing_token.stderr
    assert not fresh.exists()


def test_the_public_platform_registers_through_its_token_host() -> None:
    from chutes_cli.account_commands import _register_url

    assert _register_url("https://api.chutes.ai") == "https://rtok.chutes.ai/users/register"
    assert _register_url("http://127.0.0.1:8080") == "/users/register"


def test_register_keeps_an_existing_config_without_a_terminal(tmp_path, fresh) -> None:
    make_wallet(tmp_path / "wallets")
    fresh.parent.mkdir(parents=True)
    fresh.write_text("[auth]\napi_key = keep-me\n")
    result = run("register", "--username", "dave", "--token", REGISTRATION_TOKEN,
                 "--wallets-path", str(tmp_path / "wallets"), "--wallet", "chutes-user", "--hotkey", "hk")  # fmt: skip
    assert result.exit_code == 2 and "pass --yes" in result.stderr
    assert "keep-me" in fresh.read_text()


def test_auth_login_with_the_hotkey_prints_a_signed_url(tmp_path, fresh, standin) -> None:
    keys = make_wallet(tmp_path / "wallets")
    result = run("auth", "login", "--wallets-path", str(tmp_path / "wallets"),
                 "--wallet", "chutes-user", "--hotkey", "hk", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    from urllib.parse import parse_qs, urlsplit

    url = urlsplit(json.loads(result.stdout)["url"])
    assert url.path == "/idp/cli_login"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["hotkey"] == keys["address"] and query["nonce"] == NONCE
    public = bytes.fromhex(ss58.ss58_decode(keys["address"]))
    assert sr25519.verify(bytes.fromhex(query["signature"]), NONCE.encode(), public)
    plain = run("login", "--wallets-path", str(tmp_path / "wallets"), "--wallet", "chutes-user",
                "--hotkey", "hk", "--no-browser")  # fmt: skip
    assert plain.exit_code == 0 and plain.stdout.startswith(f"{standin.state.url}/idp/cli_login?")

    no_hotkey = run("auth", "login")  # no config and no wallet given
    assert no_hotkey.exit_code == 2


def test_auth_login_with_an_api_key_checks_and_saves_it(fresh, standin) -> None:
    wrong = run("auth", "login", "--api-key", "cpk_wrong")
    assert wrong.exit_code == 3 and not fresh.exists()
    result = run("auth", "login", "--api-key", API_KEY, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["username"] == "me"
    config = configparser.ConfigParser()
    config.read(fresh)
    assert config["auth"]["api_key"] == API_KEY and config["api"]["base_url"] == standin.state.url
    assert run("chutes", "list", "--json").exit_code == 0


def test_an_api_key_from_the_environment_needs_no_file(fresh, monkeypatch) -> None:
    monkeypatch.setenv("CHUTES_API_KEY", API_KEY)
    assert not fresh.exists()
    assert run("keys", "list", "--json").exit_code == 0
