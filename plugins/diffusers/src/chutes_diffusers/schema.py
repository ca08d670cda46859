"""The ``/generate`` request."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
MIN_SIDE, MAX_SIDE = 128, 2048


class GenerationInput(BaseModel):
    """What to draw, and how."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    prompt: str = Field(..., min_length=1, max_length=4096, description="What to draw.")
    negative_prompt: str | None = Field(None, max_length=4096, description="What to avoid.")
    height: int = Field(
        1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels, a multiple of 8."
    )
    width: int = Field(
        1024, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8, description="Pixels, a multiple of 8."
    )
    num_inference_steps: int = Field(
        25,
        ge=1,
        le=50,
        validation_alias=AliasChoices("num_inference_steps", "steps"),
        description="Denoising steps.",
    )
    guidance_scale: float = Field(
        7.5,
        ge=0.0,
        le=30.0,
        validation_alias=AliasChoices("guidance_scale", "guidance"),
        description="How strongly to follow the prompt.",
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="The same seed gives the same image; random if unset."
    )
    output_format: Literal["jpeg", "png", "webp"] = Field(
        "jpeg",
        validation_alias=AliasChoices("output_format", "format"),
        description="Image format.",
    )
