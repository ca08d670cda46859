"""Both templates under a real `chutes run`: the official openai client, and curl's multipart."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest
import soundfile

import chutes_testing as testing

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def whisper(tmp_path_factory, tiny_whisper):
    cwd = tmp_path_factory.mktemp("whisper-run")
    ref = testing.write_template_app(
        cwd, "whisper", username="me", model_name=str(tiny_whisper), served_model_name="tiny"
    )
    with testing.run_chute(ref, cwd=cwd, env={"HF_HUB_OFFLINE": "1"}, ready_timeout=180) as chute:
        yield chute


def test_openai_client_transcribes(whisper, speech_wav) -> None:
    client = openai.OpenAI(base_url=f"{whisper.url}/v1", api_key="unused", max_retries=0)
    with speech_wav.open("rb") as audio:
        plain = client.audio.transcriptions.create(model="whisper-1", file=audio, language="en")
    assert isinstance(plain.text, str)
    with speech_wav.open("rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="tiny",
            file=audio,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
    # Decoding with timestamp tokens differs from plain decoding: the texts may differ.
    assert verbose.language == "english" and isinstance(verbose.text, str)
    assert abs(verbose.duration - soundfile.info(str(speech_wav)).duration) < 1e-3
    assert verbose.segments and verbose.segments[0].start == 0.0
    with speech_wav.open("rb") as audio:
        text = client.audio.transcriptions.create(
            model="whisper-1", file=audio, language="en", response_format="text"
        )
    assert str(text).strip() == plain.text


def test_curl_multipart_upload(whisper, speech_wav) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [curl, "-sS", "--noproxy", "*", f"{whisper.url}/v1/audio/transcriptions",
         "-F", f"file=@{speech_wav}", "-F", "model=whisper-1", "-F", "language=en",
         "-F", "response_format=verbose_json", "-F", "timestamp_granularities[]=segment"],
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    body = json.loads(done.stdout)
    assert body["language"] == "english" and isinstance(body["segments"], list)


def test_tts_under_chutes_run_with_the_openai_client(tmp_path, tiny_vits) -> None:
    ref = testing.write_template_app(tmp_path, "tts", username="me", model_name=str(tiny_vits))
    with testing.run_chute(
        ref, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"}, ready_timeout=180
    ) as chute:
        client = openai.OpenAI(base_url=f"{chute.url}/v1", api_key="unused", max_retries=0)
        spoken = client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hello from a chute.", response_format="wav"
        )
        samples, rate = soundfile.read(io.BytesIO(spoken.content))
        assert rate == 22050 and len(samples) > 1000
        mp3 = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
        assert soundfile.info(io.BytesIO(mp3.content)).samplerate == 22050
