"""``build_transformers_serve_chute``: an OpenAI API from ``transformers serve``."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from chutes_core import Chute, ChutePack, Image, NodeSelector
from chutes_core.engine import OpenAIServerEngine
from chutes_core.errors import InvalidValueError
from chutes_core.hub import fetch_model, offline_env

DEFAULT_PORT = 10102


def _chute_name(model_name: str) -> str:
    tail = model_name.rstrip("/").rsplit("/", 1)[-1].lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in tail).strip("-")
    return cleaned[:63].strip("-") or "model"


def build_transformers_serve_chute(
    username: str,
    model_name: str,
    revision: str | None = None,
    *,
    name: str | None = None,
    served_model_name: str | None = None,
    node_selector: NodeSelector | None = None,
    image: str | Image | None = None,
    tagline: str = "",
    readme: str = "",
    concurrency: int = 4,
    max_instances: int = 1,
    scaling_threshold: float = 0.75,
    shutdown_after_seconds: int = 300,
    allow_external_egress: bool | None = None,
    device: str = "auto",
    dtype: str = "auto",
    port: int = DEFAULT_PORT,
) -> ChutePack:
    """Serve ``model_name`` (a hub name or a local path) with ``transformers serve``.

    Cords: ``POST /v1/chat/completions`` and ``POST /v1/completions``
    (streaming or not, as the request asks) are forwarded to the engine;
    ``GET /v1/models`` answers from the chute itself with the served name.
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidValueError("model_name", model_name, "a hub model name or a local path")
    served = served_model_name or _chute_name(model_name)
    if served.startswith("/") or ".." in served.split("/"):
        raise InvalidValueError(
            "served_model_name", served, "a model id such as 'org/model' (no leading '/' or '..')"
        )
    chute = Chute(
        username=username,
        name=name or _chute_name(model_name),
        image=image,
        tagline=tagline or f"{served} with transformers serve",
        readme=readme,
        standard_template="transformers_serve",
        revision=revision,
        node_selector=node_selector,
        concurrency=concurrency,
        max_instances=max_instances,
        scaling_threshold=scaling_threshold,
        shutdown_after_seconds=shutdown_after_seconds,
        allow_external_egress=allow_external_egress,
    )
    # `transformers serve` has no API key option; the engine answers readiness on /health.
    engine = OpenAIServerEngine("transformers-serve", port=port, ready_path="/health")

    @chute.on_startup()
    async def start_engine(self: Chute) -> None:
        path = fetch_model(model_name, revision)
        env = offline_env()
        # Its /v1/models scans the hub cache, which must exist.
        cache = Path(
            os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub"
        )
        cache.mkdir(parents=True, exist_ok=True)
        env["HF_HUB_CACHE"] = str(cache)
        # The server only answers requests naming the model it is pinned to, and
        # names it by the path it was given: pin it to the served name, a
        # link to the weights in its working directory.
        workdir = Path(tempfile.mkdtemp(prefix="chutes-transformers-serve-"))
        link = workdir / served
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path, target_is_directory=True)
        argv = [
            sys.executable, "-m", "transformers.cli.transformers", "serve", served,
            "--host", engine.host, "--port", str(engine.port),
            "--device", device, "--dtype", dtype, "--log-level", "info",
        ]  # fmt: skip
        await engine.start(self, argv, env=env, cwd=workdir)
        self.started_at = int(time.time())

    @chute.on_shutdown()
    async def stop_engine(self: Chute) -> None:
        await engine.stop()

    @chute.cord(
        passthrough=True,
        passthrough_port=port,
        public_api_path="/v1/chat/completions",
        path="/chat",
    )
    async def chat(self: Chute, data: dict) -> dict:
        """OpenAI chat completions (set ``stream`` for Server-Sent Events)."""
        raise NotImplementedError  # passthrough: the engine answers

    @chute.cord(
        passthrough=True,
        passthrough_port=port,
        public_api_path="/v1/completions",
        path="/completion",
    )
    async def completion(self: Chute, data: dict) -> dict:
        """OpenAI text completions (set ``stream`` for Server-Sent Events)."""
        raise NotImplementedError

    @chute.cord(public_api_path="/v1/models", method="GET", path="/models")
    async def models(self: Chute) -> dict:
        """The model this chute serves, as OpenAI's model list."""
        return {
            "object": "list",
            "data": [
                {
                    "id": served,
                    "object": "model",
                    "created": getattr(self, "started_at", 0),
                    "owned_by": username,
                }
            ],
        }

    return ChutePack(chute, chat=chat, completion=completion, models=models)
