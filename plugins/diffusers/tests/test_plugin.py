"""The plugin against chutes' contract; the template's arguments and the request schema."""

from __future__ import annotations

import pydantic
import pytest
from chutes_diffusers.schema import GenerationInput

import chutes_testing as testing
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager


def test_loads_through_its_entry_point() -> None:
    info = testing.check_plugin("diffusers")
    assert info.distribution == "chutes-diffusers"
    assert info.templates == ["diffusion"] and info.kernels == ["diffusion.to_uint8_nhwc"]


def test_template_builds_a_servable_chute() -> None:
    chute = testing.check_template(
        "diffusion",
        username="me",
        name="sdxl",
        model_name_or_url="stabilityai/sdxl",
        revision="abc",
    )
    (generate,) = chute.cords
    assert (generate.method, generate.public_api_path) == ("POST", "/generate")
    assert generate.output_content_type == "image/jpeg"
    assert chute.concurrency == 3


def test_documented_import_path_egress_and_image() -> None:
    from chutes.chute.template.diffusion import build_diffusion_chute

    manager = get_plugin_manager()
    chute = build_diffusion_chute("me", "art", "org/model")
    assert manager.egress_policy(chute) is True
    assert manager.egress_source(chute) == "diffusers"
    locked = build_diffusion_chute("me", "art", "org/model", allow_external_egress=False)
    assert manager.egress_policy(locked) is False
    assert "diffusers==" in str(manager.build_image(chute))


def test_an_image_the_chute_names_is_kept() -> None:
    from chutes.chute.template.diffusion import build_diffusion_chute
    from chutes_core import Image

    manager = get_plugin_manager()
    prebuilt = build_diffusion_chute("me", "art", "org/model", image="org/prebuilt:1")
    assert manager.build_image(prebuilt) == "org/prebuilt:1"
    own = Image(username="me", name="mine", tag="1")
    assert manager.build_image(build_diffusion_chute("me", "art", "org/model", image=own)) is own


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_name_or_url": ""}, "model_name_or_url"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_pixels": 10}, "max_pixels"),
        ({"name": "Not Valid"}, "name"),
    ],
)
def test_bad_template_arguments_name_the_field(kwargs, field) -> None:
    from chutes.chute.template.diffusion import build_diffusion_chute

    arguments = {"username": "me", "name": "art", "model_name_or_url": "org/model", **kwargs}
    with pytest.raises(InvalidValueError, match=field):
        build_diffusion_chute(**arguments)


def test_request_defaults_and_aliases() -> None:
    request = GenerationInput(prompt="a cat")
    assert (request.height, request.width, request.num_inference_steps) == (1024, 1024, 25)
    assert (request.guidance_scale, request.output_format, request.seed) == (7.5, "jpeg", None)
    aliased = GenerationInput.model_validate(
        {"prompt": "x", "steps": 3, "guidance": 2, "format": "png"}
    )
    assert (aliased.num_inference_steps, aliased.guidance_scale, aliased.output_format) == (
        3,
        2,
        "png",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("height", 120),
        ("height", 2056),
        ("width", 130),
        ("num_inference_steps", 0),
        ("num_inference_steps", 51),
        ("seed", -1),
        ("output_format", "gif"),
        ("prompt", ""),
    ],
)
def test_out_of_range_values_name_the_field(field, value) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        GenerationInput.model_validate({"prompt": "x", field: value})
    assert info.value.errors()[0]["loc"] == (field,)
