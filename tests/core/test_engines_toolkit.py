"""The engine toolkit's shared parts: chute settings, template hooks, engine pins."""

from __future__ import annotations

import inspect
import types

import pytest
from typing_extensions import Unpack

from chutes.chute import Chute, NodeSelector
from chutes_core.engines.hooks import TemplateHooks
from chutes_core.engines.images import pinned_requirement
from chutes_core.engines.settings import (
    ChuteSettings,
    chute_from_settings,
    documents_settings,
    settings_parameters,
)
from chutes_core.errors import ChutesError, InvalidValueError
from chutes_core.image import Image
from chutes_core.plugins import PluginManager


@documents_settings
def build_toy_chute(username: str, model: str, **settings: Unpack[ChuteSettings]) -> Chute:
    """A toy template."""
    return chute_from_settings(
        "build_toy_chute",
        username,
        settings,
        template="toy",
        name=settings.get("name") or model,
        concurrency=7,
        tagline=f"{model}, served",
    )


# Settings -------------------------------------------------------------------------
def test_settings_become_the_chute_with_the_templates_defaults() -> None:
    chute = build_toy_chute("me", "toy")
    assert (chute.name, chute.standard_template, chute.concurrency) == ("toy", "toy", 7)
    assert chute.tagline == "toy, served" and chute.max_instances == 1
    given = build_toy_chute(
        "me",
        "toy",
        name="other",
        concurrency=2,
        tagline="mine",
        node_selector=NodeSelector(gpu_count=2),
        max_instances=3,
        revision="abc",
        allow_external_egress=False,
    )
    assert (given.name, given.concurrency, given.tagline) == ("other", 2, "mine")
    assert given.node_selector.gpu_count == 2 and given.max_instances == 3
    assert given.revision == "abc" and given.allow_external_egress is False
    # None is "the default": the template's.
    assert build_toy_chute("me", "toy", concurrency=None).concurrency == 7


def test_an_unknown_setting_is_a_type_error_naming_the_builder() -> None:
    with pytest.raises(TypeError, match=r"build_toy_chute\(\) got an unexpected keyword .*'gpus'"):
        build_toy_chute("me", "toy", gpus=2)  # type: ignore[call-arg]


def test_the_settings_are_documented_once_and_appended() -> None:
    doc = inspect.getdoc(build_toy_chute) or ""
    assert doc.startswith("A toy template.")
    assert "allow_external_egress" in doc and "a prebuilt image" in doc


def test_settings_parameters_show_the_chutes_defaults_in_order() -> None:
    parameters = settings_parameters(["username", "max_instances", "concurrency"], username=None)
    assert list(parameters) == ["username", "max_instances", "concurrency"]
    assert parameters["max_instances"].default == 1
    assert parameters["max_instances"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


# Hooks ------------------------------------------------------------------------------
def toy_manager(**options: object) -> PluginManager:
    hooks = TemplateHooks("toy", build_toy_chute, description="a toy", **options)  # type: ignore[arg-type]
    return PluginManager(entry_points=False, plugins=[("toy", hooks)]).load()


def test_template_hooks_register_the_builder_and_answer_for_its_chutes_only() -> None:
    manager = toy_manager(requirements=["toyengine==1.0"], egress=False)
    template = manager.templates.get("toy")
    assert template.builder is build_toy_chute and template.description == "a toy"
    chute = build_toy_chute("me", "toy")
    assert manager.egress_policy(chute) is False and manager.egress_source(chute) == "toy"
    image = str(manager.build_image(chute))
    assert "toyengine==1.0" in image.split() and "chutes==" in image
    other = Chute(username="me", name="other")
    assert manager.egress_policy(other) is True
    assert "toyengine" not in str(manager.build_image(other))


def test_template_hooks_keep_an_image_the_chute_names() -> None:
    manager = toy_manager(requirements=lambda chute: ["toyengine==1.0"])
    assert manager.build_image(build_toy_chute("me", "toy", image="org/prebuilt:1")) == (
        "org/prebuilt:1"
    )
    own = Image(username="me", name="own", tag="1")
    assert manager.build_image(build_toy_chute("me", "toy", image=own)) is own


def test_template_hooks_with_an_image_function_and_no_egress_opinion() -> None:
    made = Image(username="me", name="made", tag="1")
    manager = toy_manager(image=lambda chute: made)
    chute = build_toy_chute("me", "toy")
    assert manager.build_image(chute) is made
    assert manager.egress_source(chute) != "toy"  # no opinion: the built-in answers


def test_template_hooks_refuse_a_builder_reference_that_is_not_callable() -> None:
    hooks = TemplateHooks("toy", "chutes_core.engines.routes:OPENAI_ROUTES")
    with pytest.raises(InvalidValueError, match="a callable"):
        _ = hooks.builder
    with pytest.raises(InvalidValueError, match="'module:attribute'"):
        _ = TemplateHooks("toy", "chutes_core.nowhere:thing").builder


# Pins ---------------------------------------------------------------------------------
def test_an_engine_pin_is_read_from_the_distributions_extra() -> None:
    # chutes' own metadata: `hub = ["huggingface_hub>=0.23"]`.
    assert pinned_requirement("chutes", "huggingface-hub", extra="hub") == "huggingface_hub>=0.23"
    with pytest.raises(ChutesError, match="declares no vllm requirement"):
        pinned_requirement("chutes", "vllm", extra="hub")
    with pytest.raises(ChutesError, match="not installed"):
        pinned_requirement("no-such-distribution-here", "x")


def test_a_template_set_answers_for_each_of_its_templates() -> None:
    from chutes_core.engines.hooks import TemplateHooks, TemplateSet

    def build_one(username: str) -> Chute:
        return Chute(username=username, name="one", standard_template="one")

    def build_two(username: str) -> Chute:
        return Chute(username=username, name="two", standard_template="two")

    plugin = types.ModuleType("two_templates")
    (
        plugin.register_templates,  # type: ignore[attr-defined]
        plugin.build_image,  # type: ignore[attr-defined]
        plugin.egress_policy,  # type: ignore[attr-defined]
    ) = TemplateSet(
        TemplateHooks("one", build_one, requirements=["one-engine==1"], egress=False),
        TemplateHooks("two", build_two, requirements=["two-engine==2"], egress=True),
    ).hooks()
    manager = PluginManager(entry_points=False, plugins=[("pair", plugin)]).load()
    assert [t.name for t in manager.templates] == ["one", "two"]
    one, two = build_one("me"), build_two("me")
    assert manager.egress_policy(one) is False and manager.egress_policy(two) is True
    assert "one-engine==1" in str(manager.build_image(one))
    assert "two-engine==2" in str(manager.build_image(two))
    other = Chute(username="me", name="mine")
    assert manager.egress_source(other) == "builtin"  # neither template answers for it
