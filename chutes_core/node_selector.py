"""Hardware requirements for a chute."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NodeSelector(BaseModel):
    """Which GPUs a chute needs.

    ``include``/``exclude`` take short GPU identifiers such as ``"a100"`` or
    ``"h100"``. Values are validated strictly: ``gpu_count="2"`` is an error,
    not a conversion. ``max_hourly_price_per_gpu`` (USD, upstream 0.6) caps
    what the platform may pick; ``None`` leaves the price to the platform.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    gpu_count: int = Field(1, ge=1, le=8, description="GPUs per instance, 1 to 8.")
    min_vram_gb_per_gpu: int = Field(
        16, ge=16, le=140, description="Minimum memory per GPU in GB, 16 to 140."
    )
    include: list[str] | None = Field(None, description="Only these GPU types.")
    exclude: list[str] | None = Field(None, description="Never these GPU types.")
    max_hourly_price_per_gpu: float | None = Field(
        None,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="Highest price per GPU per hour, in USD, the chute may run at (above 0).",
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> NodeSelector:
        both = set(self.include or ()) & set(self.exclude or ())
        if both:
            raise ValueError(
                f"include and exclude both list {sorted(both)}; a GPU type can be in only one"
            )
        return self
