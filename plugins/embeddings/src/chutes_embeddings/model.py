"""Loading an embedding model and running batches of token ids through it."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("chutes.embeddings")


@dataclass(frozen=True)
class Input:
    """One input to embed: text (tokenized in the batch) or token ids."""

    text: str | None = None
    ids: list[int] | None = None
    truncate: bool = False

    def __len__(self) -> int:  # for sorting batches: characters approximate tokens
        return len(self.text) if self.text is not None else len(self.ids or ())


@dataclass(frozen=True)
class Embedded:
    vector: np.ndarray
    tokens: int  # as given, before any truncation


class TooLong(ValueError):
    """An input longer than the model takes, with truncation not asked for."""

    def __init__(self, tokens: int, limit: int) -> None:
        self.tokens = tokens
        self.limit = limit
        super().__init__(f"{tokens} tokens; this model takes at most {limit}")


@dataclass
class EmbeddingModel:
    """A transformer encoder plus the pooling that turns it into sentence vectors."""

    tokenizer: Any
    encoder: Any
    device: str
    pooling: str
    normalize: bool
    max_length: int
    dimension: int
    vocab_size: int
    pad_id: int

    @classmethod
    def load(
        cls, path: Path, *, engine: str, pooling: str, normalize: bool, max_length: int | None
    ) -> EmbeddingModel:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        if engine == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            st = SentenceTransformer(str(path), device=device, local_files_only=True)
            tokenizer, encoder = st.tokenizer, st[0].auto_model
            limit = st.max_seq_length
        else:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            encoder = AutoModel.from_pretrained(path, local_files_only=True)
            limit = None
        encoder = encoder.to(device=device, dtype=dtype).eval()
        positions = getattr(encoder.config, "max_position_embeddings", None) or 512
        limit = min(
            limit or positions, positions, getattr(tokenizer, "model_max_length", positions)
        )
        if max_length is not None:
            limit = min(limit, max_length)
        if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # One worker thread runs batches: give its ops one thread per CPU this
            # process may use. torch counts the machine's cores, which oversubscribes
            # a container limited by affinity or a CPU quota.
            torch.set_num_threads(usable_cpus())
        model = cls(
            tokenizer=tokenizer,
            encoder=encoder,
            device=device,
            pooling=pooling,
            normalize=normalize,
            max_length=int(limit),
            dimension=int(encoder.config.hidden_size),
            vocab_size=len(tokenizer),
            pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        )
        log.info(
            "loaded %s on %s: %d dimensions, up to %d tokens, %s pooling%s",
            path.name,
            device,
            model.dimension,
            model.max_length,
            pooling,
            ", normalised" if normalize else "",
        )
        return model

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the model's special tokens, not truncated."""
        encoded = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        return [list(ids) for ids in encoded["input_ids"]]

    def run(self, batch: list[Input]) -> list[Embedded | TooLong]:
        """A batch of inputs, in the batcher's worker thread: tokenize, check, embed."""
        texts = [item.text for item in batch if item.text is not None]
        tokenized = iter(self.tokenize(texts) if texts else [])
        sequences = [next(tokenized) if item.text is not None else item.ids or [] for item in batch]
        results: list[Embedded | TooLong] = []
        to_embed: dict[int, list[int]] = {}
        cut_texts: list[int] = []
        for index, (item, ids) in enumerate(zip(batch, sequences, strict=True)):
            if len(ids) > self.max_length and not item.truncate:
                results.append(TooLong(len(ids), self.max_length))
                continue
            results.append(Embedded(np.empty(0, dtype=np.float32), len(ids)))
            if len(ids) > self.max_length and item.text is not None:
                cut_texts.append(index)  # cut by the tokenizer: it keeps the special tokens
            to_embed[index] = ids[: self.max_length]
        if cut_texts:
            cut = self.tokenizer(
                [batch[i].text for i in cut_texts], truncation=True, max_length=self.max_length
            )
            to_embed.update(zip(cut_texts, map(list, cut["input_ids"]), strict=True))
        if to_embed:
            vectors = self.embed(list(to_embed.values()))
            for index, vector in zip(to_embed, vectors, strict=True):
                results[index] = Embedded(vector, len(sequences[index]))
        return results

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        """Vectors (float32, one row per sequence) for token-id sequences of any lengths."""
        import torch

        from chutes_core.kernels import get_kernel

        longest = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
            if self.pooling == "mean":
                pooled = get_kernel("embeddings.mean_pool_normalize")(hidden, mask, self.normalize)
            else:
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:  # last real token (sequences are right-padded)
                    pooled = hidden[torch.arange(len(batch)), mask.sum(dim=1) - 1]
                pooled = pooled.float()
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota to honour
    return count
