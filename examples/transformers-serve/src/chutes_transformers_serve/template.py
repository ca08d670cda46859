"""``build_transformers_serve_chute``: an OpenAI API from ``transformers serve``.

Built on the core's engine toolkit: :class:`TransformersServe` says how to
start the server; the toolkit fetches the model (in a thread), starts and
watches the process, and forwards the chat and completion routes to it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from typing_extensions import Unpack

from chutes_core import Chute, ChutePack
from chutes_core.engines.flags import SERVER_FLAGS
from chutes_core.engines.model import chute_name_for
from chutes_core.engines.routes import CHAT, COMPLETION
from chutes_core.engines.settings import ChuteSettings, chute_from_settings, documents_settings
from chutes_core.engines.template import EngineLaunch, OpenAIEngineTemplate
from chutes_core.errors import InvalidValueError

TEMPLATE = "transformers_serve"
DEFAULT_PORT = 10102


@dataclass
class TransformersServe(OpenAIEngineTemplate):
    """``transformers serve`` for one chute: no API key option, readiness on ``/health``."""

    name = "transformers-serve"
    engine_requirement = "transformers[serving]"  # pinned in the image: see plugin.py
    owned_flags = SERVER_FLAGS
    # Its /v1/models lists the hub cache; the chute answers that route itself.
    routes = (CHAT, COMPLETION)
    ready_path = "/health"

    device: str
    dtype: str
    port: int

    def warmup(self, served_model_name: str) -> None:
        return None

    def command(self, launch: EngineLaunch) -> list[str]:
        engine = launch.engine
        return [
            sys.executable, "-m", "transformers.cli.transformers", "serve",
            launch.served_model_name,
            "--host", engine.host, "--port", str(engine.port),
            "--device", self.device, "--dtype", self.dtype, "--log-level", "info",
        ]  # fmt: skip

    def environment(self, launch: EngineLaunch) -> dict[str, str]:
        # Its /v1/models scans the hub cache, which must exist.
        cache = Path(
            os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub"
        )
        cache.mkdir(parents=True, exist_ok=True)
        return {"HF_HUB_CACHE": str(cache)}

    def working_directory(self, launch: EngineLaunch) -> str:
        # The server only answers requests naming the model it is pinned to, and
        # names it by the path it was given: pin it to the served name, a link to
        # the weights in its working directory.
        workdir = Path(tempfile.mkdtemp(prefix="chutes-transformers-serve-"))
        link = workdir / launch.served_model_name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(launch.model_path, target_is_directory=True)
        return str(workdir)


@documents_settings
def build_transformers_serve_chute(
    username: str,
    model_name: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    port: int = DEFAULT_PORT,
    served_model_name: str | None = None,
    **settings: Unpack[ChuteSettings],
) -> ChutePack:
    """Serve ``model_name`` (a hub name or a local path) with ``transformers serve``.

    Cords: ``POST /v1/chat/completions`` and ``POST /v1/completions``
    (streaming or not, as the request asks) are forwarded to the engine;
    ``GET /v1/models`` answers from the chute itself with the served name.
    ``concurrency`` defaults to 4.
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidValueError("model_name", model_name, "a hub model name or a local path")
    derived = chute_name_for(model_name.rstrip("/").rsplit("/", 1)[-1], default="model")
    served = served_model_name or derived
    if served.startswith("/") or ".." in served.split("/"):
        raise InvalidValueError(
            "served_model_name", served, "a model id such as 'org/model' (no leading '/' or '..')"
        )
    chute = chute_from_settings(
        "build_transformers_serve_chute",
        username,
        settings,
        template=TEMPLATE,
        name=settings.get("name") or derived,
        tagline=f"{served} with transformers serve",
        concurrency=4,
    )
    engine = TransformersServe(device=device, dtype=dtype, port=port)
    pack = engine.serve(
        chute, model_name, revision=settings.get("revision"), served_model_name=served
    )

    @chute.on_startup()
    async def record_start(self: Chute) -> None:
        self.started_at = int(time.time())

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

    return ChutePack(chute, **pack.named_cords, models=models)
