"""A stand-in for the Chutes platform API (the real one is not reachable from tests).

It answers as the documented API does, keeps everything in memory, and records
what it was sent so tests can check payloads. The account side (users and
hotkey signatures, nodes, usage, secrets, reports, logs) and refusals on
demand (``app.state.refuse``) are in :mod:`.platform_standin_account`.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, File, Form, Header, HTTPException, UploadFile
from fastapi.responses import StreamingResponse

from .platform_standin_account import Signatures, add_account_routes

API_KEY = "cpk_test_key"
HOURLY_PER_GPU = 0.12


def create_app() -> FastAPI:
    app = FastAPI()
    app.state.chutes = {}
    app.state.images = {}
    app.state.keys = {}
    app.state.shares = set()
    app.state.received = []
    app.state.refuse = {}  # (METHOD, path) -> (status, detail), answered once
    app.add_middleware(Signatures, standin=app, api_key=API_KEY)

    def auth(authorization: str | None) -> None:
        if authorization != API_KEY:
            raise HTTPException(401, "Invalid API key")

    def find(store: dict[str, dict[str, Any]], id_or_name: str) -> dict[str, Any]:
        for item in store.values():
            if id_or_name in (
                item.get("chute_id"),
                item.get("image_id"),
                item.get("api_key_id"),
                item["name"],
            ):
                return item
        raise HTTPException(404, f"{id_or_name} not found")

    @app.post("/chutes/")
    async def deploy(
        payload: dict, accept_fee: bool = False, authorization: str | None = Header(None)
    ):
        auth(authorization)
        app.state.received.append(payload)
        if any(c["name"] == payload["name"] for c in app.state.chutes.values()):
            raise HTTPException(409, f"chute {payload['name']} already exists")
        fee = round(3 * HOURLY_PER_GPU * payload["node_selector"]["gpu_count"], 2)
        if not accept_fee:
            raise HTTPException(402, {"message": "a deployment fee applies", "fee": fee})
        chute_id = str(uuid.uuid4())
        given = payload["image"]
        name, tag = (
            (given.get("name"), given.get("tag")) if isinstance(given, dict) else (given, "")
        )
        image = next((i for i in app.state.images.values() if i["name"] == name), None)
        if image is None:
            image_id = str(uuid.uuid4())
            image = {"image_id": image_id, "name": name, "tag": tag, "status": "built and pushed"}
            app.state.images[image_id] = {**image, "public": False}
        app.state.chutes[chute_id] = {
            "chute_id": chute_id,
            "name": payload["name"],
            "version": "1",
            "public": payload["public"],
            "image": {k: image[k] for k in ("image_id", "name", "tag")},
            "instances": [],
        }
        return {"chute_id": chute_id, "version": "1"}

    @app.get("/chutes/")
    async def list_chutes(name: str | None = None, authorization: str | None = Header(None)):
        auth(authorization)
        return {"items": [c for c in app.state.chutes.values() if name in (None, c["name"])]}

    @app.get("/chutes/{id_or_name}")
    async def get_chute(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        return find(app.state.chutes, id_or_name)

    @app.delete("/chutes/{id_or_name}")
    async def delete_chute(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        del app.state.chutes[find(app.state.chutes, id_or_name)["chute_id"]]
        return {"deleted": True}

    @app.post("/chutes/share")
    async def share(body: dict, authorization: str | None = Header(None)):
        auth(authorization)
        app.state.shares.add((body["chute_id_or_name"], body["user_id_or_name"]))
        return {"shared": True}

    @app.post("/chutes/unshare")
    async def unshare(body: dict, authorization: str | None = Header(None)):
        auth(authorization)
        app.state.shares.discard((body["chute_id_or_name"], body["user_id_or_name"]))
        return {"shared": False}

    @app.get("/chutes/warmup/{id_or_name}")
    async def warmup(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        chute = find(app.state.chutes, id_or_name)
        chute["instances"] = [{"instance_id": f"inst-{chute['name']}", "active": True}]

        async def progress():
            for status in getattr(app.state, "warmup_lines", ("cold", "starting", "hot")):
                yield f"data: {status}\n\n"

        return StreamingResponse(progress(), media_type="text/event-stream")

    @app.post("/images/")
    async def build_image(
        username: str = Form(...),
        name: str = Form(...),
        tag: str = Form(...),
        readme: str = Form(""),
        public: str = Form("false"),
        dockerfile: str = Form(...),
        context: UploadFile = File(...),
        authorization: str | None = Header(None),
    ):
        auth(authorization)
        image_id = str(uuid.uuid4())
        app.state.images[image_id] = {
            "image_id": image_id,
            "name": name,
            "tag": tag,
            "status": "built and pushed",
            "public": public == "true",
            "dockerfile": dockerfile,
            "context_bytes": len(await context.read()),
        }
        return {"image_id": image_id}

    @app.get("/images/{image_id}/logs")
    async def image_logs(image_id: str, authorization: str | None = Header(None)):
        auth(authorization)
        image = find(app.state.images, image_id)

        async def log():
            for line in (f"building {image['name']}:{image['tag']}", "step 1/2", "pushed"):
                yield f"data: {line}\n\n"

        return StreamingResponse(log(), media_type="text/event-stream")

    @app.get("/images/")
    async def list_images(name: str | None = None, authorization: str | None = Header(None)):
        auth(authorization)
        return {"items": [i for i in app.state.images.values() if name in (None, i["name"])]}

    @app.get("/images/{id_or_name}")
    async def get_image(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        return find(app.state.images, id_or_name)

    @app.delete("/images/{id_or_name}")
    async def delete_image(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        del app.state.images[find(app.state.images, id_or_name)["image_id"]]
        return {"deleted": True}

    @app.post("/api_keys/")
    async def create_key(body: dict, authorization: str | None = Header(None)):
        auth(authorization)
        key_id = str(uuid.uuid4())
        app.state.keys[key_id] = {
            "api_key_id": key_id,
            "name": body["name"],
            "admin": body["admin"],
            "scopes": body["scopes"],
        }
        return {**app.state.keys[key_id], "secret_key": f"cpk_{uuid.uuid4().hex}"}

    @app.get("/api_keys/")
    async def list_keys(name: str | None = None, authorization: str | None = Header(None)):
        auth(authorization)
        return {"items": [k for k in app.state.keys.values() if name in (None, k["name"])]}

    @app.get("/api_keys/{id_or_name}")
    async def get_key(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        return find(app.state.keys, id_or_name)

    @app.delete("/api_keys/{id_or_name}")
    async def delete_key(id_or_name: str, authorization: str | None = Header(None)):
        auth(authorization)
        del app.state.keys[find(app.state.keys, id_or_name)["api_key_id"]]
        return {"deleted": True}

    @app.post("/logos/")
    async def upload_logo(logo: UploadFile = File(...), authorization: str | None = Header(None)):
        auth(authorization)
        await logo.read()
        return {"logo_id": "logo-1"}

    add_account_routes(app, auth, find)
    return app
