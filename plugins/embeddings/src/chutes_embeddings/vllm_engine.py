"""``engine="vllm"``: vLLM's pooling server behind a passthrough cord.

Uses the same driver as the vLLM plugin (:class:`chutes_core.engine.OpenAIServerEngine`):
the model is fetched at startup, vLLM runs offline on loopback with a random
API key, and ``/v1/embeddings`` and ``/v1/models`` are forwarded to it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from chutes_core import Chute, ChutePack
from chutes_core.engine import OpenAIServerEngine
from chutes_core.hub import fetch_model, offline_env
from chutes_core.openai_template import check_owned_flags, engine_args_to_flags, gpu_visible

OWNED = {
    "--model": "the template (model_name)",
    "--served-model-name": "the template (served_model_name)",
    "--host": "the template (the engine listens on loopback only)",
    "--port": "the template (the chute forwards to that port)",
    "--api-key": "the template (a random key shared by the chute and the engine)",
    "--runner": "the template (embeddings use the pooling runner)",
}
POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST"}


def vllm_command(
    model_path: str,
    *,
    served: str,
    engine: OpenAIServerEngine,
    pooling_type: str,
    normalize: bool,
    max_embed_len: int | None,
    enable_chunked_processing: bool,
    engine_args: dict[str, Any] | str | None,
    cpu: bool,
) -> list[str]:
    """The vLLM pooling-server command line for these settings."""
    extra = engine_args_to_flags(engine_args, field="engine_args")
    check_owned_flags(extra, OWNED, field="engine_args")
    # vLLM's pooler: `use_activation` is the L2 normalisation of embedding models.
    pooler: dict[str, Any] = {"use_activation": normalize}
    if pooling_type != "auto":
        pooler["seq_pooling_type"] = POOLING[pooling_type]
    if enable_chunked_processing:
        pooler["enable_chunked_processing"] = True
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--served-model-name", served,
        "--runner", "pooling", "--pooler-config", json.dumps(pooler),
        *engine.server_flags(),
    ]  # fmt: skip
    if max_embed_len is not None:
        argv += ["--max-model-len", str(max_embed_len)]
    if cpu:
        argv += ["--dtype", "float32", "--enforce-eager"]
    return argv + extra


def add_vllm_engine(
    chute: Chute,
    *,
    model_name: str,
    revision: str | None,
    served: str,
    pooling_type: str,
    normalize: bool,
    max_embed_len: int | None,
    enable_chunked_processing: bool,
    engine_args: dict[str, Any] | str | None,
    port: int,
) -> ChutePack:
    engine = OpenAIServerEngine("vllm", port=port)
    # Validate engine_args now, so a bad flag fails where the chute is defined.
    check_owned_flags(
        engine_args_to_flags(engine_args, field="engine_args"), OWNED, field="engine_args"
    )

    @chute.on_startup()
    async def start_vllm(self: Chute) -> None:
        path = fetch_model(model_name, revision)
        cpu = not gpu_visible()
        argv = vllm_command(
            str(path),
            served=served,
            engine=engine,
            pooling_type=pooling_type,
            normalize=normalize,
            max_embed_len=max_embed_len,
            enable_chunked_processing=enable_chunked_processing,
            engine_args=engine_args,
            cpu=cpu,
        )
        env = offline_env()
        if cpu:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        await engine.start(self, argv, env=env)

    @chute.on_shutdown()
    async def stop_vllm(self: Chute) -> None:
        await engine.stop()

    @chute.cord(
        passthrough=True,
        passthrough_port=port,
        public_api_path="/v1/embeddings",
        path="/embeddings",
    )
    async def embeddings(self: Chute, data: dict[str, Any]) -> dict[str, Any]:
        """OpenAI embeddings, answered by vLLM."""
        raise NotImplementedError

    @chute.cord(
        passthrough=True,
        passthrough_port=port,
        public_api_path="/v1/models",
        method="GET",
        path="/models",
    )
    async def models(self: Chute) -> dict[str, Any]:
        """The served model, answered by vLLM."""
        raise NotImplementedError

    return ChutePack(chute, embeddings=embeddings, models=models)
