"""The plugin against chutes' contract, and the template's arguments."""

from __future__ import annotations

import pytest
from chutes_embeddings import pooling

import chutes_testing as testing
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager


def test_loads_through_its_entry_point() -> None:
    info = testing.check_plugin("embeddings")
    assert info.distribution == "chutes-embeddings"
    assert info.templates == ["embedding", "rerank"]
    assert info.kernels == ["embeddings.mean_pool_normalize"]
    assert set(info.hooks) == {
        "build_image",
        "egress_policy",
        "register_kernels",
        "register_templates",
    }


def test_template_builds_a_servable_chute(minilm) -> None:
    chute = testing.check_template("embedding", username="me", model_name=str(minilm))
    assert [(c.method, c.public_api_path) for c in chute.cords] == [
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
    ]
    assert chute.concurrency == 32 and chute.standard_template == "embedding"


def test_documented_import_path_and_egress_default() -> None:
    from chutes.chute.template.embedding import build_embedding_chute

    manager = get_plugin_manager()
    locked = build_embedding_chute(username="me", model_name="BAAI/bge-small-en-v1.5")
    assert manager.egress_policy(locked) is False
    opened = build_embedding_chute(username="me", model_name="x/y", allow_external_egress=True)
    assert manager.egress_policy(opened) is True


def test_the_image_installs_the_engine_pinned_unless_the_chute_names_one() -> None:
    from chutes.chute.template.embedding import build_embedding_chute
    from chutes_core import Image

    manager = get_plugin_manager()
    default = str(manager.build_image(build_embedding_chute(username="me", model_name="x/y")))
    assert default.startswith("FROM parachutes/python:3.12")
    for pin in ("torch==2.13.0", "sentence-transformers==6.2.0", "chutes-embeddings==0.1.0"):
        assert pin in default.split()  # one shell word each
    assert "vllm" not in default
    on_vllm = build_embedding_chute(username="me", model_name="x/y", engine="vllm")
    assert "vllm==0.32.0" in str(manager.build_image(on_vllm)).split()
    own = Image(username="me", name="mine", tag="1").from_base("python:3.12")
    named = build_embedding_chute(username="me", model_name="x/y", image=own)
    assert str(manager.build_image(named)) == str(own)


@pytest.mark.parametrize("engine", ["sentence-transformers", "vllm"])
def test_a_prebuilt_image_is_kept(engine) -> None:
    from chutes.chute.template.embedding import build_embedding_chute

    chute = build_embedding_chute(
        username="me", model_name="x/y", engine=engine, image="org/prebuilt:1"
    )
    assert get_plugin_manager().build_image(chute) == "org/prebuilt:1"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"engine": "onnx"}, "engine"),
        ({"pooling_type": "max"}, "pooling_type"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_wait_ms": -1}, "max_batch_wait_ms"),
        ({"normalize": "yes"}, "normalize"),
        ({"model_name": " "}, "model_name"),
        ({"engine_args": {"x": 1}}, "engine_args"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    from chutes.chute.template.embedding import build_embedding_chute

    arguments = {"username": "me", "model_name": "x/y", **kwargs}
    with pytest.raises(InvalidValueError, match=field):
        build_embedding_chute(**arguments)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("intfloat/e5-large-v2", "mean"),
        ("intfloat/multilingual-e5-small", "mean"),
        ("sentence-t5-base", "mean"),
        ("jinaai/jina-embeddings-v2-base-en", "mean"),
        ("BAAI/bge-large-en-v1.5", "cls"),
        ("Alibaba-NLP/gte-Qwen2-7B-instruct", "last"),
        ("Qwen/Qwen3-Embedding-0.6B", "last"),
        ("sentence-transformers/all-MiniLM-L6-v2", "mean"),
    ],
)
def test_auto_pooling_by_model_name(name: str, expected: str) -> None:
    assert pooling.by_name(name) == expected


def test_a_models_own_pooling_config_wins(tmp_path, minilm) -> None:
    assert pooling.choose("auto", "BAAI/bge-small", minilm) == ("mean", "declared by the model")
    assert pooling.choose("auto", "BAAI/bge-small", tmp_path) == ("cls", "chosen by model name")
    assert pooling.choose("last", "anything", minilm) == ("last", "requested")


def test_torch_threads_follow_the_cpus_this_process_may_use(tmp_path) -> None:
    import os

    from chutes_embeddings.model import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (affinity + 4)} 100000\n")  # a quota above the affinity
    assert usable_cpus(cpu_max) == affinity
    assert usable_cpus(tmp_path / "absent") == affinity
