"""A tiny Stable Diffusion pipeline served by `chutes run`, over real HTTP."""

from __future__ import annotations

import asyncio
import io
import signal
import time

import httpx
import pytest
from PIL import Image

from chutes_testing.running import run_chute, write_template_app

pytestmark = pytest.mark.timeout(600)  # the first test starts the chute


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_sd):
    root = tmp_path_factory.mktemp("diffusion")
    app = write_template_app(
        root,
        "diffusion",
        username="me",
        name="tiny-art",
        model_name_or_url=str(tiny_sd),
        concurrency=2,
        max_pixels=512 * 512,
    )
    with run_chute(app, cwd=root, env={"HF_HUB_OFFLINE": "1"}, ready_timeout=180) as running:
        yield running.url, running.log_path
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(60) == 0


def generate(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/generate", json={"prompt": "a red fox", **body}, timeout=120)


def test_jpeg_and_png_of_the_asked_size(server) -> None:
    url = server[0]
    jpeg = generate(url, height=128, width=192, steps=2, seed=1)
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(jpeg.content))
    assert image.format == "JPEG" and image.size == (192, 128)
    png = generate(url, height=136, width=128, steps=2, seed=1, output_format="png")
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG" and image.size == (128, 136)
    webp = generate(url, height=128, width=128, steps=1, seed=1, format="webp")
    assert Image.open(io.BytesIO(webp.content)).format == "WEBP"


def test_the_same_seed_gives_the_same_bytes(server) -> None:
    url = server[0]
    first = generate(url, height=128, width=128, steps=2, seed=42, output_format="png")
    second = generate(url, height=128, width=128, steps=2, seed=42, output_format="png")
    other = generate(url, height=128, width=128, steps=2, seed=43, output_format="png")
    assert first.content == second.content != other.content
    assert first.headers["x-seed"] == "42"
    unseeded = generate(url, height=128, width=128, steps=1)
    assert int(unseeded.headers["x-seed"]) >= 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"height": 100}, "height"),
        ({"width": 2049}, "width"),
        ({"width": 130}, "width"),
        ({"steps": 0}, "steps"),
        ({"num_inference_steps": 60}, "num_inference_steps"),
        ({"seed": -5}, "seed"),
        ({"output_format": "bmp"}, "output_format"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_bad_inputs_get_422s_naming_the_field(server, body, field) -> None:
    answer = generate(server[0], **body)
    assert answer.status_code == 422, answer.text
    assert any(field in item["loc"] for item in answer.json()["detail"]), answer.text


def test_requests_over_the_pixel_budget_get_a_422_naming_both_sides(server) -> None:
    url, log_path = server
    answer = generate(url, height=1024, width=512)  # valid sides, but over max_pixels=512*512
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert [error["loc"] for error in errors] == [["body", "height"], ["body", "width"]]
    assert (
        "524288 pixels" in errors[0]["msg"]
        and "at most 262144 (for example 512x512)" in (errors[0]["msg"])
    )
    assert "pixel budget: 262144 pixels (512x512)" in log_path.read_text()


def in_flight(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith('chutes_in_flight{cord="generate"}'):
            return float(line.split()[-1])
    return 0.0


def test_requests_beyond_the_cap_get_429(server) -> None:
    url = server[0]
    body = {"prompt": "a fox", "height": 128, "width": 128, "steps": 20, "seed": 1}

    async def burst() -> tuple[list[int], list[int]]:
        async with httpx.AsyncClient(timeout=120) as client:
            admitted = [
                asyncio.create_task(client.post(f"{url}/generate", json=body)) for _ in "ab"
            ]
            # Both generations are under way (one runs, one waits for the worker) ...
            deadline = time.monotonic() + 60
            while in_flight((await client.get(f"{url}/_chutes/metrics")).text) < 2:
                assert time.monotonic() < deadline, "the two generations never both started"
                await asyncio.sleep(0.02)
            # ... so the cap (concurrency=2) is reached and more are refused at once.
            refused = await asyncio.gather(
                *[client.post(f"{url}/generate", json=body) for _ in "abc"]
            )
            return [a.status_code for a in await asyncio.gather(*admitted)], [
                r.status_code for r in refused
            ]

    admitted, refused = asyncio.run(burst())
    assert admitted == [200, 200] and refused == [429, 429, 429]


def test_steps_are_logged_and_timed(server) -> None:
    url, log_path = server
    generate(url, height=128, width=128, steps=3, seed=7)
    log = log_path.read_text()
    assert "step 3/3" in log and "generated 128x128 in 3 steps" in log
    metrics = httpx.get(f"{url}/_chutes/metrics").text
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("chutes_diffusion_step_seconds_count")
    )
    assert count >= 3
