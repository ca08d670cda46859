"""Tiny random models built on the spot, for tests that must not download anything.

Each builder writes a complete model directory that the real engines load
(vLLM, ``transformers serve``, diffusers). The weights are random, so the
outputs are gibberish, but every code path an engine takes is real.
Heavy imports happen inside the functions; importing this module is free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: A few sentences to train the tokenizer on: enough for a usable vocabulary.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A chute is an application that serves a model behind an HTTP API.",
    "Hello, how are you today? I am fine, thank you.",
    "Give me a recipe for spicy mayo with garlic and lemon.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 appear in text too.",
    "Streams send tokens one by one until the answer is complete.",
    "user assistant system: what is the capital of France? Paris.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}</s>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_llama(
    dest: str | os.PathLike[str], *, vocab_size: int = 512, head_dim: int = 64, seed: int = 0
) -> Path:
    """A random ``LlamaForCausalLM`` (2 layers, 2 attention heads) with a trained tokenizer.

    Heads are ``head_dim`` wide (64 by default) because serving engines'
    attention kernels take only some head sizes (vLLM's CPU backend: 32 and
    up; GPU backends: 64, 128, ...).

    The tokenizer is a byte-level BPE trained on :data:`CORPUS`, with
    ``<s>``, ``</s>``, ``<unk>`` and ``<pad>`` and a chat template, so
    ``/v1/chat/completions`` works. Returns ``dest``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(dest)
    path.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
    fast.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=2 * head_dim,
        intermediate_size=4 * head_dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path, safe_serialization=True)
    # Generation defaults an OpenAI server would otherwise guess at.
    (path / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": fast.bos_token_id,
                "eos_token_id": fast.eos_token_id,
                "pad_token_id": fast.pad_token_id,
            }
        )
    )
    return path


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
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path
