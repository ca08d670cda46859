"""OpenAI's embeddings request and response."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``, as OpenAI defines it (plus ``truncate``)."""

    model_config = ConfigDict(extra="ignore")

    # Strict: JSON true/false are not token ids (lax ints would take them as 1 and 0).
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]] = Field(
        ..., description="Text, texts, token ids, or lists of token ids to embed."
    )
    model: str | None = Field(None, description="The served model's name.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="Vectors as JSON numbers, or base64 of little-endian float32."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Keep only the first N dimensions (renormalised)."
    )
    user: str | None = None
    truncate: bool = Field(
        False, description="Cut inputs longer than the model's limit instead of refusing them."
    )


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class HostError(BaseModel):
    """What the host answers itself before the cord runs (malformed JSON, NaN, ...)."""

    detail: str
