"""A tiny random Stable Diffusion pipeline, built on the spot: the diffusers tests download nothing.

Heavy imports happen inside the function; importing this module is free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def build_tiny_stable_diffusion(dest: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A random Stable Diffusion 1.x-shaped pipeline, written with ``save_pretrained``.

    A UNet (2 levels, 32/64 channels, cross-attention width 32), a VAE with 4
    levels (so latents are 1/8 of the image side, as in SD 1.x), a 2-layer CLIP
    text encoder, a CLIP tokenizer whose byte-level vocabulary and merges are
    made here, and a DDIM scheduler; no safety checker. The default image is
    128x128; any side that is a multiple of 16 works. Nothing is downloaded.
    Returns ``dest``.
    """
    import tempfile

    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(dest)
    path.mkdir(parents=True, exist_ok=True)

    # CLIP's byte-level alphabet: every byte maps to one printable character.
    kept = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    byte_chars: list[str] = []
    shifted = 0
    for byte in range(256):
        if byte in kept:
            byte_chars.append(chr(byte))
        else:
            byte_chars.append(chr(256 + shifted))
            shifted += 1
    tokens = byte_chars + [char + "</w>" for char in byte_chars]
    # Merges that build a few prompt words letter by letter, so each becomes one token.
    words = ["a", "an", "the", "of", "on", "in", "with", "photo", "picture", "cat", "dog"]
    words += ["horse", "astronaut", "riding", "red", "blue", "green", "painting", "chute"]
    merges: list[str] = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            merge = f"{left} {right}"
            left += right
            if merge not in merges:
                merges.append(merge)
            if left not in tokens:
                tokens.append(left)
    bos, eos = "<|startoftext|>", "<|endoftext|>"
    tokens += [bos, eos]
    vocab = {token: index for index, token in enumerate(tokens)}
    with tempfile.TemporaryDirectory() as tmp:
        vocab_json = json.dumps(vocab, ensure_ascii=False)
        (Path(tmp) / "vocab.json").write_text(vocab_json, encoding="utf-8")
        merges_txt = "#version: 0.2\n" + "\n".join(merges) + "\n"
        (Path(tmp) / "merges.txt").write_text(merges_txt, encoding="utf-8")
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)

    # Seed a private copy of the RNG so the caller's random state is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_config = CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=vocab[bos],
            eos_token_id=vocab[eos],
            pad_token_id=vocab[eos],
        )
        text_encoder = CLIPTextModel(text_config).eval()
        unet = UNet2DConditionModel(
            sample_size=16,  # latent side: 16 x 8 = 128 pixels by default
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=16,
        ).eval()
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=128,
        ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    components = {
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "unet": unet,
        "scheduler": scheduler,
    }
    pipeline = StableDiffusionPipeline(
        **components,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path
