"""A sequence-classification head (a cross-encoder) run in batches: scores for texts or pairs.

Loaded through sentence-transformers' ``CrossEncoder``, which takes any
``AutoModelForSequenceClassification`` directory, so its preprocessing and
activation are the ones ``CrossEncoder.predict`` applies: scores match it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("chutes.embeddings")


@dataclass(frozen=True)
class Pair:
    """One input to score: a text alone (classification) or a (query, document) pair."""

    text: str
    other: str | None = None

    def __len__(self) -> int:  # for sorting batches: characters approximate tokens
        return len(self.text) + len(self.other or "")


@dataclass(frozen=True)
class Scored:
    logits: np.ndarray  # float32, one per label
    tokens: int  # after truncation to the model's limit


@dataclass
class Scorer:
    model: Any  # a sentence_transformers.CrossEncoder
    device: str
    labels: list[str]
    max_length: int

    @classmethod
    def load(cls, path: Path, *, max_length: int | None) -> Scorer:
        import torch
        from sentence_transformers import CrossEncoder

        from chutes_embeddings.model import usable_cpus

        device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs: dict[str, Any] = {"max_length": max_length} if max_length else {}
        model = CrossEncoder(str(path), device=device, local_files_only=True, **kwargs)
        if device == "cuda":
            model = model.half()
        model.eval()
        if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(usable_cpus())  # see EmbeddingModel.load
        config = model.model.config
        labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(model.num_labels)]
        scorer = cls(model, device, labels, int(model.max_seq_length or 512))
        log.info(
            "loaded %s on %s: %d label(s), up to %d tokens",
            path.name,
            device,
            len(labels),
            scorer.max_length,
        )
        return scorer

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def run(self, batch: list[Pair]) -> list[Scored]:
        """A batch, in the batcher's worker thread: the head's raw logits for each input."""
        import torch
        from sentence_transformers.util import batch_to_device

        inputs: list[Any] = [
            item.text if item.other is None else [item.text, item.other] for item in batch
        ]
        features = self.model.preprocess(inputs)
        tokens = features["attention_mask"].sum(dim=1).tolist()
        with torch.inference_mode():
            scores = self.model(batch_to_device(features, self.device))["scores"].float()
        scores = scores.reshape(len(batch), -1).cpu().numpy()
        return [Scored(row, int(n)) for row, n in zip(scores, tokens, strict=True)]

    def relevance(self, logits: np.ndarray) -> np.ndarray:
        """Logits of single-score rows to scores, with the model's activation (predict's)."""
        import torch

        fn = self.model.activation_fn
        out = fn(torch.from_numpy(logits)) if fn is not None else torch.from_numpy(logits)
        return np.asarray(out.float().numpy(), dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Label scores as classification pipelines give them: sigmoid for one label, else softmax."""
        if self.num_labels == 1:
            return self.relevance(logits)
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)
