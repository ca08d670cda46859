"""The hooks. Every chutes process imports this module, so it imports nothing heavy."""

from __future__ import annotations

from chutes_core.engines.hooks import TemplateHooks
from chutes_core.kernels import kernel_hook

TEMPLATE = "diffusion"
BUILDER = "chutes_diffusers.template:build_diffusion_chute"
DESCRIPTION = "text-to-image with diffusers (SDXL, SD, ...)"
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


register_kernels = kernel_hook(
    "diffusion.to_uint8_nhwc",
    "chutes_diffusers.kernels:to_uint8_nhwc",
    description="images in [low, high] ([-1, 1] by default; NCHW) to clamped uint8 NHWC pixels",
)


# Image chutes commonly fetch inputs (LoRAs, reference images): egress stays open.
register_templates, build_image, egress_policy = TemplateHooks(
    TEMPLATE, BUILDER, description=DESCRIPTION, requirements=IMAGE_PINS, egress=True
).hooks()
