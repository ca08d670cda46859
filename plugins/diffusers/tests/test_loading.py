"""Loading: directories, single-file checkpoints, pipeline_args, and what each pipeline takes.

Chutes here are served in process (the runtime's test client); the real
`chutes run` is exercised once, in test_e2e.
"""

from __future__ import annotations

import logging

import pytest
import torch
from chutes_diffusers.pipeline import Diffusion
from chutes_diffusers.schema import GenerationInput
from ldm_checkpoint import write_ldm_checkpoint

from chutes.chute.template.diffusion import build_diffusion_chute
from chutes_testing import ChuteClient

BODY = {"prompt": "a red fox", "height": 128, "width": 128, "steps": 2, "seed": 5, "format": "png"}


async def generate_once(pack, body=BODY):
    async with ChuteClient(pack) as client:
        answer = await client.post("/generate", json=body)
    assert answer.status_code == 200, answer.text
    return answer.content


async def test_a_single_file_checkpoint_gives_the_directory_s_images(
    tiny_sd, tmp_path, caplog
) -> None:
    checkpoint = write_ldm_checkpoint(tiny_sd, tmp_path / "tiny-sd.safetensors")
    # The checkpoint holds weights only; the configs come from `config` (else from the hub).
    single = build_diffusion_chute(
        "me", "single", str(checkpoint), pipeline_args={"config": str(tiny_sd)}
    )
    with caplog.at_level(logging.INFO, logger="chutes.diffusion"):
        from_file = await generate_once(single)
    assert "as StableDiffusionPipeline (single file)" in caplog.text
    assert "StableDiffusionXLPipeline" not in caplog.text  # the header says it is not SDXL
    from_directory = await generate_once(build_diffusion_chute("me", "directory", str(tiny_sd)))
    assert from_file == from_directory


async def test_pipeline_args_reach_the_loader(tiny_sd) -> None:
    default = build_diffusion_chute("me", "fp32", str(tiny_sd))
    async with ChuteClient(default):
        assert default.chute.diffusion.pipeline.unet.dtype == torch.float32  # the CPU's dtype
    pack = build_diffusion_chute("me", "bf16", str(tiny_sd), pipeline_args={"dtype": "bfloat16"})
    async with ChuteClient(pack):
        pipeline = pack.chute.diffusion.pipeline
        assert pipeline.unet.dtype == pipeline.vae.dtype == torch.bfloat16


async def test_a_model_that_is_not_there_fails_startup_by_name() -> None:
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE, "this test must not reach the network"
    pack = build_diffusion_chute("me", "missing", "chutes-test/no-such-model")
    with pytest.raises(Exception, match="chutes-test/no-such-model"):
        async with ChuteClient(pack):
            pass


class TakesNoNegativePrompt:
    """Stands in for a pipeline family without negative prompts or guidance (it is never run)."""

    def __call__(self, prompt, height, width, num_inference_steps, generator, output_type):
        raise AssertionError("a refused request must not reach the pipeline")


def test_fields_a_pipeline_does_not_take() -> None:
    diffusion = Diffusion(TakesNoNegativePrompt())
    assert diffusion.unsupported(GenerationInput(prompt="x", steps=3)) == []
    asked = GenerationInput(prompt="x", negative_prompt="blur", guidance=2)
    assert diffusion.unsupported(asked) == ["guidance_scale", "negative_prompt"]


async def test_such_fields_get_a_422_naming_them(tiny_sd) -> None:
    pack = build_diffusion_chute("me", "plain", str(tiny_sd))
    async with ChuteClient(pack) as client:
        pack.chute.diffusion = Diffusion(TakesNoNegativePrompt())
        answer = await client.post("/generate", json={**BODY, "negative_prompt": "blur"})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "negative_prompt"] and "TakesNoNegativePrompt" in error["msg"]
