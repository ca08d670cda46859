"""/v1/audio/transcriptions in process, on a tiny random Whisper and real speech (espeak-ng).

The model is random, so the text is gibberish; what is checked is the whole
path: multipart upload, decoding (WAV, MP3), resampling to 16 kHz, cutting
long audio into pieces, timestamps shifted per piece, and each response format.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import soundfile
from chutes_audio import media
from chutes_audio.whisper import build_whisper_chute

from chutes_testing import ChuteClient

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tiny_whisper) -> AsyncIterator[ChuteClient]:
    chute = build_whisper_chute(
        username="me",
        model_name=str(tiny_whisper),
        served_model_name="tiny-whisper",
        chunk_length_s=10,
        max_file_mb=2,
    )
    async with ChuteClient(chute) as client:
        yield client


def reference(path: Path, audio: np.ndarray, **options) -> dict:
    """What the pipeline says for 16 kHz samples, called directly."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=str(path), device="cpu")
    return asr({"raw": audio, "sampling_rate": 16000}, **options)


async def transcribe(client: ChuteClient, data: bytes, name: str = "speech.wav", **form):
    files = {"file": (name, data, "application/octet-stream")}
    return await client.post("/v1/audio/transcriptions", files=files, data=form)


async def test_json_is_the_pipeline_on_the_resampled_speech(api, tiny_whisper, speech_wav):
    answer = await transcribe(api, speech_wav.read_bytes(), model="tiny-whisper", language="en")
    assert answer.status_code == 200, answer.text
    samples, rate = soundfile.read(speech_wav, dtype="float32")
    assert rate == 22050
    resampled = media.resample(samples, rate, 16000)
    assert abs(len(resampled) - len(samples) * 16000 / 22050) <= 1
    expected = reference(
        tiny_whisper, resampled, generate_kwargs={"language": "en", "task": "transcribe"}
    )
    assert answer.json() == {"text": expected["text"].strip()}


async def test_text_format_and_an_mp3_upload(api, speech_wav):
    wav = await transcribe(api, speech_wav.read_bytes(), response_format="text", language="en")
    assert wav.status_code == 200 and wav.headers["content-type"].startswith("text/plain")
    samples, rate = soundfile.read(speech_wav, dtype="float32")
    mp3 = media.encode(samples, rate, "mp3")
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF  # an MPEG audio stream
    answer = await transcribe(api, mp3, name="speech.mp3", response_format="verbose_json")
    assert answer.status_code == 200, answer.text
    # LAME pads the start and end a little: the duration is the speech's, to within 0.1 s.
    assert abs(answer.json()["duration"] - len(samples) / rate) < 0.1


async def test_verbose_json_on_long_audio_goes_piece_by_piece(api, speech_wav, caplog):
    samples, rate = soundfile.read(speech_wav, dtype="float32")
    silence = np.zeros(rate, dtype=np.float32)
    long = np.concatenate([samples, silence] * 5)  # about 28 s: pieces of at most 10 s
    buffer = io.BytesIO()
    soundfile.write(buffer, long, rate, format="WAV")
    with caplog.at_level(logging.INFO, logger="chutes.audio"):
        answer = await transcribe(
            api, buffer.getvalue(), response_format="verbose_json", language="de"
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    duration = len(long) / rate
    assert body["task"] == "transcribe" and body["language"] == "german"
    assert abs(body["duration"] - duration) < 1e-3
    count = len(media.pieces(media.resample(long, rate, 16000), 16000, 10))
    assert count >= 3  # each piece ends at a quiet point in its window's last sixth
    progress = [r.getMessage() for r in caplog.records if "transcribed piece" in r.getMessage()]
    assert [m.split()[2] for m in progress] == [f"{i}/{count}" for i in range(1, count + 1)]
    segments = body["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert all(0 <= s["start"] <= s["end"] <= duration + 1e-3 for s in segments)
    seeks = sorted({s["seek"] for s in segments})
    assert len(seeks) == count and seeks[0] == 0 and 830 <= seeks[1] <= 1000  # cut before 10 s
    assert max(s["end"] for s in segments) > 20  # timestamps shifted by each piece's start
    assert body["text"] == "".join(s["text"] for s in segments).strip()


async def test_detected_language_and_subtitles(api, speech_wav):
    data = speech_wav.read_bytes()
    verbose = await transcribe(api, data, response_format="verbose_json")
    assert verbose.status_code == 200, verbose.text
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    assert verbose.json()["language"] in LANGUAGES.values()  # whatever the random model hears
    srt = await transcribe(api, data, response_format="srt")
    lines = srt.text.splitlines()
    assert lines[0] == "1" and " --> " in lines[1] and lines[1].startswith("00:00:00,000")
    vtt = await transcribe(api, data, response_format="vtt")
    assert vtt.text.startswith("WEBVTT\n") and "00:00:00.000 --> " in vtt.text


@pytest.mark.parametrize(
    ("form", "data", "status", "param"),
    [
        ({"response_format": "xml"}, None, 400, "response_format"),
        ({"language": "klingon"}, None, 400, "language"),
        ({"model": "other"}, None, 404, "model"),
        (
            {"timestamp_granularities[]": "word", "response_format": "verbose_json"},
            None,
            400,
            "timestamp_granularities",
        ),
        ({}, b"", 400, "file"),
        ({}, b"this is not audio at all" * 10, 400, "file"),
        ({}, b"\0" * (2 * 1024 * 1024 + 1), 413, "file"),
    ],
)
async def test_bad_requests_name_the_field(api, speech_wav, form, data, status, param):
    answer = await transcribe(api, speech_wav.read_bytes() if data is None else data, **form)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


async def test_the_file_is_required(api):
    answer = await api.post("/v1/audio/transcriptions", data={"model": "tiny-whisper"})
    assert answer.status_code == 422


async def test_openapi_documents_a_multipart_upload(api):
    schema = (await api.get("/openapi.json")).json()
    body = schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]
    assert "multipart/form-data" in body["content"]
