"""The command lines we build, checked by SGLang's own argument parser.

SGLang cannot serve on this machine (no GPU), but its parser imports without
one: ``ServerArgs.add_cli_args`` builds exactly what ``sglang.launch_server``
parses. Skipped, with the reason, where SGLang is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import pytest
from chutes_sglang.template import SGLANG, SGLangTemplate

from chutes.chute import NodeSelector
from chutes_core.engines.flags import check_owned_flags, engine_args_to_flags
from chutes_core.engines.process import OpenAIServerEngine
from chutes_core.engines.template import EngineLaunch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("sglang") is None, reason="SGLang is not installed"
)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    return parser


def sglang_argv(engine_args: object, gpus: int = 1) -> list[str]:
    flags = engine_args_to_flags(engine_args, owned=SGLANG.owned_flags)  # type: ignore[arg-type]
    engine = OpenAIServerEngine("sglang", api_key="secret", port=10101)
    argv = SGLANG.command(
        EngineLaunch("/weights/qwen", "Qwen/Qwen3-8B", gpus, engine, flags, False)
    )
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    return argv[3:]


def test_the_command_parses_to_the_values_we_meant(parser) -> None:
    args = parser.parse_args(
        sglang_argv(
            {
                "mem_fraction_static": 0.85,
                "context_length": 8192,
                "enable_torch_compile": True,
                "disable_radix_cache": False,
                "disable_cuda_graph": True,
                "json_model_override_args": {"rope_scaling": {"factor": 2}},
            },
            gpus=NodeSelector(gpu_count=4).gpu_count,
        )
    )
    assert (args.model_path, args.served_model_name, args.tp_size) == (
        "/weights/qwen",
        "Qwen/Qwen3-8B",
        4,
    )
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 10101, "secret")
    assert (args.mem_fraction_static, args.context_length) == (0.85, 8192)
    assert args.enable_torch_compile is True and args.disable_radix_cache is False
    assert args.disable_cuda_graph is True
    assert args.json_model_override_args == '{"rope_scaling":{"factor":2}}'


def test_a_string_of_engine_args_parses_too(parser) -> None:
    args = parser.parse_args(sglang_argv("--chunked-prefill-size 4096 --log-level warning"))
    assert (args.chunked_prefill_size, args.log_level) == (4096, "warning")


def test_owned_flags_are_real_sglang_flags_and_no_other_flag_is_refused(parser) -> None:
    known = {option for action in parser._actions for option in action.option_strings}
    # --tp is not a flag of its own: argparse expands it to --tp-size, so it is refused too.
    assert set(SGLangTemplate.owned_flags) - {"--tp"} <= known
    assert parser.parse_args(["--model-path", "m", "--tp", "2"]).tp_size == 2
    check_owned_flags(
        sorted(known - set(SGLangTemplate.owned_flags)), SGLANG.owned_flags, field="x"
    )
