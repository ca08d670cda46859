"""build_sglang_chute as users and the host see it, without the engine."""

from __future__ import annotations

import pytest
from chutes_sglang.template import SGLANG_VERSION, build_sglang_chute

import chutes_testing as testing
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager


def test_listed_with_its_template_and_closed_egress() -> None:
    info = testing.check_plugin("sglang")
    assert (info.distribution, info.templates, info.egress) == (
        "chutes-sglang",
        ["sglang"],
        {"sglang": False},
    )
    from chutes.chute.template.sglang import build_sglang_chute as documented

    assert documented is build_sglang_chute


def test_cords_are_the_openai_routes_without_tokenize(tmp_path) -> None:
    chute = testing.check_template("sglang", username="me", model_name=str(tmp_path))
    routes = {c.public_api_path: c.method for c in chute.cords}
    assert routes == {
        "/v1/chat/completions": "POST",
        "/v1/completions": "POST",
        "/v1/models": "GET",
    }
    assert get_plugin_manager().egress_policy(chute) is False


def test_image_installs_the_pinned_engine_unless_the_chute_brings_one(tmp_path) -> None:
    manager = get_plugin_manager()
    default = build_sglang_chute(username="me", model_name=str(tmp_path))
    assert f"pip install --no-cache-dir sglang=={SGLANG_VERSION} " in str(
        manager.build_image(default)
    )
    from chutes.image import Image

    own = Image(username="me", name="sglang-nightly", tag="1").run_command("pip install sglang")
    custom = build_sglang_chute(username="me", model_name=str(tmp_path), image=own)
    assert manager.build_image(custom) is own
    prebuilt = build_sglang_chute(username="me", model_name=str(tmp_path), image="org/sglang:1")
    assert manager.build_image(prebuilt) == "org/sglang:1"


@pytest.mark.parametrize("flag", ["--tp 2", "--tp-size=2", "--model-path /x", "--api-key k"])
def test_owned_flags_are_refused(tmp_path, flag) -> None:
    with pytest.raises(InvalidValueError, match="a flag the template does not set itself"):
        build_sglang_chute(username="me", model_name=str(tmp_path), engine_args=flag)


def test_revision_is_required_for_hub_models() -> None:
    with pytest.raises(InvalidValueError, match=r"build_sglang_chute\(revision\): got None"):
        build_sglang_chute(username="me", model_name="Qwen/Qwen3-8B")
