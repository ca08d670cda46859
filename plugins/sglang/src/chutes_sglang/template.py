"""``build_sglang_chute``: a model served by SGLang's OpenAI-compatible server."""

from __future__ import annotations

from chutes_core.openai_template import EngineLaunch, OpenAIEngineTemplate, standard_owned_flags

__all__ = ["SGLANG", "SGLANG_VERSION", "SGLangTemplate", "build_sglang_chute"]

#: The SGLang release the default image installs.
SGLANG_VERSION = "0.5.23"


class SGLangTemplate(OpenAIEngineTemplate):
    """Serve ``model_name`` with SGLang (``python -m sglang.launch_server``); needs a GPU.

    SGLang ships its own kernels; this template registers none.
    """

    name = "sglang"
    description = "SGLang behind OpenAI-compatible cords"
    engine_requirement = f"sglang=={SGLANG_VERSION}"
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
