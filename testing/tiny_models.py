"""Tiny random models built on the spot, for tests that must not download anything.

Each builder writes a complete model directory that the real engines load
(vLLM, ``transformers serve``); an engine-specific builder lives with
its plugin's tests. The weights are random, so the
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
