"""The stand-in platform's account side: users, hotkey signatures, nodes, usage, secrets,
reports, instance logs and startup-log sessions, plus refusals on demand.

As with :mod:`.platform_standin`, the shapes are those of the public platform API
(chutes-api: api/user, api/node, api/secret, api/invocation, api/instance,
api/encrypted_logs). Signatures are checked with the sr25519 library directly,
not with the CLI's own code, so a test of ``chutes register`` checks the CLI
against an independent verifier.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

REGISTRATION_TOKEN = "rtok-test"
NONCE = "login-nonce-1"
HOTKEY_HEADER = "x-chutes-hotkey"
NONCE_HEADER = "x-chutes-nonce"
SIGNATURE_HEADER = "x-chutes-signature"


def verify_signature(hotkey: str, nonce: str, signature: str, tail: str) -> bool:
    """The platform's check: sr25519 over ``hotkey:nonce:tail`` by the key at ``hotkey``."""
    import sr25519
    from scalecodec.utils.ss58 import ss58_decode

    message = f"{hotkey}:{nonce}:{tail}".encode()
    try:
        return bool(
            sr25519.verify(bytes.fromhex(signature), message, bytes.fromhex(ss58_decode(hotkey)))
        )
    except ValueError:
        return False


class Signatures:
    """ASGI middleware: a valid hotkey signature from a registered user counts as the API key,
    and ``app.state.refuse[(METHOD, path)] = (status, detail)`` answers one request that way."""

    def __init__(self, app: Any, standin: FastAPI, api_key: str) -> None:
        self.app = app
        self.standin = standin
        self.api_key = api_key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.standin.state.refuse.pop((scope["method"], scope["path"]), None)
        if refusal is not None:
            status, detail = refusal
            await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if HOTKEY_HEADER not in headers or scope["path"] == "/users/register":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        purpose = scope["path"].strip("/").split("/")[0]
        tail = hashlib.sha256(body).hexdigest() if body else purpose
        hotkey = headers[HOTKEY_HEADER]
        nonce = headers.get(NONCE_HEADER, "")
        fresh = nonce.isdigit() and abs(time.time() - int(nonce)) < 600
        if not (
            fresh
            and hotkey in self.standin.state.users
            and verify_signature(hotkey, nonce, headers.get(SIGNATURE_HEADER, ""), tail)
        ):
            await JSONResponse({"detail": "Invalid request signature"}, status_code=401)(
                scope, receive, send
            )
            return
        self.standin.state.signed.append((scope["method"], scope["path"], hotkey))
        scope = dict(scope, headers=[*scope["headers"], (b"authorization", self.api_key.encode())])
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def add_account_routes(app: FastAPI, auth: Any, find: Any) -> None:
    app.state.users = {}
    app.state.signed = []
    app.state.secrets = {}
    app.state.reports = {}
    app.state.nodes = {
        "h100": {"provisioned": 6, "idle": 2},
        "a100": {"provisioned": 4, "idle": 0},
        "l40s": {"provisioned": 1, "idle": 3},
    }
    app.state.usage = [
        {"bucket": "2026-11-29T10:00:00", "amount": 0.42, "count": 12},
        {"bucket": "2026-11-29T09:00:00", "amount": 0.1, "count": 3},
    ]

    @app.post("/users/register")
    async def register(request: Request, token: str | None = None):
        if not token:
            raise HTTPException(400, "Missing registration token in URL query params")
        if token != REGISTRATION_TOKEN:
            raise HTTPException(403, "Invalid registration token")
        body = await request.body()
        hotkey = request.headers.get(HOTKEY_HEADER, "")
        nonce = request.headers.get(NONCE_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify_signature(hotkey, nonce, signature, hashlib.sha256(body).hexdigest()):
            raise HTTPException(401, f"Invalid request signature for hotkey {hotkey}")
        if hotkey in app.state.users:
            raise HTTPException(409, "This hotkey is already registered to a user!")
        args = json.loads(body)
        if not isinstance(args.get("username"), str) or not isinstance(args.get("coldkey"), str):
            raise HTTPException(422, [{"loc": ["body", "username"], "msg": "Field required"}])
        user = {
            "username": args["username"],
            "user_id": str(uuid.uuid4()),
            "created_at": "2026-11-30T00:00:00",
            "hotkey": hotkey,
            "coldkey": args["coldkey"],
            "payment_address": "5PaymentAddressForTests",
            "developer_payment_address": "5DeveloperAddressForTests",
            "fingerprint": "fp-" + uuid.uuid4().hex[:12],
        }
        app.state.users[hotkey] = user
        return user

    @app.get("/users/me")
    async def me(authorization: str | None = Header(None)):
        auth(authorization)
        return {"username": "me", "user_id": "user-1", "balance": 12.5}

    @app.get("/idp/cli_login/nonce")
    async def login_nonce():
        return {"nonce": NONCE}

    @app.get("/users/me/usage")
    async def usage(
        page: int = 0,
        limit: int = 24,
        per_chute: bool = False,
        chute_id: str | None = None,
        authorization: str | None = Header(None),
    ):
        auth(authorization)
        items = [dict(row, chute_id="chute-1") if per_chute else row for row in app.state.usage]
        return {"total": len(items), "page": page, "limit": limit, "items": items[:limit]}

    @app.get("/nodes/")
    async def nodes():
        return app.state.nodes

    @app.post("/secrets/")
    async def create_secret(body: dict, authorization: str | None = Header(None)):
        auth(authorization)
        chute = find(app.state.chutes, body["purpose"])
        secret_id = str(uuid.uuid5(uuid.NAMESPACE_OID, f"user-1:{chute['chute_id']}:{body['key']}"))
        if secret_id in app.state.secrets:
            raise HTTPException(409, "A secret already exists for this purpose with this key.")
        app.state.secrets[secret_id] = {
            "secret_id": secret_id,
            "key": body["key"],
            "purpose": chute["chute_id"],
            "created_at": "2026-11-30T00:00:00",
            "name": body["key"],
            "value": body["value"],  # kept only to check what was sent; never answered
        }
        return {k: v for k, v in app.state.secrets[secret_id].items() if k != "value"}

    @app.get("/secrets/")
    async def list_secrets(authorization: str | None = Header(None)):
        auth(authorization)
        hidden = [{k: v for k, v in s.items() if k != "value"} for s in app.state.secrets.values()]
        return {"total": len(hidden), "page": 0, "limit": 25, "items": hidden}

    @app.delete("/secrets/{secret_id}")
    async def delete_secret(secret_id: str, authorization: str | None = Header(None)):
        auth(authorization)
        if app.state.secrets.pop(secret_id, None) is None:
            raise HTTPException(404, "Secret not found, or does not belong to you")
        return {"status": f"Successfully deleted secret {secret_id}", "secret_id": secret_id}

    @app.post("/invocations/{invocation_id}/report")
    async def report(invocation_id: str, body: dict, authorization: str | None = Header(None)):
        auth(authorization)
        if invocation_id in app.state.reports:
            raise HTTPException(409, "A report has already been filed for this invocation")
        app.state.reports[invocation_id] = body["reason"]
        return {"status": f"report received for {invocation_id=}"}

    @app.get("/instances/{instance_id}/logs")
    async def instance_logs(
        instance_id: str, backfill: int = 100, authorization: str | None = Header(None)
    ):
        auth(authorization)

        async def lines():
            for n in range(min(backfill, 2)):
                yield f"data: {instance_id} line {n}\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream")

    @app.get("/encrypted_logs/{chute_id}/sessions")
    async def log_sessions(chute_id: str, authorization: str | None = Header(None)):
        auth(authorization)
        find(app.state.chutes, chute_id)
        return [
            {"instance_id": "inst-old", "started_at": 100, "chunk_count": 1},
            {"instance_id": "inst-new", "started_at": 200, "chunk_count": 2},
        ]

    @app.get("/encrypted_logs/{chute_id}/sessions/{instance_id}/chunks")
    async def log_chunks(chute_id: str, instance_id: str, authorization: str | None = Header(None)):
        auth(authorization)
        find(app.state.chutes, chute_id)
        return {
            "instance_id": instance_id,
            "chute_id": chute_id,
            "chunks": ["c2VhbGVk", "Ynl0ZXM="],
        }
