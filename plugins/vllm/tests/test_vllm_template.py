"""build_vllm_chute without the engine: registration, command line, CPU mode, routing.

Routing is checked against the stand-in engine (chutes_testing.openai_standin),
because vLLM is not installed in every environment that runs this module; the
real vLLM is in test_vllm_e2e.py and, for the command line, test_vllm_parser_accepts_our_command below.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import requires

import pytest
from chutes_vllm.template import VLLM, VLLM_VERSION, VLLMTemplate, build_vllm_chute

import chutes_testing as testing
from chutes.chute import NodeSelector
from chutes_core.engines.flags import check_owned_flags, flag_names
from chutes_core.engines.process import OpenAIServerEngine
from chutes_core.engines.template import EngineLaunch
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager
from chutes_testing import ChuteClient
from chutes_testing.running import free_port

SHA = "5f3c09ab6e1d2c7b8a9f0e1d2c3b4a5968778695"


def launch(*flags: str, cpu: bool = False, gpus: int = 1) -> EngineLaunch:
    engine = OpenAIServerEngine("vllm", api_key="k")
    return EngineLaunch("/models/tiny", "org/tiny", gpus, engine, list(flags), cpu=cpu)


def test_the_plugin_registers_the_template_under_the_documented_import_path() -> None:
    info = testing.check_plugin("vllm")
    assert info.templates == ["vllm"] and info.distribution == "chutes-vllm"
    assert info.egress == {"vllm": False}
    from chutes.chute.template.vllm import build_vllm_chute as imported

    assert imported is build_vllm_chute


def test_the_template_builds_a_servable_chute(tmp_path) -> None:
    chute = testing.check_template("vllm", username="me", model_name=str(tmp_path))
    assert chute.standard_template == "vllm" and chute.concurrency == 32
    assert [(c.name, c.method, c.public_api_path) for c in chute.cords] == [
        ("chat", "POST", "/v1/chat/completions"),
        ("completion", "POST", "/v1/completions"),
        ("models", "GET", "/v1/models"),
        ("tokenize", "POST", "/tokenize"),
        ("detokenize", "POST", "/detokenize"),
    ]


def test_egress_is_closed_unless_the_chute_opens_it(tmp_path) -> None:
    manager = get_plugin_manager()
    closed = build_vllm_chute(username="me", model_name=str(tmp_path))
    opened = build_vllm_chute(username="me", model_name=str(tmp_path), allow_external_egress=True)
    assert (manager.egress_policy(closed), manager.egress_source(closed)) == (False, "vllm")
    assert (manager.egress_policy(opened), manager.egress_source(opened)) == (True, "chute")


def test_the_default_image_pins_the_engine_the_extra_pins(tmp_path) -> None:
    chute = build_vllm_chute(username="me", model_name=str(tmp_path))
    dockerfile = str(get_plugin_manager().build_image(chute))
    testing.check_dockerfile(dockerfile)
    assert f"vllm=={VLLM_VERSION}" in dockerfile and "chutes-vllm==" in dockerfile
    assert f'vllm=={VLLM_VERSION}; extra == "engine"' in (requires("chutes-vllm") or [])


def test_a_prebuilt_image_is_kept_not_replaced_by_a_plain_one(tmp_path) -> None:
    chute = build_vllm_chute(username="me", model_name=str(tmp_path), image="org/prebuilt:1")
    assert get_plugin_manager().build_image(chute) == "org/prebuilt:1"


def test_a_hub_model_without_revision_is_refused_with_how_to_find_one() -> None:
    with pytest.raises(InvalidValueError, match=r"build_vllm_chute\(revision\)") as caught:
        build_vllm_chute(username="me", model_name="unsloth/Llama-3.2-1B-Instruct")
    assert "model_info('unsloth/Llama-3.2-1B-Instruct').sha" in str(caught.value)
    chute = build_vllm_chute(
        username="me", model_name="unsloth/Llama-3.2-1B-Instruct", revision=SHA
    )
    assert chute.name == "unsloth-llama-3-2-1b-instruct" and chute.revision == SHA


@pytest.mark.parametrize(
    ("engine_args", "source"),
    [
        ({"tensor_parallel_size": 2}, "node_selector.gpu_count"),
        ("-tp 2", "node_selector.gpu_count"),
        ("--served-model-name other", "model_name"),
        ({"model": "other"}, "model_name"),
        ({"revision": "main"}, "revision"),
        ("--host 0.0.0.0", "loopback only"),
    ],
)
def test_flags_the_template_sets_are_refused(tmp_path, engine_args, source) -> None:
    with pytest.raises(InvalidValueError, match=r"build_vllm_chute\(engine_args\)") as caught:
        build_vllm_chute(username="me", model_name=str(tmp_path), engine_args=engine_args)
    assert source in str(caught.value)


def test_the_command_on_gpus() -> None:
    argv = VLLM.command(launch("--max-model-len", "4096", gpus=4))
    assert argv == [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/models/tiny",
        "--served-model-name",
        "org/tiny",
        "--tensor-parallel-size",
        "4",
        "--host",
        "127.0.0.1",
        "--port",
        "10101",
        "--api-key",
        "k",
        "--max-model-len",
        "4096",
    ]
    assert "VLLM_CPU_KVCACHE_SPACE" not in VLLM.environment(launch())
    assert VLLM.environment(launch())["VLLM_NO_USAGE_STATS"] == "1"


def test_cpu_mode_adds_its_defaults_unless_engine_args_decide(monkeypatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu = launch("--max-model-len", "256", cpu=True)
    assert VLLM.command(cpu)[-5:] == [
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "256",
    ]
    assert VLLM.environment(cpu)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    mine = launch("--dtype", "bfloat16", cpu=True)
    assert flag_names(VLLM.command(mine)).count("--dtype") == 1
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "8")
    assert "VLLM_CPU_KVCACHE_SPACE" not in VLLM.environment(cpu)


async def test_node_selector_sets_the_tensor_parallel_size(tmp_path, monkeypatch) -> None:
    # The startup hook builds the engine's command line; record it instead of starting vLLM.
    started: list[list[str]] = []

    async def record(self, chute, argv, **options) -> None:
        started.append(list(argv))

    monkeypatch.setattr(OpenAIServerEngine, "start", record)
    for gpus in (8, 2):
        chute = build_vllm_chute(
            username="me", model_name=str(tmp_path), node_selector=NodeSelector(gpu_count=gpus)
        )
        for hook in chute.startup_hooks:
            await hook.fn(chute.chute)
        argv = started.pop()
        assert argv[argv.index("--tensor-parallel-size") + 1] == str(gpus), argv


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_parser_accepts_our_command_and_knows_every_flag_we_own() -> None:
    # The parser `python -m vllm.entrypoints.openai.api_server` builds in vLLM 0.32.
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    argv = VLLM.command(
        launch("--max-model-len", "256", "--enable-prefix-caching", cpu=True, gpus=2)
    )
    args = parser.parse_args(argv[3:])
    validate_parsed_serve_args(args)
    assert (args.model, args.served_model_name, args.tensor_parallel_size) == (
        "/models/tiny",
        ["org/tiny"],
        2,
    )
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 10101, ["k"])
    assert (args.dtype, args.enforce_eager, args.max_model_len) == ("float32", True, 256)
    known = {option for action in parser._actions for option in action.option_strings}
    assert set(VLLMTemplate.owned_flags) <= known
    # Every other real flag passes the owned-flag check (no false refusals).
    check_owned_flags(sorted(known - set(VLLMTemplate.owned_flags)), VLLM.owned_flags, field="x")


class StandinVLLM(VLLMTemplate):
    """vLLM's routes and settings, with the stand-in engine in place of vLLM."""

    def command(self, launch: EngineLaunch) -> list[str]:
        engine_module = "chutes_testing.openai_standin"
        flags = launch.engine.server_flags()
        return [sys.executable, "-m", engine_module, "--model", launch.served_model_name, *flags]


async def test_every_route_is_forwarded_with_the_engine_key(tmp_path) -> None:
    template = StandinVLLM()
    template.port = free_port()
    chute = template.builder()(username="me", model_name=str(tmp_path), engine_args="--seed 1")
    auth = {"authorization": "Bearer the-callers-key"}
    async with ChuteClient(chute, dev=False, headers=auth) as client:
        tokens = (await client.post("/tokenize", json={"prompt": "hi"})).json()["tokens"]
        assert tokens == [104, 105]
        text = await client.post("/detokenize", json={"tokens": tokens})
        assert text.json() == {"prompt": "hi"}
        models = await client.get("/v1/models")
        assert [m["id"] for m in models.json()["data"]] == [str(tmp_path)]
