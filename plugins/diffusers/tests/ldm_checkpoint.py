"""Write a diffusers Stable Diffusion 1.x directory as one original-layout checkpoint.

Single-file checkpoints (the ``.safetensors`` files image-model sites share)
use the original latent-diffusion key names. Nothing here downloads such a
file, so the tests make one from the tiny pipeline by renaming its weights.
Only the layouts the tiny SD 1.x pipeline uses are covered.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _rename_first(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def _unet_key(key: str, layers: int, attended_up_blocks: set[int]) -> str:
    for old, new in UNET_FIXED.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    span = layers + 1  # resnets per down block, plus its downsampler
    if match := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        slot = 1 + block * span + index
        if kind == "resnets":
            return f"input_blocks.{slot}.0.{_rename_first(rest, UNET_RESNET)}"
        return f"input_blocks.{slot}.1.{rest}"
    if match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(match[1]) + 1) * span}.0.op.{match[2]}"
    if match := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(match[1])}.{_rename_first(match[2], UNET_RESNET)}"
    if match := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{match[1]}"
    up_span = layers + 1  # up blocks have one resnet more than down blocks
    if match := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        slot = block * up_span + index
        if kind == "resnets":
            return f"output_blocks.{slot}.0.{_rename_first(rest, UNET_RESNET)}"
        return f"output_blocks.{slot}.1.{rest}"
    if match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(match[1])
        position = 2 if block in attended_up_blocks else 1
        return f"output_blocks.{block * up_span + layers}.{position}.conv.{match[2]}"
    raise ValueError(f"no original name for UNet weight {key!r}")


def _vae_key(key: str, up_blocks: int) -> str:
    part, _, rest = key.partition(".")
    if part in ("quant_conv", "post_quant_conv"):
        return key
    rest = rest.replace("conv_norm_out", "norm_out")
    if match := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        direction, block, index, tail = match[1], int(match[2]), match[3], match[4]
        if direction == "up":
            block = up_blocks - 1 - block  # the original counts decoder levels from the bottom
        tail = tail.replace("conv_shortcut", "nin_shortcut")
        return f"{part}.{direction}.{block}.block.{index}.{tail}"
    if match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.(.+)", rest):
        return f"{part}.down.{match[1]}.downsample.{match[2]}"
    if match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{part}.up.{up_blocks - 1 - int(match[1])}.upsample.{match[2]}"
    if match := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        tail = match[2].replace("conv_shortcut", "nin_shortcut")
        return f"{part}.mid.block_{int(match[1]) + 1}.{tail}"
    if match := re.match(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{part}.mid.attn_1.{_rename_first(match[1], VAE_ATTENTION)}"
    return f"{part}.{rest}"


def write_ldm_checkpoint(pipeline_dir: str | Path, dest: str | Path) -> Path:
    """One ``.safetensors`` file holding the pipeline's UNet, VAE and text encoder."""
    from safetensors.torch import load_file, save_file

    source = Path(pipeline_dir)
    unet_config = json.loads((source / "unet" / "config.json").read_text())
    vae_config = json.loads((source / "vae" / "config.json").read_text())
    layers = unet_config["layers_per_block"]
    attended = {
        index
        for index, kind in enumerate(unet_config["up_block_types"])
        if kind.startswith("CrossAttn")
    }
    tensors = {}
    for key, value in load_file(source / "unet" / "diffusion_pytorch_model.safetensors").items():
        tensors["model.diffusion_model." + _unet_key(key, layers, attended)] = value
    up_blocks = len(vae_config["up_block_types"])
    for key, value in load_file(source / "vae" / "diffusion_pytorch_model.safetensors").items():
        tensors["first_stage_model." + _vae_key(key, up_blocks)] = value
    for key, value in load_file(source / "text_encoder" / "model.safetensors").items():
        key = key.removeprefix("text_model.")
        tensors["cond_stage_model.transformer.text_model." + key] = value
    path = Path(dest)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path
