"""The seeds' examples import and build unchanged.

Every example in the seed documents that defines a chute and runs as printed is
kept byte for byte in tests/seeds/ (excluded from ruff): SEEDS below says where
each comes from. Fragments that assume the page's ``from chutes.chute import
Chute, NodeSelector`` run with those names given. Left out, because they do not
run as printed: fragments with ``...`` placeholders (README scaling, deploying's
concurrency/scaling/egress, most of understanding-chutes' parameter list),
deploying's ``image=my_image`` (undefined) and its ``Chute(name=...)`` without
a username.
"""

from __future__ import annotations

import importlib
import os
import runpy
import warnings
from pathlib import Path

import pytest

from chutes.chute import Chute, NodeSelector
from chutes_core.errors import InvalidValueError
from chutes_testing.conformance import check_dockerfile

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
#: The seed documents, beside the repository where they are checked out (../shared/seeds).
DOCS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
#: file in tests/seeds -> (seed document, line of its first line there)
SEEDS = {
    "example.py": ("chutes-package-readme.md", 309),
    "llama1b.py": ("chutes-package-readme.md", 158),
    "understanding.py": ("understanding-chutes.md", 19),
    "faq_image.py": ("faq.md", 94),
    "faq_scaling.py": ("faq.md", 160),
    "faq_environments.py": ("faq.md", 174),
    "faq_environment_name.py": ("faq.md", 194),
    "faq_fast_llm.py": ("faq.md", 209),
    "faq_warm.py": ("faq.md", 258),
    "faq_scale_to_zero.py": ("faq.md", 318),
    "faq_storage.py": ("faq.md", 490),
    "api_image.py": ("chute-api-reference.md", 58),
    "api_tagline.py": ("chute-api-reference.md", 80),
    "api_readme.py": ("chute-api-reference.md", 97),
    "api_standard_template.py": ("chute-api-reference.md", 123),
    "api_revision.py": ("chute-api-reference.md", 134),
    "api_node_selector.py": ("chute-api-reference.md", 145),
    "api_concurrency.py": ("chute-api-reference.md", 165),
    "api_fastapi_kwargs.py": ("chute-api-reference.md", 181),
    "api_template.py": ("chute-api-reference.md", 937),
}
#: Seeds built by a template from a plugin: file -> (plugin, builder, model).
TEMPLATE_SEEDS = {
    "llama1b.py": ("vllm", "build_vllm_chute", "unsloth/Llama-3.2-1B-Instruct"),
    "faq_fast_llm.py": ("vllm", "build_vllm_chute", "microsoft/DialoGPT-medium"),
    "api_template.py": ("vllm", "build_vllm_chute", "gpt2"),
}


def run_seed(name: str) -> dict:
    """Run a seed file as printed, with the names its page imports beforehand."""
    return runpy.run_path(
        str(SEEDS_DIR / name),
        init_globals={"Chute": Chute, "NodeSelector": NodeSelector},
        run_name=name.removesuffix(".py"),
    )


def test_every_seed_file_is_listed() -> None:
    assert sorted(path.name for path in SEEDS_DIR.glob("*.py")) == sorted(SEEDS)


@pytest.mark.skipif(not DOCS.is_dir(), reason=f"the seed documents are not at {DOCS}")
@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_files_are_the_documents_byte_for_byte(name: str) -> None:
    document, first = SEEDS[name]
    text = (SEEDS_DIR / name).read_text()
    lines = (DOCS / document).read_text().splitlines(keepends=True)
    assert "".join(lines[first - 1 : first - 1 + len(text.splitlines())]) == text


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


def test_understanding_chutes_example() -> None:
    chute = run_seed("understanding.py")["chute"]
    assert (chute.username, chute.name, chute.concurrency) == ("myuser", "my-ai-app", 4)
    assert chute.tagline == "My awesome AI application"
    assert (chute.node_selector.gpu_count, chute.node_selector.min_vram_gb_per_gpu) == (1, 16)
    assert [(c.name, c.method, c.public_api_path) for c in chute.cords] == [
        ("predict", "POST", "/predict")
    ]
    assert len(chute.startup_hooks) == 1 and chute.jobs == []
    parsed = check_dockerfile(str(chute.image))
    assert parsed[0] == ("FROM", "nvidia/cuda:12.2-devel-ubuntu22.04")
    assert any("Python-3.11.0.tgz" in args for _, args in parsed)
    assert parsed[-1] == ("RUN", "pip install torch transformers")


def test_faq_examples() -> None:
    image = run_seed("faq_image.py")["chute"].image
    assert str(image).splitlines() == [
        "FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "RUN pip install transformers torch",
    ]
    check_dockerfile(str(image))
    both = run_seed("faq_environments.py")
    assert (both["prod_chute"].name, both["dev_chute"].name) == ("llm-prod", "llm-dev")
    assert both["prod_chute"].node_selector.gpu_count == 1
    named = run_seed("faq_environment_name.py")["chute"]
    assert named.name == f"my-app-{os.getenv('ENVIRONMENT', 'dev')}"


@pytest.mark.parametrize(
    ("name", "argument"),
    [
        ("faq_scaling.py", "min_replicas"),
        ("faq_warm.py", "min_replicas"),
        ("faq_scale_to_zero.py", "min_replicas"),
        ("faq_storage.py", "storage_gb"),
    ],
)
def test_faq_platform_settings_the_sdk_does_not_take_are_refused_by_name(name, argument) -> None:
    # min_replicas, max_replicas and storage_gb are not Chute arguments: the call fails
    # naming the argument rather than building a chute that ignores it.
    with pytest.raises(TypeError, match=argument):
        run_seed(name)


def test_api_reference_examples() -> None:
    image = run_seed("api_image.py")["chute"]
    assert (image.username, image.name, image.image.name) == (
        "mycompany",
        "text-generator",
        "custom-ai",
    )
    assert run_seed("api_tagline.py")["chute"].tagline == (
        "Advanced text generation with GPT models"
    )
    readme = run_seed("api_readme.py")
    assert readme["chute"].readme == readme["readme"]
    assert readme["readme"].startswith("\n# Text Generation API")
    assert run_seed("api_standard_template.py")["chute"].standard_template == "vllm"
    assert run_seed("api_revision.py")["chute"].revision == "v1.2.0"
    selector = run_seed("api_node_selector.py")["chute"].node_selector
    assert (selector.gpu_count, selector.include, selector.exclude) == (2, ["h100", "a100"], ["t4"])
    concurrency = run_seed("api_concurrency.py")["chute"]
    assert concurrency.concurrency == 8 and concurrency.image is None
    fastapi = run_seed("api_fastapi_kwargs.py")["chute"]
    assert (fastapi.title, fastapi.description, fastapi.version) == (
        "My AI API",
        "Custom AI service",
        "1.0.0",
    )


def _plugin_expected(plugin: str) -> bool:
    expected = os.environ.get("CHUTES_EXPECT_PLUGINS", "")
    return plugin in {name.strip() for name in expected.split(",")}


@pytest.mark.parametrize("name", sorted(TEMPLATE_SEEDS))
def test_template_seeds_stop_on_the_missing_revision_and_say_how_to_find_it(name) -> None:
    plugin, builder, model = TEMPLATE_SEEDS[name]
    from chutes_core.plugins import get_plugin_manager

    if plugin not in {t.name for t in get_plugin_manager().templates}:
        # The all_plugins session installs every plugin and sets CHUTES_EXPECT_PLUGINS:
        # there this must run, not skip.
        assert not _plugin_expected(plugin), f"the {plugin} plugin should be installed"
        pytest.skip(f"{name} needs the {plugin} plugin (runs in the all_plugins session)")
    with pytest.raises(InvalidValueError) as caught:
        run_seed(name)
    message = str(caught.value)
    assert message.startswith(f"{builder}(revision): got None")
    assert f"{builder}(..., revision=<commit>)" in message
    # Offline (as the suite runs), the error gives the command to find the commit.
    assert f"huggingface_hub.model_info('{model}').sha" in message
    assert f"https://huggingface.co/{model}/commits/main" in message
