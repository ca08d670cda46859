"""Images to pixels: a torch reference and a fused Triton kernel.

Both take a float tensor (N, C, H, W) whose values span ``[low, high]``
(``[-1, 1]``, a VAE's output, by default) and return uint8 (N, H, W, C):
``floor(clamp(x * scale + shift, 0, 1) * 255 + 0.5)`` with ``scale`` and
``shift`` mapping ``low`` to 0 and ``high`` to 1. The fused kernel does the
scaling, clamping, rounding, cast and layout change in one pass over memory,
reading any strides. Registered as ``diffusion.to_uint8_nhwc``.
"""

from __future__ import annotations

from typing import Any

import torch

from chutes_core.kernels import triton_jit


def _affine(low: float, high: float) -> tuple[float, float]:
    if not high > low:
        raise ValueError(f"the value range must have high > low, got [{low}, {high}]")
    scale = 1.0 / (high - low)
    return scale, -low * scale


def to_uint8_nhwc_torch(
    images: torch.Tensor, *, low: float = -1.0, high: float = 1.0
) -> torch.Tensor:
    scale, shift = _affine(low, high)
    unit = (images.float() * scale + shift).clamp(0, 1)
    return torch.floor(unit * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


@triton_jit
def _compile(triton: Any, tl: Any) -> Any:
    @triton.jit
    def to_uint8_nhwc_kernel(
        src,
        dst,
        total,
        channels,
        height,
        width,
        s_n,
        s_c,
        s_h,
        s_w,
        scale,
        shift,
        BLOCK: tl.constexpr,
    ):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inside = offsets < total
        # Each lane writes one output element, (n, h, w, c) in NHWC order, so stores coalesce.
        c = offsets % channels
        w = (offsets // channels) % width
        h = (offsets // (channels * width)) % height
        n = offsets // (channels * width * height)
        values = tl.load(src + n * s_n + c * s_c + h * s_h + w * s_w, mask=inside, other=0.0)
        unit = tl.minimum(tl.maximum(values.to(tl.float32) * scale + shift, 0.0), 1.0)
        tl.store(dst + offsets, tl.floor(unit * 255.0 + 0.5).to(tl.uint8), mask=inside)

    return to_uint8_nhwc_kernel


def to_uint8_nhwc_triton(
    images: torch.Tensor, *, low: float = -1.0, high: float = 1.0
) -> torch.Tensor:
    import triton

    scale, shift = _affine(low, high)
    n, c, h, w = images.shape
    out = torch.empty((n, h, w, c), dtype=torch.uint8, device=images.device)
    total = out.numel()
    if total == 0:
        return out
    block = 1024
    _compile()[(triton.cdiv(total, block),)](
        images, out, total, c, h, w, *images.stride(), scale, shift, BLOCK=block
    )
    return out
