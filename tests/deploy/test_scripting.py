"""Every platform command is safe to script: its exit status says who refused, errors are one
line, ``--json`` prints data, and nothing prompts without a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chutes_cli import app

SEEDS = Path(__file__).resolve().parents[1] / "seeds"
REFUSED, BAD_INPUT, UNREACHABLE, NO_ENDPOINT = 3, 2, 4, 5


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def one_line_error(result) -> str:
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.fixture
def deployed(config, standin, monkeypatch) -> str:
    monkeypatch.chdir(SEEDS)
    if not any(c["name"] == "example" for c in standin.state.chutes.values()):
        assert run("deploy", "example:chute", "--accept-fee").exit_code == 0
    return "example"


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "refused the key"),
        (402, "top up"),
        (404, "check the name"),
        (409, "exists already"),
        (422, "rejected the request's fields"),
        (429, "rate limiting"),
        (500, "run it again later"),
        (503, "run it again later"),
    ],
)
def test_every_refusal_is_status_3_on_one_line(config, standin, status, hint) -> None:
    standin.state.refuse[("GET", "/chutes/")] = (status, f"refused with {status}")
    result = run("chutes", "list", "--json")
    assert result.exit_code == REFUSED, result.output
    line = one_line_error(result)
    assert line.startswith("chutes chutes list: ") and hint in line
    assert f"refused with {status}" in line and result.stdout == ""


@pytest.mark.parametrize("status", [401, 402, 404, 409, 422, 429, 500])
def test_deploy_never_exits_0_when_refused(config, standin, monkeypatch, status) -> None:
    monkeypatch.chdir(SEEDS)
    standin.state.refuse[("POST", "/chutes/")] = (status, "no")
    result = run("deploy", "example:chute", "--accept-fee", "--json")
    assert result.exit_code == REFUSED and result.stdout == ""
    assert one_line_error(result).startswith("chutes deploy: ")


def test_a_validation_answer_is_summed_up_on_one_line(config, standin) -> None:
    detail = [{"loc": ["body", "name"], "msg": "Field required"}, {"loc": ["query"], "msg": "bad"}]
    standin.state.refuse[("POST", "/api_keys/")] = (422, detail)
    result = run("keys", "create", "--name", "k", "--admin")
    assert result.exit_code == REFUSED
    assert "HTTP 422: body.name: Field required; query: bad" in one_line_error(result)


def test_bad_input_here_is_status_2_and_sends_nothing(config, standin, monkeypatch) -> None:
    monkeypatch.chdir(SEEDS)
    sent = len(standin.state.received)
    assert run("deploy", "no_such_module:chute").exit_code == BAD_INPUT
    assert run("deploy", "example:chute", "--bogus").exit_code == BAD_INPUT
    assert run("keys", "create", "--name", "x").exit_code == BAD_INPUT
    assert run("keys", "create", "--name", "x", "--admin", "--action", "fly").exit_code == 2
    assert len(standin.state.received) == sent
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(SEEDS / "missing.ini"))
    missing = run("nodes", "list")
    assert missing.exit_code == BAD_INPUT and "chutes auth login" in one_line_error(missing)


def test_an_unreachable_platform_is_status_4(config, monkeypatch) -> None:
    monkeypatch.setenv("CHUTES_API_URL", "http://127.0.0.1:1")
    result = run("account", "usage")
    assert result.exit_code == UNREACHABLE and "CHUTES_API_URL" in one_line_error(result)


@pytest.mark.parametrize(
    ("args", "instead"),
    [
        (("chutes", "versions", "example"), "chutes chutes get example"),
        (("chutes", "rollback", "example", "--version", "v1.2.3"), "chutes deploy"),
        (("account", "alerts", "--threshold", "100"), "chutes account usage --json"),
    ],
)
def test_commands_without_a_public_endpoint_say_so(config, standin, args, instead) -> None:
    result = run(*args)
    assert result.exit_code == NO_ENDPOINT
    line = one_line_error(result)
    assert "has no public endpoint" in line and instead in line


def test_no_prompt_without_a_terminal(config, standin, deployed, monkeypatch) -> None:
    # A deletion needs --yes or CHUTES_YES when nobody can answer.
    refused = run("chutes", "delete", deployed)
    assert refused.exit_code == BAD_INPUT and "pass --yes" in one_line_error(refused)
    assert any(c["name"] == deployed for c in standin.state.chutes.values())
    monkeypatch.setenv("CHUTES_YES", "1")
    gone = run("chutes", "delete", deployed, "--json")
    assert gone.exit_code == 0 and json.loads(gone.stdout)["deleted"] == deployed


def test_json_of_the_chute_commands(config, standin, deployed) -> None:
    (listed,) = [
        c for c in json.loads(run("chutes", "list", "--json").stdout) if c["name"] == deployed
    ]
    got = json.loads(run("chutes", "get", deployed, "--json").stdout)
    assert got["chute_id"] == listed["chute_id"] and got["image"]["name"] == "foo"
    shared = json.loads(run("share", "--chute-id", deployed, "--user-id", "bob", "--json").stdout)
    assert shared["shared"] is True and shared["user"] == "bob"
    events = [json.loads(line) for line in run("warmup", deployed, "--json").stdout.splitlines()]
    assert [e["status"] for e in events] == ["cold", "starting", "hot"]
    build = run("chutes", "logs", deployed, "--build-logs", "--json")
    assert build.exit_code == 0, build.output
    lines = [json.loads(line) for line in build.stdout.splitlines()]
    assert lines[0] == {"source": "build", "line": "building foo:0.1"} and len(lines) == 3
    running = run("chutes", "logs", deployed, "--json", "--backfill", "2")
    assert [json.loads(line)["line"] for line in running.stdout.splitlines()] == [
        f"inst-{deployed} line 0",
        f"inst-{deployed} line 1",
    ]


def test_logs_of_a_chute_with_no_instance_say_what_to_do(config, standin, monkeypatch) -> None:
    monkeypatch.chdir(SEEDS)
    for chute in list(standin.state.chutes.values()):
        chute["instances"] = []
    run("deploy", "example:chute", "--accept-fee")
    result = run("chutes", "logs", "example")
    assert result.exit_code == 1 and "chutes warmup example" in one_line_error(result)


def test_json_of_deploy_and_build(config, standin, monkeypatch) -> None:
    monkeypatch.chdir(SEEDS)
    for chute in [c for c in standin.state.chutes.values() if c["name"] == "example"]:
        del standin.state.chutes[chute["chute_id"]]
    deployed = run("deploy", "example:chute", "--accept-fee", "--json")
    assert deployed.exit_code == 0, deployed.output
    answer = json.loads(deployed.stdout)
    assert answer["target"] == "platform" and answer["name"] == "example"
    assert answer["chute_id"] in standin.state.chutes and answer["version"] == "1"
    built = run("build", "example:chute", "--json", "--yes")
    assert built.exit_code == 0, built.output
    image = json.loads(built.stdout)
    assert image["where"] == "platform" and image["image_id"] in standin.state.images
    assert image["image"] == "chutes/foo:0.1"


def test_json_of_keys_nodes_usage_secrets_report_and_startup_logs(
    config, standin, deployed
) -> None:
    key = json.loads(
        run("keys", "create", "--name", "scripted", "--images", "--action", "read", "--json").stdout
    )
    assert key["scopes"] == [{"object_type": "images", "action": "read"}] and key["secret_key"]

    nodes = json.loads(run("nodes", "list", "--available", "--json").stdout)
    assert nodes == [
        {"gpu": "h100", "idle": 2, "provisioned": 6},
        {"gpu": "l40s", "idle": 3, "provisioned": 1},
    ]
    assert len(json.loads(run("nodes", "list", "--json").stdout)) == 3

    usage = json.loads(run("account", "usage", "--json").stdout)
    assert usage[0] == {"bucket": "2026-11-29T10:00:00", "amount": 0.42, "count": 12}
    per_chute = json.loads(run("account", "usage", "--per-chute", "--json").stdout)
    assert per_chute[0]["chute_id"] == "chute-1"

    created = run(
        "secrets",
        "create",
        "--purpose",
        deployed,
        "--key",
        "HF_TOKEN",
        "--value",
        "-",
        "--json",
        input="hf_secret\n",
    )
    assert created.exit_code == 0, created.output
    secret = json.loads(created.stdout)
    assert secret["key"] == "HF_TOKEN" and "value" not in secret
    assert standin.state.secrets[secret["secret_id"]]["value"] == "hf_secret"
    again = run("secrets", "create", "--purpose", deployed, "--key", "HF_TOKEN", "--value", "x")
    assert again.exit_code == REFUSED and "HTTP 409" in one_line_error(again)
    assert [s["key"] for s in json.loads(run("secrets", "list", "--json").stdout)] == ["HF_TOKEN"]
    assert run("secrets", "delete", secret["secret_id"], "--yes", "--json").exit_code == 0
    assert json.loads(run("secrets", "list", "--json").stdout) == []

    reported = json.loads(
        run("report", "--invocation-id", "inv-1", "--reason", "garbled", "--json").stdout
    )
    assert reported["status"].startswith("report received") and standin.state.reports == {
        "inv-1": "garbled"
    }
    twice = run("report", "--invocation-id", "inv-1", "--reason", "garbled")
    assert twice.exit_code == REFUSED

    chute_id = next(c["chute_id"] for c in standin.state.chutes.values() if c["name"] == deployed)
    sessions = json.loads(run("startup-logs", chute_id, "--json").stdout)
    assert [s["instance_id"] for s in sessions] == ["inst-new", "inst-old"]
    chunks = json.loads(run("startup-logs", chute_id, "--latest", "--json").stdout)
    assert chunks["instance_id"] == "inst-new" and chunks["chunks"] == ["c2VhbGVk", "Ynl0ZXM="]
    plain = run("startup-logs", chute_id, "--instance", "inst-old")
    assert plain.exit_code == 0 and "does not decrypt" in plain.stderr


def test_json_of_get_and_delete_for_images_and_keys(config, standin, deployed) -> None:
    image = next(
        i for i in json.loads(run("images", "list", "--json").stdout) if i["name"] == "foo"
    )
    got = json.loads(run("images", "get", image["image_id"], "--json").stdout)
    assert got["image_id"] == image["image_id"]
    key = json.loads(run("keys", "create", "--name", "short-lived", "--admin", "--json").stdout)
    assert json.loads(run("keys", "get", "short-lived", "--json").stdout)["admin"] is True
    gone = run("keys", "delete", key["api_key_id"], "--yes", "--json")
    assert json.loads(gone.stdout) == {"deleted": key["api_key_id"], "answer": {"deleted": True}}
    missing = run("images", "delete", "no-such-image", "--yes", "--json")
    assert missing.exit_code == REFUSED and missing.stdout == ""


def test_a_config_whose_hotkey_cannot_be_used_is_bad_input(config, tmp_path, monkeypatch) -> None:
    broken = tmp_path / "hotkey.ini"
    broken.write_text("[api]\nbase_url = http://127.0.0.1:1\n[auth]\nhotkey_seed = nothex\n")
    monkeypatch.setenv("CHUTES_CONFIG_PATH", str(broken))
    result = run("chutes", "list")
    assert result.exit_code == BAD_INPUT and "not hexadecimal" in one_line_error(result)
