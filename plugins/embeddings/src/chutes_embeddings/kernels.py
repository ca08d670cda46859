"""Masked mean pooling + L2 normalisation: a torch reference and a fused Triton kernel.

Both take ``hidden`` of shape (batch, tokens, features) in any float dtype and
``mask`` of shape (batch, tokens) (1 for real tokens, 0 for padding) and
return float32 (batch, features). Pooling accumulates in float32 whatever the
input dtype, so fp16 models lose no precision here. Registered as
``embeddings.mean_pool_normalize``; the registry picks Triton on CUDA.
"""

from __future__ import annotations

from typing import Any

import torch

from chutes_core.kernels import triton_jit


def mean_pool_normalize_torch(
    hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    weights = mask.to(torch.float32).unsqueeze(-1)
    summed = (hidden.to(torch.float32) * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1.0)
    if normalize:
        pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return pooled


@triton_jit
def _compile(triton: Any, tl: Any) -> Any:
    @triton.jit
    def mean_pool_normalize_kernel(
        hidden,
        mask,
        out,
        tokens,
        features,
        stride_hb,
        stride_ht,
        stride_hf,
        stride_mb,
        stride_mt,
        stride_ob,
        NORMALIZE: tl.constexpr,
        BLOCK_T: tl.constexpr,
        BLOCK_F: tl.constexpr,
    ):
        row = tl.program_id(0)
        # Pass 1: how many real tokens this row has.
        counted = tl.zeros([BLOCK_T], dtype=tl.float32)
        for t0 in range(0, tokens, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            counted += tl.load(mask + row * stride_mb + t * stride_mt, mask=t < tokens, other=0).to(
                tl.float32
            )
        count = tl.maximum(tl.sum(counted, axis=0), 1.0)
        # Pass 2: masked mean, one block of features at a time, keeping the sum of squares.
        squares = tl.zeros([BLOCK_F], dtype=tl.float32)
        for f0 in range(0, features, BLOCK_F):
            f = f0 + tl.arange(0, BLOCK_F)
            acc = tl.zeros([BLOCK_F], dtype=tl.float32)
            for t0 in range(0, tokens, BLOCK_T):
                t = t0 + tl.arange(0, BLOCK_T)
                keep = tl.load(mask + row * stride_mb + t * stride_mt, mask=t < tokens, other=0).to(
                    tl.float32
                )
                values = tl.load(
                    hidden + row * stride_hb + t[:, None] * stride_ht + f[None, :] * stride_hf,
                    mask=(t[:, None] < tokens) & (f[None, :] < features),
                    other=0.0,
                ).to(tl.float32)
                acc += tl.sum(values * keep[:, None], axis=0)
            pooled = acc / count
            squares += pooled * pooled
            tl.store(out + row * stride_ob + f, pooled, mask=f < features)
        # Pass 3: scale the row to unit length.
        if NORMALIZE:
            scale = 1.0 / tl.maximum(tl.sqrt(tl.sum(squares, axis=0)), 1e-12)
            for f0 in range(0, features, BLOCK_F):
                f = f0 + tl.arange(0, BLOCK_F)
                pooled = tl.load(out + row * stride_ob + f, mask=f < features, other=0.0)
                tl.store(out + row * stride_ob + f, pooled * scale, mask=f < features)

    return mean_pool_normalize_kernel


def mean_pool_normalize_triton(
    hidden: torch.Tensor, mask: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    import triton

    batch, tokens, features = hidden.shape
    out = torch.empty((batch, features), dtype=torch.float32, device=hidden.device)
    if batch == 0:
        return out
    block_f = min(triton.next_power_of_2(features), 256)
    _compile()[(batch,)](
        hidden,
        mask,
        out,
        tokens,
        features,
        hidden.stride(0),
        hidden.stride(1),
        hidden.stride(2),
        mask.stride(0),
        mask.stride(1),
        out.stride(0),
        NORMALIZE=normalize,
        BLOCK_T=16,
        BLOCK_F=block_f,
    )
    return out
