"""``POST /v1/classify``: texts to labels with scores, for the rerank template's model.

The response follows what infinity-emb and TEI's ``/predict`` return: for
each input, every label with its score, best first.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] = Field(..., description="A text or texts to classify.")
    model: str | None = Field(None, description="The served model's name.")
    raw_scores: bool = Field(
        False, description="The head's logits instead of probabilities (softmax, or sigmoid)."
    )
    top_k: int | None = Field(
        None, ge=1, description="Keep only the best k labels of each input (all by default)."
    )


class LabelScore(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    object: Literal["classification"] = "classification"
    index: int
    label: str = Field(..., description="The best label.")
    score: float = Field(..., description="The best label's score.")
    labels: list[LabelScore] = Field(..., description="Labels with their scores, best first.")


class ClassifyUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Classification]
    model: str
    usage: ClassifyUsage


def texts_of(body: ClassifyRequest, max_inputs: int) -> list[str]:
    """The request's texts, or ``ValueError`` with what is wrong."""
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise ValueError("input must not be empty")
    if len(texts) > max_inputs:
        raise ValueError(
            f"input has {len(texts)} items; at most {max_inputs} are allowed per request"
        )
    for i, text in enumerate(texts):
        if not text:
            raise ValueError(f"input[{i}] is an empty string")
    return texts


def response(scorer: Any, scored: list[Any], body: ClassifyRequest, served: str) -> dict[str, Any]:
    """The response body for ``scored`` (one result per text, in order)."""
    import numpy as np

    logits = np.stack([s.logits for s in scored])
    values = logits if body.raw_scores else scorer.probabilities(logits)
    data = []
    for index, row in enumerate(values):
        order = np.argsort(-row, kind="stable")[: body.top_k]
        labels = [{"label": scorer.labels[j], "score": float(row[j])} for j in order]
        data.append({"object": "classification", "index": index, **labels[0], "labels": labels})
    tokens = sum(s.tokens for s in scored)
    return {
        "object": "list",
        "data": data,
        "model": served,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
