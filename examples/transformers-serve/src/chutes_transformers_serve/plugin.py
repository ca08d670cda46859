"""The hooks. Imported by every chutes process, so it imports nothing heavy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chutes_core import hookimpl

if TYPE_CHECKING:
    from chutes_core import Chute, Image
    from chutes_core.templates import TemplateRegister

TEMPLATE = "transformers_serve"


@hookimpl
def register_templates(register: TemplateRegister) -> None:
    from chutes_transformers_serve.template import build_transformers_serve_chute

    register(
        TEMPLATE,
        build_transformers_serve_chute,
        description="any causal LM behind `transformers serve` (OpenAI API, CPU or GPU)",
    )


@hookimpl
def egress_policy(chute: Chute) -> bool | None:
    # Weights are fetched during startup; serving needs no network.
    return False if chute.standard_template == TEMPLATE else None


@hookimpl
def build_image(chute: Chute, image: Image | None) -> Image | None:
    if chute.standard_template != TEMPLATE or image is not None:
        return None
    from chutes_core import Image

    return (
        Image(username=chute.username, name=chute.name, tag=chute.revision or "latest")
        .from_base("parachutes/python:3.12")
        .run_command(
            "pip install --no-cache-dir 'chutes-transformers-serve[engine]==0.1.0' "
            "'transformers[serving]==5.23.0'"
        )
    )
