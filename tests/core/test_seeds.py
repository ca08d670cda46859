"""The seeds' examples import and build unchanged."""

from __future__ import annotations

import importlib
import warnings

import pytest

from chutes_testing.conformance import check_dockerfile


def test_custom_chute_example(seeds_path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        example = importlib.import_module("example")
    # public_api_method is deprecated in favour of method, and says so.
    assert any("public_api_method is deprecated" in str(w.message) for w in caught)
    chute = example.chute
    assert chute.name == "example" and chute.username == "test"
    assert chute.concurrency == 4
    assert chute.allow_external_egress is False
    assert [(c.name, c.method, c.public_api_path) for c in chute.cords] == [
        ("echo", "POST", "/echo"),
        ("complex", "POST", "/complex"),
        ("image", "GET", "/image"),
    ]
    echo = chute.cords[0]
    assert echo.minimal_input_schema is example.MicroArgs
    assert chute.cords[2].output_content_type == "image/png"
    assert len(chute.startup_hooks) == 1
    dockerfile = str(chute.image)  # the module-level name `image` is rebound to the cord
    assert dockerfile.splitlines()[0] == "FROM parachutes/python:3.12"
    check_dockerfile(dockerfile)


def test_uid_is_uuid5_of_username_and_name() -> None:
    import uuid

    from chutes.chute import Chute

    chute = Chute(username="test", name="example", image="python:3.11")
    assert chute.uid == str(uuid.uuid5(uuid.NAMESPACE_OID, "test::chute::example"))


def test_image_chains_from_the_seeds() -> None:
    from chutes.image import Image

    vllm = (
        Image(
            username="chutes",
            name="vllm",
            tag="0.6.3",
            readme="## vLLM - fast, flexible llm inference",
        )
        .from_base("parachutes/python:3.12")
        .run_command("pip install 'vllm<0.6.4' wheel packaging")
        .run_command("pip install flash-attn")
        .run_command("pip uninstall -y xformers")
    )
    lines = str(vllm).splitlines()
    assert lines == [
        "FROM parachutes/python:3.12",
        "RUN pip install 'vllm<0.6.4' wheel packaging",
        "RUN pip install flash-attn",
        "RUN pip uninstall -y xformers",
    ]
    custom = (
        Image(username="myuser", name="my-ai-app", tag="1.0")
        .from_base("nvidia/cuda:12.2-devel-ubuntu22.04")
        .with_python("3.11")
        .run_command("pip install torch transformers")
    )
    parsed = check_dockerfile(str(custom))
    assert parsed[0] == ("FROM", "nvidia/cuda:12.2-devel-ubuntu22.04")
    assert any("Python-3.11.0.tgz" in args for _, args in parsed)
    faq = (
        Image(username="myuser", name="my-app", tag="1.0")
        .from_base("nvidia/cuda:12.4.1-runtime-ubuntu22.04")
        .run_command("pip install transformers torch")
    )
    check_dockerfile(str(faq))


def test_every_image_directive_renders_a_valid_dockerfile(tmp_path) -> None:
    from chutes.image import Image

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hi')\n")
    image = (
        Image(username="me", name="full", tag="1.2.3")
        .from_base("python:3.12-slim")
        .with_python("3.12.4")
        .apt_install(["curl", "git"])
        .apt_remove("git")
        .with_env("HF_HOME", "/cache/hf")
        .with_env("WORKERS", 4)
        .add("app", "/app", owner="chutes:chutes", permissions="755")
        .set_workdir("/app")
        .set_user("chutes")
        .with_maintainer("me <me@example.com>")
        .with_entrypoint(["chutes", "run", "main:chute"])
        .run_command("echo one\necho two")
    )
    parsed = check_dockerfile(str(image), context=str(tmp_path))
    instructions = [instruction for instruction, _ in parsed]
    for expected in ("FROM", "RUN", "ENV", "ADD", "WORKDIR", "USER", "LABEL", "ENTRYPOINT"):
        assert expected in instructions
    assert image.sources == ("app",)
    assert 'ENV HF_HOME="/cache/hf"' in str(image)
    assert 'ENTRYPOINT ["chutes", "run", "main:chute"]' in str(image)


def test_node_selector_uses_from_the_seeds() -> None:
    from chutes.chute import NodeSelector

    selector = NodeSelector(
        gpu_count=2, min_vram_gb_per_gpu=24, include=["h100", "a100"], exclude=["t4"]
    )
    assert selector.gpu_count == 2 and selector.include == ["h100", "a100"]
    assert NodeSelector().gpu_count == 1 and NodeSelector().min_vram_gb_per_gpu == 16
    NodeSelector(gpu_count=4, min_vram_gb_per_gpu=40)
    NodeSelector(gpu_count=1, min_vram_gb_per_gpu=80)


def test_fastapi_kwargs_pass_through() -> None:
    from chutes.chute import Chute

    chute = Chute(
        username="mycompany",
        name="text-generator",
        image="python:3.11",
        title="My AI API",
        description="Custom AI service",
        version="1.0.0",
    )
    assert chute.title == "My AI API" and chute.version == "1.0.0"
    assert chute.app is chute


def test_read_only_properties() -> None:
    from chutes.chute import Chute

    chute = Chute(username="me", name="thing")
    for attribute in (
        "name",
        "uid",
        "username",
        "tagline",
        "readme",
        "node_selector",
        "image",
        "cords",
        "jobs",
    ):
        with pytest.raises(AttributeError):
            setattr(chute, attribute, "x")
    assert chute.config.name == "thing" and chute.config.concurrency == 1
