"""The fused post-process kernel against its torch reference, under Triton's interpreter."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the Triton kernel needs chutes-diffusers[kernels]")

import chutes_testing as testing  # noqa: E402
from chutes_core.kernels import get_kernel  # noqa: E402

SHAPES = [(1, 3, 8, 8), (2, 3, 17, 13), (1, 4, 33, 20), (3, 3, 64, 48)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_the_reference(shape, dtype) -> None:
    def inputs():
        generator = torch.Generator().manual_seed(sum(shape))
        # Beyond [-1, 1] too, so clamping is exercised.
        return ((torch.rand(shape, generator=generator) * 2.6 - 1.3).to(dtype),)

    assert testing.check_kernel("diffusion.to_uint8_nhwc", inputs, atol=0, rtol=0) == 0


@pytest.mark.parametrize("shape", SHAPES[1:3])
def test_kernel_matches_the_reference_for_unit_range_images(shape) -> None:
    """The generation path hands over the pipeline's [0, 1] images."""

    def inputs():
        generator = torch.Generator().manual_seed(sum(shape))
        return (torch.rand(shape, generator=generator) * 1.2 - 0.1,)

    unit = {"low": 0.0, "high": 1.0}
    assert testing.check_kernel("diffusion.to_uint8_nhwc", inputs, atol=0, rtol=0, kwargs=unit) == 0


def test_a_strided_input_and_the_value_mapping() -> None:
    kernel = get_kernel("diffusion.to_uint8_nhwc")
    images = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(2, 3, 4, 5)
    fused = kernel.implementation("triton")(images)
    assert fused.shape == (2, 4, 5, 3) and fused.dtype == torch.uint8
    assert fused[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]
    assert torch.equal(fused, kernel.implementation("torch")(images))
    unit = kernel.implementation("triton")(images, low=0.0, high=1.0)
    assert unit[0, 0, :, 0].tolist() == [0, 0, 0, 255, 255]


def test_an_empty_range_is_refused() -> None:
    kernel = get_kernel("diffusion.to_uint8_nhwc")
    with pytest.raises(ValueError, match="high > low"):
        kernel.implementation("triton")(torch.zeros(1, 3, 2, 2), low=1.0, high=1.0)
