"""Authentication over real HTTP: bearer keys and RFC 9421 signed requests."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

import httpx
import pytest

from chutes_core.signing import RequestSigner, SignatureAuth, generate_keypair

from .conftest import APPS

PRIVATE, PUBLIC = generate_keypair()
OTHER_PRIVATE, _ = generate_keypair()


@pytest.fixture(scope="module")
def signed(module_chute, tmp_path_factory):
    marks = tmp_path_factory.mktemp("marks")
    return module_chute(
        "guarded:chute",
        env={"CHUTES_TEST_MARKS": str(marks), "CHUTES_SIGNATURE_KEYS": f"tester={PUBLIC}"},
    )


@pytest.fixture(scope="module")
def bearer(module_chute, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys"
    keys.write_text("# one key a line\nfirst-key\nsecond-key\n")
    return module_chute("guarded:chute", env={"CHUTES_API_KEYS_FILE": str(keys)})


def signed_request(url: str, body: dict, *, key: str = PRIVATE, **sign: object) -> httpx.Request:
    request = httpx.Request("POST", url, json=body)
    RequestSigner("tester", key).sign(request, request.content, **sign)
    return request


def test_probes_stay_open_and_everything_else_needs_a_signature(signed) -> None:
    url = signed.url
    assert httpx.get(f"{url}/_chutes/live").status_code == 200
    assert httpx.get(f"{url}/_chutes/ready").status_code == 200
    for method, path in [
        ("POST", "/echo"),
        ("GET", "/_chutes/metrics"),
        ("GET", "/_chutes/jobs"),
        ("POST", "/_chutes/jobs/work"),
        ("GET", "/openapi.json"),
    ]:
        answer = httpx.request(method, f"{url}{path}", json={"text": "x"})
        assert answer.status_code == 401, path
        assert answer.headers["www-authenticate"].startswith("Signature")
        assert "signed requests only" in answer.json()["detail"]


def test_signed_requests_are_served(signed) -> None:
    with httpx.Client(auth=SignatureAuth("tester", PRIVATE)) as client:
        assert client.post(f"{signed.url}/echo", json={"text": "hi"}).json() == {"text": "hi"}
        assert client.get(f"{signed.url}/_chutes/metrics").status_code == 200
        assert client.get(f"{signed.url}/_chutes/jobs").status_code == 200


def test_a_replayed_request_is_refused(signed) -> None:
    request = signed_request(f"{signed.url}/echo", {"text": "once"})
    with httpx.Client() as client:
        assert client.send(request).status_code == 200
        again = client.send(request)
    assert again.status_code == 401
    assert "replayed" in again.json()["detail"]


def test_a_tampered_request_is_refused(signed) -> None:
    request = signed_request(f"{signed.url}/echo", {"text": "pay 1"})
    tampered = httpx.Request(
        "POST", request.url, headers=request.headers, content=request.content.replace(b"1", b"9")
    )
    answer = httpx.Client().send(tampered)
    assert answer.status_code == 401
    assert "Content-Digest" in answer.json()["detail"]
    # Another path with the same signature: the path is covered too.
    moved = signed_request(f"{signed.url}/echo", {"text": "x"})
    elsewhere = httpx.Request(
        "POST", f"{signed.url}/scale", headers=moved.headers, content=moved.content
    )
    assert httpx.Client().send(elsewhere).status_code == 401


def test_expired_and_unknown_signatures_are_refused(signed) -> None:
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    expired = httpx.Client().send(signed_request(f"{signed.url}/echo", {"text": "x"}, created=old))
    assert expired.status_code == 401
    assert "age" in expired.json()["detail"]
    stranger = signed_request(f"{signed.url}/echo", {"text": "x"}, key=OTHER_PRIVATE)
    assert httpx.Client().send(stranger).status_code == 401


def test_a_websocket_needs_a_signature(signed) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect as ws_connect

    ws_url = signed.url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus), ws_connect(ws_url, open_timeout=5):
        pass


def test_cord_calls_from_the_sdk_sign_with_the_configured_key(signed) -> None:
    script = (
        "import asyncio, sys\n"
        f"sys.path.insert(0, {str(APPS)!r})\n"
        "from guarded import echo\n"
        "print(asyncio.run(echo('from the sdk')))\n"
    )
    env = {
        **os.environ,
        "CHUTES_DEV_URL": signed.url,
        "CHUTES_SIGNING_KEY": PRIVATE,
        "CHUTES_SIGNING_KEY_ID": "tester",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "{'text': 'from the sdk'}" in done.stdout


def test_bearer_keys(bearer) -> None:
    url = bearer.url
    assert httpx.get(f"{url}/_chutes/ready").status_code == 200
    assert httpx.post(f"{url}/echo", json={"text": "x"}).status_code == 401
    wrong = httpx.post(f"{url}/echo", json={"text": "x"}, headers={"authorization": "Bearer no"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "invalid bearer key"
    for key in ("first-key", "second-key"):
        answer = httpx.post(
            f"{url}/echo", json={"text": "x"}, headers={"authorization": f"Bearer {key}"}
        )
        assert answer.status_code == 200
