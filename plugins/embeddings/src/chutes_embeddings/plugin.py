"""The hooks. Every chutes process imports this module, so it imports nothing heavy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chutes_core.engines.hooks import TemplateHooks, TemplateSet
from chutes_core.kernels import kernel_hook

if TYPE_CHECKING:
    from chutes_core import Chute

TEMPLATE = "embedding"
BUILDER = "chutes_embeddings.template:build_embedding_chute"
DESCRIPTION = "OpenAI /v1/embeddings with dynamic batching"
#: What the default image installs for each engine: the versions tested. On a
#: GPU host PyPI's torch is the CUDA build, and brings the triton it needs.
ENGINE_PINS = {
    "sentence-transformers": (
        "torch==2.13.0",
        "transformers==5.23.0",
        "sentence-transformers==6.2.0",
    ),
    "transformers": ("torch==2.13.0", "transformers==5.23.0", "sentence-transformers==6.2.0"),
    "vllm": ("vllm==0.32.0",),
}


def engine_pins(chute: Chute) -> tuple[str, ...]:
    """What the default image installs besides chutes and this plugin: the chute's engine."""
    return ENGINE_PINS[getattr(chute.state, "embedding_engine", "sentence-transformers")]


register_kernels = kernel_hook(
    "embeddings.mean_pool_normalize",
    "chutes_embeddings.kernels:mean_pool_normalize",
    description="masked mean pooling over tokens, then L2 normalisation, in one pass",
)


# Weights are fetched during startup; serving embeddings needs no network.
_EMBEDDING = TemplateHooks(
    TEMPLATE, BUILDER, description=DESCRIPTION, requirements=engine_pins, egress=False
)
# Reranking and classification: a cross-encoder, run in process (same pins), egress closed too.
_RERANK = TemplateHooks(
    "rerank",
    "chutes_embeddings.rerank:build_rerank_chute",
    description="Cross-encoder /v1/rerank and /v1/classify with dynamic batching",
    requirements=ENGINE_PINS["sentence-transformers"],
    egress=False,
)


# One plugin, two templates: each hook asks both.
register_templates, build_image, egress_policy = TemplateSet(_EMBEDDING, _RERANK).hooks()
