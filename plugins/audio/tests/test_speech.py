"""/v1/audio/speech in process, on a tiny random VITS (22050 Hz): noise out, but every format
comes back decodable, at the right sample rate."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
import soundfile
from chutes_audio.speech import build_tts_chute

from chutes_testing import ChuteClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXT = "Hello there. This is a test of the speech route!"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tiny_vits) -> AsyncIterator[ChuteClient]:
    chute = build_tts_chute(
        username="me",
        model_name=str(tiny_vits),
        served_model_name="tiny-vits",
        max_input_chars=300,
        max_piece_chars=100,
    )
    async with ChuteClient(chute) as client:
        yield client


async def speak(client: ChuteClient, **body):
    return await client.post("/v1/audio/speech", json={"input": TEXT, **body})


@pytest.mark.parametrize(("fmt", "media_type"), [("wav", "audio/wav"), ("flac", "audio/flac")])
async def test_wav_and_flac_at_the_model_rate(api, fmt, media_type):
    answer = await speak(api, response_format=fmt, voice="alloy", model="tiny-vits")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == media_type
    assert answer.headers["x-sample-rate"] == "22050"
    samples, rate = soundfile.read(io.BytesIO(answer.content), dtype="float32")
    assert rate == 22050 and samples.ndim == 1 and len(samples) > 1000
    assert np.abs(samples).max() > 0  # noise, not silence


async def test_mp3_is_the_default_and_decodes(api):
    answer = await speak(api, model="tts-1")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "audio/mpeg"
    samples, rate = soundfile.read(io.BytesIO(answer.content), dtype="float32")
    assert rate == 22050 and len(samples) > 1000


async def test_pcm_is_raw_16_bit_at_24_khz(api):
    wav = await speak(api, response_format="wav")
    pcm = await speak(api, response_format="pcm")
    assert pcm.status_code == 200 and pcm.headers["content-type"] == "audio/pcm"
    assert pcm.headers["x-sample-rate"] == "24000"
    assert len(pcm.content) % 2 == 0
    samples = np.frombuffer(pcm.content, dtype="<i2")
    spoken = soundfile.info(io.BytesIO(wav.content)).duration
    # Each synthesis draws its own durations: the lengths agree in order of magnitude only.
    assert 0.2 < len(samples) / 24000 / spoken < 5


async def test_speed_changes_the_length(api):
    slow = await speak(api, response_format="pcm", speed=0.25)
    fast = await speak(api, response_format="pcm", speed=4.0)
    assert len(slow.content) > 4 * len(fast.content)


async def test_long_input_is_spoken_piece_by_piece(api, caplog):
    import logging

    text = " ".join(["This sentence is one of many."] * 9)  # 269 characters
    with caplog.at_level(logging.INFO, logger="chutes.audio"):
        answer = await api.post("/v1/audio/speech", json={"input": text, "response_format": "wav"})
    assert answer.status_code == 200
    progress = [r.getMessage() for r in caplog.records if "spoke piece" in r.getMessage()]
    assert progress == ["spoke piece 1/3", "spoke piece 2/3", "spoke piece 3/3"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"response_format": "opus"}, 400, "response_format"),
        ({"input": "   "}, 400, "input"),
        ({"input": "x" * 301}, 400, "input"),
        ({"model": "other"}, 404, "model"),
    ],
)
async def test_bad_requests_name_the_field(api, body, status, param):
    answer = await speak(api, **body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


async def test_speed_out_of_range_is_refused(api):
    assert (await speak(api, speed=5)).status_code == 422
