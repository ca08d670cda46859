"""The fused pooling kernel against its torch reference, under Triton's interpreter on CPU."""

from __future__ import annotations

import os

import pytest

# Must be set before triton is first imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the Triton kernel needs chutes-embeddings[kernels]")

import chutes_testing as testing  # noqa: E402
from chutes_core.kernels import get_kernel  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    ("batch", "tokens", "features"),
    [(1, 1, 5), (3, 7, 384), (4, 33, 300), (2, 17, 1000), (5, 128, 384)],
)
def test_kernel_matches_the_reference(batch: int, tokens: int, features: int, dtype) -> None:
    def inputs():
        generator = torch.Generator().manual_seed(batch * 1000 + tokens)
        hidden = (torch.randn(batch, tokens, features, generator=generator) * 3).to(dtype)
        mask = (torch.rand(batch, tokens, generator=generator) > 0.4).long()
        mask[:, 0] = 1  # every row has at least one real token
        mask[-1, tokens // 2 :] = 0  # a heavily padded row
        return hidden, mask

    worst = testing.check_kernel("embeddings.mean_pool_normalize", inputs, atol=2e-6, rtol=1e-5)
    assert worst < 2e-6


def test_without_normalisation_and_with_an_all_padding_row() -> None:
    hidden = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    kernel = get_kernel("embeddings.mean_pool_normalize")
    reference = kernel.implementation("torch")(hidden, mask, False)
    fused = kernel.implementation("triton")(hidden, mask, False)
    assert torch.allclose(reference, fused, atol=1e-6)
    assert torch.allclose(reference[0], hidden[0, :2].mean(dim=0), atol=1e-6)
    assert torch.count_nonzero(fused[1]) == 0  # nothing to average: zeros, not NaN


def test_cpu_tensors_use_the_torch_reference(monkeypatch) -> None:
    monkeypatch.setenv("CHUTES_KERNELS", "auto")
    kernel = get_kernel("embeddings.mean_pool_normalize")
    assert kernel.choose(torch.zeros(1, 1, 1), torch.ones(1, 1)) == "torch"
