"""A tiny random cross-encoder, built on the spot: the bundled MiniLM's tokenizer, a 2-layer head."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def build_tiny_cross_encoder(dest: Path, tokenizer_from: Path, *, num_labels: int = 1) -> Path:
    """A ``BertForSequenceClassification`` with random weights and ``num_labels`` outputs."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).exists():
            shutil.copy(tokenizer_from / name, dest / name)
    labels = ["LABEL_0"] if num_labels == 1 else [f"class_{i}" for i in range(num_labels)]
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.5,  # spread the random scores: inputs must score differently
        num_labels=num_labels,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(dest)
    return dest
