"""Batching: with max_batch_size, same-shaped requests share one pipeline call."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from chutes.chute.template.diffusion import build_diffusion_chute
from chutes_core.errors import InvalidValueError
from chutes_testing import ChuteClient


class Recorder:
    """Wraps the real pipeline, recording how many images each call made."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.calls: list[tuple[int, int, int]] = []  # (images, height, width)

    def __call__(self, **arguments):
        prompt = arguments["prompt"]
        count = len(prompt) if isinstance(prompt, list) else 1
        self.calls.append((count, arguments["height"], arguments["width"]))
        return self.pipeline(**arguments)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


def body(seed: int, side: int = 128) -> dict:
    return {"prompt": f"fox {seed}", "height": side, "width": side, "steps": 2, "seed": seed,
            "format": "png"}  # fmt: skip


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


async def test_same_shaped_requests_share_a_call_and_each_gets_its_own_image(tiny_sd) -> None:
    pack = build_diffusion_chute(
        "me", "batched", str(tiny_sd), concurrency=8, max_batch_size=4, batch_wait_timeout_s=0.5
    )
    async with ChuteClient(pack) as client:
        diffusion = pack.chute.diffusion
        diffusion.pipeline = recorder = Recorder(diffusion.pipeline)
        bodies = [body(1), body(2), body(3, side=136), body(4)]
        answers = await asyncio.gather(*(client.post("/generate", json=b) for b in bodies))
        assert [a.status_code for a in answers] == [200] * 4, answers[0].text
        assert [a.headers["x-seed"] for a in answers] == ["1", "2", "3", "4"]
        sizes = [Image.open(io.BytesIO(a.content)).size for a in answers]
        assert sizes == [(128, 128), (128, 128), (136, 136), (128, 128)]
        assert sorted(recorder.calls) == [(1, 136, 136), (3, 128, 128)]
        # Generated in a batch, an image is the one its seed gives alone.
        alone = await client.post("/generate", json=body(2))
        assert recorder.calls[-1] == (1, 128, 128)
        assert np.abs(pixels(alone.content) - pixels(answers[1].content)).mean() < 2.0
        assert np.abs(pixels(answers[0].content) - pixels(answers[1].content)).mean() > 2.0


def test_batch_options_are_checked(tiny_sd) -> None:
    with pytest.raises(InvalidValueError, match="max_batch_size"):
        build_diffusion_chute("me", "x", str(tiny_sd), max_batch_size=0)
    with pytest.raises(InvalidValueError, match="batch_wait_timeout_s"):
        build_diffusion_chute("me", "x", str(tiny_sd), batch_wait_timeout_s=-1)
