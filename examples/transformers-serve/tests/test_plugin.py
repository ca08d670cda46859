"""The plugin meets chutes' contract (the conformance kit) and builds sane chutes."""

from __future__ import annotations

import pytest

import chutes_testing as testing
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager


def test_loads_through_its_entry_point() -> None:
    info = testing.check_plugin("transformers_serve")
    assert info.distribution == "chutes-transformers-serve"
    assert info.templates == ["transformers_serve"]
    assert info.hooks == ["build_image", "egress_policy", "register_templates"]


def test_template_builds_a_servable_chute() -> None:
    chute = testing.check_template(
        "transformers_serve", username="me", model_name="org/Tiny-Model", revision="abc123"
    )
    assert chute.name == "tiny-model"
    assert [(c.method, c.public_api_path, c.passthrough) for c in chute.cords] == [
        ("POST", "/v1/chat/completions", True),
        ("POST", "/v1/completions", True),
        ("GET", "/v1/models", False),
    ]


def test_importable_from_the_documented_path() -> None:
    from chutes.chute.template.transformers_serve import build_transformers_serve_chute

    pack = build_transformers_serve_chute(username="me", model_name="/models/x")
    assert pack.chat.passthrough_port == 10102


def test_egress_is_locked_unless_the_chute_says_otherwise() -> None:
    from chutes.chute.template.transformers_serve import build_transformers_serve_chute

    manager = get_plugin_manager()
    locked = build_transformers_serve_chute(username="me", model_name="/models/x")
    assert manager.egress_policy(locked) is False
    assert manager.egress_source(locked) == "transformers_serve"
    opened = build_transformers_serve_chute(
        username="me", model_name="/models/x", allow_external_egress=True
    )
    assert manager.egress_policy(opened) is True


def test_image_installs_the_engine_unless_the_user_brings_one() -> None:
    from chutes.chute.template.transformers_serve import build_transformers_serve_chute
    from chutes.image import Image

    manager = get_plugin_manager()
    default = manager.build_image(build_transformers_serve_chute(username="me", model_name="/m/x"))
    assert "transformers[serving]" in str(default)
    mine = Image(username="me", name="mine", tag="1")
    chosen = manager.build_image(
        build_transformers_serve_chute(username="me", model_name="/m/x", image=mine)
    )
    assert chosen is mine
    prebuilt = manager.build_image(
        build_transformers_serve_chute(username="me", model_name="/m/x", image="org/ts:1")
    )
    assert prebuilt == "org/ts:1"


def test_bad_model_name_is_refused() -> None:
    from chutes.chute.template.transformers_serve import build_transformers_serve_chute

    with pytest.raises(InvalidValueError, match="model_name"):
        build_transformers_serve_chute(username="me", model_name="  ")
