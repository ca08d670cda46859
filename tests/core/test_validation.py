"""Every bad value is refused with the field, the value and what is allowed."""

from __future__ import annotations

import pydantic
import pytest

from chutes.chute import Chute, NodeSelector
from chutes.image import Image
from chutes_core.errors import InvalidValueError


def handler(self):
    return 1


def refused(fn, field: str, shown: str, allowed: str) -> InvalidValueError:
    with pytest.raises(InvalidValueError) as info:
        fn()
    message = str(info.value)
    assert field in message and shown in message and allowed in message, message
    return info.value


@pytest.mark.parametrize(
    "name",
    ["Bad", "-lead", "trail-", "has_underscore", "a" * 64, "", "sp ace", "dot.s"],
)
def test_chute_names(name: str) -> None:
    refused(lambda: Chute(username="me", name=name), "Chute.name", repr(name), "lowercase")


def test_names_up_to_63_characters_are_fine() -> None:
    Chute(username="a" * 63, name="b-1")


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("concurrency", 0, "from 1"),
        ("concurrency", "4", "an integer"),
        ("concurrency", True, "an integer"),
        ("max_instances", 0, "from 1"),
        ("scaling_threshold", 1.5, "to 1.0"),
        ("shutdown_after_seconds", -1, "from 0"),
        ("allow_external_egress", "false", "True or False"),
    ],
)
def test_chute_knobs(field: str, value: object, allowed: str) -> None:
    refused(
        lambda: Chute(username="me", name="x", **{field: value}),
        f"Chute.{field}",
        repr(value),
        allowed,
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": 9}, "gpu_count"),
        ({"gpu_count": "2"}, "gpu_count"),
        ({"min_vram_gb_per_gpu": 8}, "min_vram_gb_per_gpu"),
        ({"min_vram_gb_per_gpu": 141}, "min_vram_gb_per_gpu"),
        ({"include": ["a100"], "exclude": ["a100"]}, "include and exclude"),
        ({"gpus": 1}, "gpus"),
        ({"max_hourly_price_per_gpu": 0}, "max_hourly_price_per_gpu"),
        ({"max_hourly_price_per_gpu": -1.5}, "max_hourly_price_per_gpu"),
        ({"max_hourly_price_per_gpu": "2"}, "max_hourly_price_per_gpu"),
        ({"max_hourly_price_per_gpu": float("inf")}, "max_hourly_price_per_gpu"),
        ({"max_hourly_price_per_gpu": float("nan")}, "max_hourly_price_per_gpu"),
        ({"max_hourly_price_per_gpu": True}, "max_hourly_price_per_gpu"),
    ],
)
def test_node_selector_bounds(kwargs: dict, field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        NodeSelector(**kwargs)
    assert field in str(info.value)


def test_node_selector_price_cap_is_optional_and_sent() -> None:
    assert NodeSelector().max_hourly_price_per_gpu is None
    capped = NodeSelector(gpu_count=2, max_hourly_price_per_gpu=1.25)
    assert capped.model_dump()["max_hourly_price_per_gpu"] == 1.25
    assert NodeSelector(max_hourly_price_per_gpu=3).max_hourly_price_per_gpu == 3.0
    chute = Chute(username="me", name="priced", node_selector=capped)
    assert chute.to_dict()["node_selector"]["max_hourly_price_per_gpu"] == 1.25


def test_cord_paths_and_duplicates() -> None:
    chute = Chute(username="me", name="x")

    refused(lambda: chute.cord(path="/Upper")(handler), "path", "'/Upper'", "pattern")
    refused(
        lambda: chute.cord(public_api_path="no-slash")(handler),
        "public_api_path",
        "'no-slash'",
        "pattern",
    )
    refused(lambda: chute.cord(method="FETCH")(handler), "method", "'FETCH'", "GET, POST")

    @chute.cord()
    def first(self):
        return 1

    def clash(self):
        return 2

    clash.__name__ = "first"
    refused(lambda: chute.cord()(clash), "path", "'/first'", "not already used by cord 'first'")

    def other(self):
        return 3

    refused(
        lambda: chute.cord(public_api_path="/first")(other),
        "public_api_path",
        "POST /first",
        "not already used by cord 'first'",
    )
    # Same public path with another method is fine.
    chute.cord(public_api_path="/first", method="GET")(other)


def test_cord_passthrough_needs_a_port() -> None:
    chute = Chute(username="me", name="x")
    refused(
        lambda: chute.cord(passthrough=True)(handler), "passthrough_port", "None", "loopback port"
    )
    refused(
        lambda: chute.cord(passthrough_port=10101)(handler), "passthrough", "False", "True when"
    )


def test_conflicting_method_and_deprecated_alias() -> None:
    chute = Chute(username="me", name="x")
    with pytest.warns(DeprecationWarning):
        refused(
            lambda: chute.cord(method="POST", public_api_method="GET")(handler),
            "public_api_method",
            "'GET'",
            "same value as method",
        )


def test_job_validation() -> None:
    chute = Chute(username="me", name="x")
    refused(lambda: chute.job(timeout=0)(handler), "timeout", "0", "from 1")
    refused(lambda: chute.job(timeout="30")(handler), "timeout", "'30'", "an integer")
    refused(lambda: chute.job(retry_count=-1)(handler), "retry_count", "-1", "from 0")
    refused(lambda: chute.job(schedule="every day")(handler), "schedule", "'every day'", "cron")
    refused(lambda: chute.job(name="Bad Name")(handler), "name", "'Bad Name'", "lowercase")
    job = chute.job(name="daily_cleanup", schedule="0 2 * * *")(handler)
    assert job.schedule == "0 2 * * *"


def test_image_validation() -> None:
    refused(lambda: Image(username="me", name="Bad", tag="1"), "Image.name", "'Bad'", "lowercase")
    refused(lambda: Image(username="me", name="ok", tag="-1"), "Image.tag", "'-1'", "starting with")
    image = Image(username="me", name="ok", tag="1")
    refused(lambda: image.with_env("1BAD", "x"), "with_env(key)", "'1BAD'", "environment variable")
    refused(lambda: image.with_env("GOOD", None), "with_env(value)", "None", "string or number")
    refused(lambda: image.with_python("2.7"), "with_python", "'2.7'", "from 3.9")
    refused(
        lambda: image.apt_install(["curl; rm -rf /"]),
        "apt_install",
        "curl; rm -rf /",
        "Debian package",
    )
    refused(
        lambda: image.add("../secret", "/x"),
        "add(source)",
        "'../secret'",
        "inside the build context",
    )
    refused(lambda: image.set_workdir("relative"), "set_workdir", "'relative'", "absolute path")
    refused(lambda: image.run_command("   "), "run_command", "'   '", "non-empty")
    refused(lambda: image.from_base("bad base"), "from_base", "'bad base'", "image reference")


def test_hook_priority_validation() -> None:
    chute = Chute(username="me", name="x")
    refused(lambda: chute.on_startup(priority="high"), "priority", "'high'", "an integer")
