"""Tiny random speech models built on the spot (no download): a Whisper and a SpeechT5 + HiFiGAN.

The Whisper has a real tokenizer layout: a byte-level BPE trained on a few
sentences, then Whisper's special tokens in Whisper's order (languages,
tasks, ``<|notimestamps|>`` then the 1501 timestamp tokens), and a
generation config that knows them, so ``language=`` and timestamps take the
same code paths as with a real checkpoint. The weights are random: the
text is gibberish.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, how are you today? I am fine, thank you.",
    "Speech to text turns audio into words, one segment after another.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 appear in text too.",
]


def build_tiny_whisper(dest: Path, *, max_new_tokens: int = 24, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    dest.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 4, trainer=trainer)
    bpe.model.save(str(dest))  # vocab.json, merges.txt
    tokenizer = WhisperTokenizer(
        str(dest / "vocab.json"),
        str(dest / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    languages = [f"<|{code}|>" for code in LANGUAGES]
    specials = [
        "<|startoftranscript|>",
        *languages,
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *[f"<|{i * 0.02:.2f}|>" for i in range(1501)],
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.save_pretrained(dest)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in specials[:-1501]}
    WhisperFeatureExtractor(feature_size=80).save_pretrained(dest)

    torch.manual_seed(seed)
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    start = ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=start,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(dest)
    no_timestamps = ids["<|notimestamps|>"]
    generation = {
        "decoder_start_token_id": start,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_new_tokens": max_new_tokens,
        "is_multilingual": True,
        "lang_to_id": {token: ids[token] for token in languages},
        "task_to_id": {"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        "no_timestamps_token_id": no_timestamps,
        "prev_sot_token_id": ids["<|startofprev|>"],
        "forced_decoder_ids": None,
        "begin_suppress_tokens": [eot],
        "suppress_tokens": [],
        "max_initial_timestamp_index": 50,
    }
    (dest / "generation_config.json").write_text(json.dumps(generation))
    return dest


def build_tiny_vits(dest: Path, *, sampling_rate: int = 16000, seed: int = 0) -> Path:
    """A random ``VitsModel`` with a character tokenizer: text in, noise out, at ``sampling_rate``."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    characters = ["<pad>", "<unk>", " ", *"abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"]
    (dest / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(characters)}))
    tokenizer = VitsTokenizer(
        str(dest / "vocab.json"), pad_token="<pad>", unk_token="<unk>", phonemize=False
    )
    tokenizer.save_pretrained(dest)
    torch.manual_seed(seed)
    config = VitsConfig(
        vocab_size=len(characters),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=[8, 8],
        upsample_kernel_sizes=[16, 16],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=1,
        sampling_rate=sampling_rate,
    )
    VitsModel(config).eval().save_pretrained(dest)
    return dest
