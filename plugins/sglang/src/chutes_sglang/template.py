"""``build_sglang_chute``: a model served by SGLang's OpenAI-compatible server."""

from __future__ import annotations

from chutes_core.engines.flags import standard_owned_flags
from chutes_core.engines.images import pinned_requirement
from chutes_core.engines.template import EngineLaunch, OpenAIEngineTemplate

__all__ = ["SGLANG", "SGLANG_REQUIREMENT", "SGLANG_VERSION", "SGLangTemplate", "build_sglang_chute"]

#: What the default image installs: the ``engine`` extra's pin.
SGLANG_REQUIREMENT = pinned_requirement("chutes-sglang", "sglang")
SGLANG_VERSION = SGLANG_REQUIREMENT.rpartition("==")[2]


class SGLangTemplate(OpenAIEngineTemplate):
    """Serve ``model_name`` with SGLang (``python -m sglang.launch_server``); needs a GPU.

    SGLang ships its own kernels; this template registers none.
    """

    name = "sglang"
    description = "SGLang behind OpenAI-compatible cords"
    engine_requirement = SGLANG_REQUIREMENT
    # --tp is no flag of SGLang's, but argparse would expand it to --tp-size.
    owned_flags = standard_owned_flags(
        model=["--model-path", "--model"],
        tensor_parallel=["--tp-size", "--tensor-parallel-size", "--tp"],
    )

    def command(self, launch: EngineLaunch) -> list[str]:
        return launch.python_command(
            "sglang.launch_server", model_flag="--model-path", tensor_parallel_flag="--tp-size"
        )


SGLANG = SGLangTemplate()
build_sglang_chute = SGLANG.builder()
