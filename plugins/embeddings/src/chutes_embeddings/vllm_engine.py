"""``engine="vllm"``: vLLM's pooling server behind passthrough cords.

Built on the core's :class:`~chutes_core.engines.template.OpenAIEngineTemplate`,
like the vLLM plugin: the model is fetched at startup (in a thread), vLLM runs
offline on loopback with a random API key, and ``/v1/embeddings`` and
``/v1/models`` are forwarded to it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from chutes_core.engines.flags import standard_owned_flags
from chutes_core.engines.routes import MODELS, OpenAIRoute
from chutes_core.engines.template import EngineLaunch, OpenAIEngineTemplate
from chutes_embeddings.plugin import ENGINE_PINS

POOLING = {"mean": "MEAN", "cls": "CLS", "last": "LAST"}
EMBEDDINGS = OpenAIRoute("embeddings", "/v1/embeddings", doc="OpenAI embeddings, answered by vLLM.")


@dataclass
class VLLMPoolingEngine(OpenAIEngineTemplate):
    """vLLM's OpenAI server with the pooling runner, for one embeddings chute."""

    name = "vllm"
    engine_requirement = ENGINE_PINS["vllm"][0]
    owned_flags = {
        **standard_owned_flags(
            model=["--model"], tensor_parallel=["--tensor-parallel-size", "-tp"]
        ),
        "--runner": "the template (embeddings use the pooling runner)",
        "--pooler-config": "the template (pooling_type, normalize, enable_chunked_processing)",
    }
    routes = (EMBEDDINGS, MODELS)
    cache_env = ("VLLM_CACHE_ROOT",)

    pooling_type: str
    normalize: bool
    max_embed_len: int | None
    enable_chunked_processing: bool
    port: int = 10101

    def warmup(self, served_model_name: str) -> None:
        """None: a pooling server has no completions to warm up with."""
        return None

    def command(self, launch: EngineLaunch) -> list[str]:
        # vLLM's pooler: `use_activation` is the L2 normalisation of embedding models.
        pooler: dict[str, Any] = {"use_activation": self.normalize}
        if self.pooling_type != "auto":
            pooler["seq_pooling_type"] = POOLING[self.pooling_type]
        if self.enable_chunked_processing:
            pooler["enable_chunked_processing"] = True
        defaults = ["--runner", "pooling", "--pooler-config", json.dumps(pooler)]
        if self.max_embed_len is not None:
            defaults += ["--max-model-len", str(self.max_embed_len)]
        if launch.cpu:
            defaults += launch.unless_given(["--dtype", "float32"], ["--enforce-eager"])
        return launch.python_command(
            "vllm.entrypoints.openai.api_server",
            model_flag="--model",
            tensor_parallel_flag="--tensor-parallel-size",
            defaults=defaults,
        )

    def environment(self, launch: EngineLaunch) -> dict[str, str]:
        # The CPU build's KV cache (GiB), unless the host chose one.
        kv_cache = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
        return {"VLLM_CPU_KVCACHE_SPACE": kv_cache} if launch.cpu else {}
