"""The hooks. Every chutes process imports this module, so it imports nothing heavy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chutes_core import hookimpl

if TYPE_CHECKING:
    from chutes_core import Chute, Image
    from chutes_core.kernels import KernelRegister
    from chutes_core.templates import TemplateRegister

TEMPLATE = "embedding"
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


@hookimpl
def register_templates(register: TemplateRegister) -> None:
    from chutes_embeddings.template import build_embedding_chute

    register(
        TEMPLATE, build_embedding_chute, description="OpenAI /v1/embeddings with dynamic batching"
    )


@hookimpl
def register_kernels(register: KernelRegister) -> None:
    register(
        "embeddings.mean_pool_normalize",
        reference="chutes_embeddings.kernels:mean_pool_normalize_torch",
        triton="chutes_embeddings.kernels:mean_pool_normalize_triton",
        description="masked mean pooling over tokens, then L2 normalisation, in one pass",
    )


@hookimpl
def egress_policy(chute: Chute) -> bool | None:
    # Weights are fetched during startup; serving embeddings needs no network.
    return False if chute.standard_template == TEMPLATE else None


@hookimpl
def build_image(chute: Chute, image: Image | None) -> Image | None:
    if chute.standard_template != TEMPLATE or image is not None:
        return None
    from chutes_core import Image, __version__
    from chutes_embeddings import __version__ as plugin_version

    engine = getattr(chute.state, "embedding_engine", "sentence-transformers")
    pins = (*ENGINE_PINS[engine], f"chutes=={__version__}", f"chutes-embeddings=={plugin_version}")
    return (
        Image(username=chute.username, name=chute.name, tag=chute.revision or "latest")
        .from_base("parachutes/python:3.12")
        .with_env("PYTHONUNBUFFERED", "1")
        .run_command("pip install --no-cache-dir " + " ".join(f"'{pin}'" for pin in pins))
    )
