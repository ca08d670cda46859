"""The shared template for OpenAI-compatible engines: flags, revision, cords, serving.

Serving runs a stand-in engine (chutes_testing.openai_standin); the
real engines are exercised by their plugins' suites.
"""

from __future__ import annotations

import json
import logging
import sys

import pytest

from chutes.chute import Chute, NodeSelector
from chutes_core.chute import ChutePack
from chutes_core.engines.devices import gpu_visible
from chutes_core.engines.flags import (
    SERVER_FLAGS,
    engine_args_to_flags,
    flag_names,
    standard_owned_flags,
)
from chutes_core.engines.hooks import TemplateHooks
from chutes_core.engines.model import check_revision, chute_name_for
from chutes_core.engines.process import OpenAIServerEngine
from chutes_core.engines.routes import OPENAI_ROUTES, add_passthrough_cords
from chutes_core.engines.template import EngineLaunch, OpenAIEngineTemplate
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import PluginManager
from chutes_testing import ChuteClient
from chutes_testing.conformance import check_dockerfile
from chutes_testing.running import free_port

OWNED = {**SERVER_FLAGS, "--model": "model_name", "--tensor-parallel-size": "gpus", "-tp": "gpus"}


class StandinTemplate(OpenAIEngineTemplate):
    """Serve a stand-in engine (canned answers) the way real engines are served."""

    name = "standin"
    engine_requirement = "standin-engine==1.0"
    owned_flags = OWNED

    def __init__(self, port: int) -> None:
        self.port = port

    def command(self, launch: EngineLaunch) -> list[str]:
        return [
            sys.executable,
            "-m",
            "chutes_testing.openai_standin",
            "--model",
            launch.served_model_name,
            *launch.engine.server_flags(),
            *launch.flags,
        ]


def standin_template() -> StandinTemplate:
    return StandinTemplate(free_port())


# engine_args -> flags --------------------------------------------------------------
def test_a_dict_maps_to_flags() -> None:
    flags = engine_args_to_flags(
        {
            "max_model_len": 256,
            "gpu_memory_utilization": 0.9,
            "enable_prefix_caching": True,
            "enforce_eager": False,
            "quantization": None,
            "middleware": ["a.b", "c.d"],
            "limit_mm_per_prompt": {"image": 2},
            "--already-a-flag": "x",
        }
    )
    assert flags == [
        "--max-model-len",
        "256",
        "--gpu-memory-utilization",
        "0.9",
        "--enable-prefix-caching",
        "--middleware",
        "a.b",
        "--middleware",
        "c.d",
        "--limit-mm-per-prompt",
        '{"image":2}',
        "--already-a-flag",
        "x",
    ]


def test_a_string_is_split_like_a_shell_line() -> None:
    assert engine_args_to_flags("--max-model-len 256 --chat-template '{{ x }} y'") == [
        "--max-model-len",
        "256",
        "--chat-template",
        "{{ x }} y",
    ]
    assert engine_args_to_flags(None) == [] and engine_args_to_flags({}) == []


@pytest.mark.parametrize(
    ("engine_args", "message"),
    [
        (5, "a dict of flag names to values"),
        ("--chat-template 'unclosed", "a command line that splits into flags"),
        ({"max model len": 1}, "a flag name such as 'max_model_len'"),
        ({3: 1}, "a flag name"),
        ({"max_model_len": object()}, "a string or a number"),
        ({"middleware": [True]}, "a string or a number"),
    ],
)
def test_bad_engine_args_say_what_is_allowed(engine_args, message) -> None:
    with pytest.raises(InvalidValueError, match=message) as caught:
        engine_args_to_flags(engine_args, field="build_x_chute(engine_args)")
    assert str(caught.value).startswith("build_x_chute(engine_args")


@pytest.mark.parametrize(
    ("engine_args", "flag", "source"),
    [
        ({"tensor_parallel_size": 2}, "--tensor-parallel-size", "gpus"),
        ("--tensor_parallel_size=2", "--tensor-parallel-size", "gpus"),
        ("-tp 2", "-tp", "gpus"),
        ({"api_key": "mine"}, "--api-key", "a random key shared by the chute and the engine"),
        ("--port=9000", "--port", "the chute forwards to that port"),
        ("--model x", "--model", "model_name"),
        ("--tensor-par 2", "--tensor-par", "abbreviates --tensor-parallel-size"),
    ],
)
def test_flags_the_template_owns_are_refused_naming_their_source(engine_args, flag, source) -> None:
    with pytest.raises(InvalidValueError) as caught:
        engine_args_to_flags(engine_args, owned=OWNED, field="engine_args")
    assert caught.value.value == flag
    assert source in str(caught.value)
    assert "a flag the template does not set itself" in str(caught.value)


def test_values_that_look_like_flags_are_not_flags() -> None:
    flags = engine_args_to_flags("--seed -1 --model-impl vllm", owned=OWNED)
    assert flag_names(flags) == ["--seed", "--model-impl"]


# Model, name, device ----------------------------------------------------------------
def test_a_hub_model_needs_a_revision_and_the_error_says_how_to_find_one() -> None:
    with pytest.raises(InvalidValueError) as caught:
        check_revision("build_x_chute", "org/model", None)
    message = str(caught.value)
    assert message.startswith("build_x_chute(revision): got None")
    assert "https://huggingface.co/org/model/commits/main" in message
    assert "huggingface_hub.model_info('org/model').sha" in message
    with pytest.raises(InvalidValueError, match="a commit hash"):
        check_revision("build_x_chute", "org/model", "  ")


def test_where_the_hub_answers_the_error_gives_its_current_commit(monkeypatch) -> None:
    import types

    asked = []
    sha = "4b1e3ea7d1a0c1a3b0a59d5f3b8a4a6f9d2c6e10"

    def model_info(name, timeout=None):
        asked.append(name)
        return types.SimpleNamespace(sha=sha)

    monkeypatch.setitem(
        sys.modules, "huggingface_hub", types.SimpleNamespace(model_info=model_info)
    )
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(InvalidValueError) as caught:
        check_revision("build_x_chute", "org/model", None)
    assert asked == ["org/model"]
    assert f"revision={sha!r}" in str(caught.value)
    assert "build_x_chute(..., revision=<commit>)" in str(caught.value)
    # Offline, the hub is not asked: the error gives the command instead.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidValueError, match="model_info"):
        check_revision("build_x_chute", "org/model", None)
    assert asked == ["org/model"]


def test_a_local_model_needs_no_revision_and_a_branch_is_a_warning(tmp_path, caplog) -> None:
    assert check_revision("build_x_chute", str(tmp_path), None) is None
    sha = "0123456789abcdef0123456789abcdef01234567"
    with caplog.at_level(logging.WARNING, logger="chutes.templates"):
        assert check_revision("build_x_chute", "org/model", sha) == sha
        assert not caplog.records
        assert check_revision("build_x_chute", "org/model", "main") == "main"
    assert "'main' of org/model is not a commit hash" in caplog.text


def test_chute_names_come_from_model_names(tmp_path) -> None:
    assert chute_name_for("unsloth/Llama-3.2-1B-Instruct") == "unsloth-llama-3-2-1b-instruct"
    (tmp_path / "Tiny_Llama").mkdir()
    assert chute_name_for(str(tmp_path / "Tiny_Llama") + "/") == "tiny-llama"
    assert len(chute_name_for("o/" + "x" * 100)) == 63
    with pytest.raises(InvalidValueError, match="pass name= explicitly"):
        chute_name_for("///")
    assert chute_name_for("///", default="embeddings") == "embeddings"
    assert chute_name_for("Modèle_Ünï") == "mod-le-n"  # only [a-z0-9-] survive


def test_hidden_cuda_devices_mean_no_gpu(monkeypatch) -> None:
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert gpu_visible() is False


def test_standard_owned_flags_cover_every_spelling() -> None:
    owned = standard_owned_flags(model=["--model-path", "--model"], tensor_parallel=["--tp"])
    assert owned["--model"] == owned["--served-model-name"] == "model_name"
    assert owned["--tp"] == "node_selector.gpu_count"
    assert set(SERVER_FLAGS) | {"--revision", "--model-path"} <= set(owned)


def test_python_command_puts_the_users_flags_last() -> None:
    engine = OpenAIServerEngine("x", port=1234, api_key="k")
    launch = EngineLaunch("/m", "org/m", 2, engine, ["--dtype", "half"], cpu=False)
    argv = launch.python_command(
        "engine.server", model_flag="--model", tensor_parallel_flag="--tp", defaults=["--quiet"]
    )
    assert argv == [
        sys.executable,
        "-m",
        "engine.server",
        "--model",
        "/m",
        "--served-model-name",
        "org/m",
        "--tp",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        "1234",
        "--api-key",
        "k",
        "--quiet",
        "--dtype",
        "half",
    ]


def test_defaults_apply_only_where_the_user_said_nothing() -> None:
    def launch(*flags: str) -> EngineLaunch:
        engine = OpenAIServerEngine("x")
        return EngineLaunch("/m", "m", 1, engine, list(flags), cpu=True)

    defaults = (["--dtype", "float32"], ["--enforce-eager"])
    assert launch().unless_given(*defaults) == ["--dtype", "float32", "--enforce-eager"]
    assert launch("--dtype=bfloat16").unless_given(*defaults) == ["--enforce-eager"]
    assert launch("--no-enforce-eager").unless_given(*defaults) == ["--dtype", "float32"]


# The template -------------------------------------------------------------------------
def test_the_builder_is_named_documented_and_shaped_like_the_upstream_templates() -> None:
    import inspect

    template = standin_template()
    build = template.builder()
    assert template.builder() is build
    assert build.__name__ == "build_standin_chute" and build.__module__ == __name__
    doc = inspect.getdoc(build)
    assert doc.startswith("Serve a stand-in engine")
    assert "chat (POST /v1/chat/completions)" in doc and "models (GET /v1/models)" in doc
    parameters = list(inspect.signature(build).parameters)
    assert parameters[:8] == [
        "username",
        "model_name",
        "node_selector",
        "image",
        "tagline",
        "readme",
        "concurrency",
        "engine_args",
    ]
    assert "revision" in parameters and "allow_external_egress" in parameters


def test_build_checks_inputs_before_anything_runs(tmp_path) -> None:
    build = standin_template().builder()
    with pytest.raises(InvalidValueError, match=r"build_standin_chute\(revision\)"):
        build(username="me", model_name="org/model")
    with pytest.raises(InvalidValueError, match=r"build_standin_chute\(engine_args\)"):
        build(username="me", model_name=str(tmp_path), engine_args={"port": 1})
    with pytest.raises(InvalidValueError, match=r"build_standin_chute\(model_name\)"):
        build(username="me", model_name="")


def test_build_makes_a_pack_with_one_passthrough_cord_per_route(tmp_path) -> None:
    template = standin_template()
    pack = template.builder()(
        username="me",
        model_name="org/Model-1B",
        revision="0123456789abcdef0123456789abcdef01234567",
        node_selector=NodeSelector(gpu_count=2),
    )
    assert isinstance(pack, ChutePack)
    chute = pack.chute
    assert chute.name == "org-model-1b" and chute.standard_template == "standin"
    assert chute.concurrency == 32 and chute.allow_external_egress is None
    assert OpenAIServerEngine.of(chute) is not None
    routes = [(c.name, c.method, c.public_api_path, c.path) for c in chute.cords]
    assert routes == [
        ("chat", "POST", "/v1/chat/completions", "/chat"),
        ("completion", "POST", "/v1/completions", "/completion"),
        ("models", "GET", "/v1/models", "/models"),
    ]
    assert pack.chat is chute.cords[0]
    for cord in chute.cords:
        assert cord.passthrough and cord.passthrough_port == template.port
        assert cord.passthrough_path == cord.public_api_path
        assert cord.to_dict()["doc"]


def test_template_hooks_give_the_image_and_the_egress_default(tmp_path) -> None:
    template = standin_template()
    manager = PluginManager(
        entry_points=False, plugins=[("standin", TemplateHooks.for_engine(template))]
    ).load()
    assert manager.templates.get("standin").builder is template.builder()
    chute = template.builder()(username="me", model_name=str(tmp_path))
    assert manager.egress_policy(chute) is False
    assert manager.egress_source(chute) == "standin"
    dockerfile = str(manager.build_image(chute))
    check_dockerfile(dockerfile)
    assert "pip install --no-cache-dir standin-engine==1.0 chutes==" in dockerfile
    open_chute = template.builder()(
        username="me", model_name=str(tmp_path), allow_external_egress=True, image="me/img:1"
    )
    assert manager.egress_policy(open_chute) is True
    # A chute that names an image is left to it (the built-in default answers).
    assert "standin-engine" not in str(manager.build_image(open_chute))
    other = Chute(username="me", name="other")
    assert manager.egress_policy(other) is True


def test_template_hooks_refuse_a_reference_to_something_else() -> None:
    with pytest.raises(InvalidValueError, match="a reference to an OpenAIEngineTemplate"):
        TemplateHooks.for_engine("chutes_core.engines.routes:OPENAI_ROUTES")


def test_add_passthrough_cords_on_any_chute() -> None:
    chute = Chute(username="me", name="custom")
    cords = add_passthrough_cords(chute, 9999, OPENAI_ROUTES[:1])
    assert list(cords) == ["chat"] and chute.cords[0].passthrough_port == 9999


async def test_served_chute_forwards_plain_streamed_and_get_requests(tmp_path) -> None:
    template = standin_template()
    manager = PluginManager(
        entry_points=False, plugins=[("standin", TemplateHooks.for_engine(template))]
    )
    pack = template.builder()(username="me", model_name=str(tmp_path), engine_args="--unknown 1")
    model = str(tmp_path)
    async with ChuteClient(pack, plugins=manager, dev=False) as client:
        models = await client.get("/v1/models", headers={"authorization": "Bearer user-key"})
        assert models.status_code == 200, models.text
        assert models.json()["data"][0]["id"] == model
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        plain = await client.post("/v1/chat/completions", json=body)
        assert plain.json()["choices"][0]["message"]["content"] == "stand-in reply"
        streamed = await client.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        deltas = [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]]
        assert "".join(deltas) == "stand-in reply"
        completion = await client.post("/v1/completions", json={"model": model, "prompt": "a"})
        assert completion.json()["object"] == "text_completion"
        # Internal paths (production mode, always POST) reach the same engine routes.
        internal = await client.post("/completion", json={"model": model, "prompt": "a"})
        assert internal.json()["choices"][0]["text"] == "stand-in reply"
        internal_models = await client.post("/models", json={})
        assert internal_models.status_code == 200, internal_models.text
        assert internal_models.json()["data"][0]["id"] == model
        errors = await client.post("/v1/completions", json={"model": "nope", "prompt": "a"})
        assert errors.status_code == 404 and "does not exist" in errors.text


def test_the_builder_takes_the_upstream_positional_arguments(tmp_path) -> None:
    build = standin_template().builder()
    pack = build("me", str(tmp_path), NodeSelector(gpu_count=2), "org/prebuilt:1", "a tagline")
    assert pack.chute.node_selector.gpu_count == 2 and pack.chute.image == "org/prebuilt:1"
    assert pack.chute.tagline == "a tagline" and pack.chute.concurrency == 32
    with pytest.raises(TypeError, match=r"build_standin_chute\(\).*'gpus'"):
        build("me", str(tmp_path), gpus=2)
