"""Memory: running out mid-generation is a clear 507 and the chute keeps serving; budgets."""

from __future__ import annotations

import weakref

import pytest
import torch
from chutes_diffusers.pipeline import MAX_PIXELS, is_out_of_memory, pixel_budget

BODY = {"prompt": "x", "height": 128, "width": 128, "steps": 1, "seed": 1}


class RunsOutOfMemory:
    """Stands in for a pipeline too big for its machine: it holds a tensor, then asks the
    allocator for more than there is. On the CPU (``cpu``) that is a real allocator
    failure; CUDA's own error (``cuda``) is raised as such, since there is no GPU here."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.held: weakref.ref[torch.Tensor] | None = None

    def __call__(self, **arguments):
        latents = torch.ones(4, 1024, 1024)
        self.held = weakref.ref(latents)
        if self.kind == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        torch.empty(2**48, dtype=torch.uint8)  # 256 TiB: beyond any address space


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
async def test_out_of_memory_is_a_507_and_the_chute_keeps_serving(tiny_sd, kind) -> None:
    from chutes.chute.template.diffusion import build_diffusion_chute
    from chutes_testing import ChuteClient

    pack = build_diffusion_chute("me", "oom", str(tiny_sd), concurrency=2)
    async with ChuteClient(pack) as client:
        diffusion = pack.chute.diffusion
        real = diffusion.pipeline
        diffusion.pipeline = failing = RunsOutOfMemory(kind)
        answer = await client.post("/generate", json=BODY)
        assert answer.status_code == 507, answer.text
        detail = answer.json()["detail"]
        assert "out of memory generating 128x128" in detail and "keeps serving" in detail
        assert failing.held is not None and failing.held() is None  # released, not kept alive
        diffusion.pipeline = real
        again = await client.post("/generate", json=BODY)
        assert again.status_code == 200 and again.headers["content-type"] == "image/jpeg"


def test_what_counts_as_out_of_memory() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    # 256 TiB: no allocator grants it, so this must raise (and count as out of memory).
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**48, dtype=torch.uint8)
    assert is_out_of_memory(caught.value)
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_the_measured_pixel_budget() -> None:
    probe = 512 * 512
    # 1 GiB for the probe, 10 GiB free: 80% of it affords 8 probes' worth of pixels.
    assert pixel_budget(free_bytes=10 * 2**30, probe_pixels=probe, probe_bytes=2**30) == 8 * probe
    # Never more than a request may ask for, never less than what the probe just did.
    assert pixel_budget(free_bytes=2**40, probe_pixels=probe, probe_bytes=2**30) == MAX_PIXELS
    assert pixel_budget(free_bytes=0, probe_pixels=probe, probe_bytes=2**30) == probe
