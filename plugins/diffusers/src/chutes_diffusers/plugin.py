"""The hooks. Every chutes process imports this module, so it imports nothing heavy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chutes_core import hookimpl

if TYPE_CHECKING:
    from chutes_core import Chute, Image
    from chutes_core.kernels import KernelRegister
    from chutes_core.templates import TemplateRegister

TEMPLATE = "diffusion"
#: What the default image installs: the versions this plugin is tested with. torch's
#: Linux wheels bring CUDA and the matching Triton.
IMAGE_PINS = (
    "torch==2.13.0",
    "diffusers==0.42.1",
    "transformers==5.23.0",
    "accelerate==1.15.0",
    "safetensors==0.8.0",
    "pillow==13.0.0",
)


@hookimpl
def register_templates(register: TemplateRegister) -> None:
    from chutes_diffusers.template import build_diffusion_chute

    register(
        TEMPLATE, build_diffusion_chute, description="text-to-image with diffusers (SDXL, SD, ...)"
    )


@hookimpl
def register_kernels(register: KernelRegister) -> None:
    register(
        "diffusion.to_uint8_nhwc",
        reference="chutes_diffusers.kernels:to_uint8_nhwc_torch",
        triton="chutes_diffusers.kernels:to_uint8_nhwc_triton",
        description="images in [low, high] ([-1, 1] by default; NCHW) to clamped uint8 NHWC pixels",
    )


@hookimpl
def egress_policy(chute: Chute) -> bool | None:
    # Image chutes commonly fetch inputs (LoRAs, reference images): egress stays open.
    return True if chute.standard_template == TEMPLATE else None


@hookimpl
def build_image(chute: Chute, image: Image | None) -> Image | None:
    if chute.standard_template != TEMPLATE or image is not None:
        return None
    from chutes_core import Image
    from chutes_diffusers import __version__

    pins = " ".join(f"'{pin}'" for pin in (f"chutes-diffusers=={__version__}", *IMAGE_PINS))
    return (
        Image(username=chute.username, name=chute.name, tag=chute.revision or "latest")
        .from_base("parachutes/python:3.12")
        .run_command(f"pip install --no-cache-dir {pins}")
    )
