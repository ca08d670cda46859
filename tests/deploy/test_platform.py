"""The platform client and commands, against a stand-in for the platform API."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from chutes_cli import app

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_deploy_asks_for_the_fee_then_deploys_then_refuses_a_duplicate(
    config, standin, monkeypatch
) -> None:
    monkeypatch.chdir(SEEDS)
    first = run("deploy", "example:chute")
    assert first.exit_code == 3  # the platform refused (402)
    assert "costs $0.36" in first.output and "--accept-fee" in first.output
    second = run("deploy", "example:chute", "--accept-fee", "--logo", str(SEEDS / "example.py"))
    assert second.exit_code == 0, second.output
    assert "deployed chute example chute_id=" in second.output and "version=1" in second.output
    third = run("deploy", "example:chute", "--accept-fee")
    assert third.exit_code == 3 and "a chute named 'example' already exists" in third.output

    payload = standin.state.received[1]
    assert payload["name"] == "example" and payload["username"] == "test"
    assert payload["ref_str"] == "example:chute" and payload["filename"] == "example.py"
    assert "async def echo" in payload["code"]
    assert payload["node_selector"] == {
        "gpu_count": 1,
        "min_vram_gb_per_gpu": 16,
        "include": None,
        "exclude": None,
        "max_hourly_price_per_gpu": None,
    }
    assert (payload["concurrency"], payload["max_instances"]) == (4, 1)
    assert (payload["scaling_threshold"], payload["shutdown_after_seconds"]) == (0.75, 300)
    assert payload["allow_external_egress"] is False and payload["logo_id"] == "logo-1"
    cords = {c["function"]: c for c in payload["cords"]}
    assert (
        cords["image"]["public_api_path"] == "/image"
        and cords["image"]["public_api_method"] == "GET"
    )
    assert cords["image"]["output_content_type"] == "image/png"
    assert cords["echo"]["minimal_input_schema"]["title"] == "MicroArgs"
    assert payload["image"]["dockerfile"].startswith("FROM parachutes/python:3.12")


def test_listing_getting_and_deleting(config, standin) -> None:
    listing = run("chutes", "list", "--json")
    assert listing.exit_code == 0, listing.output
    (chute,) = json.loads(listing.output)
    table = run("chutes", "list")
    assert "example" in table.output and "chute_id" in table.output
    assert (
        json.loads(run("chutes", "get", "example", "--json").output)["chute_id"]
        == chute["chute_id"]
    )
    assert run("chutes", "delete", "example", "--yes").exit_code == 0
    assert json.loads(run("chutes", "list", "--json").output) == []
    missing = run("chutes", "get", "example")
    assert missing.exit_code == 3 and "HTTP 404: example not found" in missing.output


def test_keys_with_the_documented_scopes(config, standin) -> None:
    admin = run("keys", "create", "--name", "admin-key", "--admin")
    assert admin.exit_code == 0 and "created key admin-key" in admin.output
    images = run("keys", "create", "--name", "image-key", "--images", "--json")
    assert json.loads(images.output)["scopes"] == [{"object_type": "images"}]
    chute_id = "5eda1993-9f4b-5426-972c-61c33dbaf541"
    one = run("keys", "create", "--name", "foo-key", "--chute-ids", chute_id, "--json")
    assert json.loads(one.output)["scopes"] == [{"object_type": "chutes", "object_id": chute_id}]
    nothing = run("keys", "create", "--name", "useless")
    assert nothing.exit_code == 2 and "give --admin, --images or --chute-ids" in nothing.output
    names = {k["name"] for k in json.loads(run("keys", "list", "--json").output)}
    assert names == {"admin-key", "image-key", "foo-key"}
    assert run("keys", "delete", "foo-key", "--yes").exit_code == 0


def test_share_warmup_and_images(config, standin, monkeypatch) -> None:
    monkeypatch.chdir(SEEDS)
    assert run("deploy", "example:chute", "--accept-fee").exit_code == 0
    shared = run("share", "--chute-id", "example", "--user-id", "anotheruser")
    assert shared.exit_code == 0 and ("example", "anotheruser") in standin.state.shares
    run("share", "--chute-id", "example", "--user-id", "anotheruser", "--remove")
    assert ("example", "anotheruser") not in standin.state.shares
    warm = run("warmup", "example")
    assert warm.output.split() == ["cold", "starting", "hot"]
    assert run("images", "list", "--json").exit_code == 0


def test_auth_and_config_errors_are_one_line(tmp_path, monkeypatch, standin) -> None:
    monkeypatch.chdir(SEEDS)
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(tmp_path / "missing.ini"))
    missing = run("chutes", "list")
    assert missing.exit_code == 2 and len(missing.output.strip().splitlines()) == 1
    assert "no chutes config at" in missing.output

    bad = tmp_path / "bad.ini"
    bad.write_text(f"[api]\nbase_url = {standin.state.url}\n[auth]\napi_key = cpk_wrong\n")
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(bad))
    refused = run("deploy", "example:chute", "--accept-fee")
    assert refused.exit_code == 3 and len(refused.output.strip().splitlines()) == 1
    assert "refused the key" in refused.output and "HTTP 401" in refused.output

    keyless = tmp_path / "keyless.ini"
    keyless.write_text("[auth]\nusername = me\n")
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(keyless))
    assert "has no [auth] api_key" in run("chutes", "list").output

    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(bad))
    monkeypatch.setenv("CHUTES_API_URL", "http://127.0.0.1:1")
    unreachable = run("chutes", "list")
    assert (
        unreachable.exit_code == 4
        and "cannot reach the chutes API at http://127.0.0.1:1" in unreachable.output
    )


def test_warmup_shows_a_warm_up_status_document_as_phase_and_progress(
    config, standin, monkeypatch
) -> None:
    monkeypatch.chdir(SEEDS)
    run("deploy", "example:chute", "--accept-fee")  # unless an earlier test deployed it
    schema = "chutes.warmup/v1"
    downloading = {
        "schema": schema,
        "state": "starting",
        "phase": "download",
        "progress": {"done": 1_000_000, "total": 4_000_000, "unit": "bytes"},
        "elapsed": 3.25,
        "error": None,
    }
    ready = {**downloading, "state": "ready", "phase": "warmup", "progress": None}
    standin.state.warmup_lines = ["cold", json.dumps(downloading), json.dumps(ready)]
    try:
        warm = run("warmup", "example")
        as_json = run("warmup", "example", "--json")
    finally:
        del standin.state.warmup_lines
    assert warm.output.splitlines() == [
        "cold",
        "starting: download 1.0 MB / 4.0 MB (25%), 3.2s",
        "ready",
    ]
    assert [json.loads(line) for line in as_json.output.splitlines()] == [
        {"status": "cold"},
        downloading,
        ready,
    ]
