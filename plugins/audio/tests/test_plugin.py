"""The plugin against chutes' contract, its templates' arguments, and the audio helpers."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
from chutes_audio import media
from chutes_audio.speech import sentences

import chutes_testing as testing
from chutes_core import Image
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager


def test_loads_through_its_entry_point() -> None:
    info = testing.check_plugin("audio")
    assert info.distribution == "chutes-audio"
    assert info.templates == ["tts", "whisper"]
    assert set(info.hooks) == {"build_image", "egress_policy", "register_templates"}


def test_templates_build_servable_chutes() -> None:
    whisper = testing.check_template("whisper", username="me", model_name="openai/whisper-tiny")
    assert [(c.method, c.public_api_path) for c in whisper.cords] == [
        ("POST", "/v1/audio/transcriptions")
    ]
    tts = testing.check_template("tts", username="me", model_name="facebook/mms-tts-eng")
    assert [(c.method, c.public_api_path) for c in tts.cords] == [("POST", "/v1/audio/speech")]
    assert whisper.concurrency == tts.concurrency == 4


@pytest.mark.parametrize("template", ["whisper", "tts"])
def test_egress_closed_image_with_ffmpeg_and_a_prebuilt_image_kept(template) -> None:
    import importlib

    module = importlib.import_module(f"chutes.chute.template.{template}")
    build = getattr(module, f"build_{template}_chute")
    manager = get_plugin_manager()
    chute = build(username="me", model_name="org/model")
    assert manager.egress_policy(chute) is False
    assert manager.egress_source(chute) == "audio"
    assert manager.egress_policy(build("me", "org/model", allow_external_egress=True)) is True
    dockerfile = str(manager.build_image(chute))
    testing.check_dockerfile(dockerfile)
    words = dockerfile.split()
    assert "ffmpeg" in words and "transformers==5.24.0" in words and "chutes-audio==0.1.0" in words
    assert manager.build_image(build("me", "org/model", image="org/prebuilt:1")) == "org/prebuilt:1"
    own = Image(username="me", name="mine", tag="1")
    assert manager.build_image(build("me", "org/model", image=own)) is own


@pytest.mark.parametrize(
    ("template", "kwargs", "field"),
    [
        ("whisper", {"model_name": ""}, "model_name"),
        ("whisper", {"chunk_length_s": 31}, "chunk_length_s"),
        ("whisper", {"max_file_mb": 0}, "max_file_mb"),
        ("tts", {"model_name": " "}, "model_name"),
        ("tts", {"max_input_chars": 0}, "max_input_chars"),
        ("tts", {"pcm_sample_rate": 100}, "pcm_sample_rate"),
    ],
)
def test_bad_arguments_name_the_field(template, kwargs, field) -> None:
    from chutes_audio.speech import build_tts_chute
    from chutes_audio.whisper import build_whisper_chute

    build = build_whisper_chute if template == "whisper" else build_tts_chute
    with pytest.raises(InvalidValueError, match=field):
        build(**{"username": "me", "model_name": "org/model", **kwargs})


def test_resample_keeps_a_tone_and_the_duration() -> None:
    rate = 22050
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = media.resample(tone, rate, 16000)
    assert len(out) == 16000 and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1  # 1 Hz bins: still 440 Hz
    assert media.resample(tone, rate, rate) is not None


def test_pieces_cover_the_audio_and_cut_at_silence() -> None:
    rate = 1000
    loud = np.ones(rate * 9, dtype=np.float32)
    audio = np.concatenate([loud, np.zeros(300, dtype=np.float32), loud, loud])
    pieces = media.pieces(audio, rate, 10)
    assert np.array_equal(np.concatenate([p.samples for p in pieces]), audio)
    assert all(len(p.samples) <= 10 * rate for p in pieces)
    assert 9.0 <= pieces[1].start <= 9.3  # in the silence, not at 10 s
    assert media.pieces(audio[:500], rate, 10)[0].start == 0.0


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_encoded_speech_decodes_at_its_rate(fmt) -> None:
    rate = 24000 if fmt != "mp3" else 22050
    noise = (np.random.default_rng(0).standard_normal(rate) * 0.1).astype(np.float32)
    data = media.encode(noise, rate, fmt)
    samples, got = soundfile.read(io.BytesIO(data), dtype="float32")
    assert got == rate and abs(len(samples) - rate) < 2000  # mp3 pads a frame or two
    back = media.decode(data, 16000)
    assert abs(len(back) - 16000) < 1500


def test_mp3_at_a_rate_mpeg_lacks_is_resampled() -> None:
    data = media.encode(np.zeros(16000 * 2, dtype=np.float32), 17000, "mp3")
    assert soundfile.info(io.BytesIO(data)).samplerate == 22050


def test_pcm_is_little_endian_16_bit() -> None:
    data = media.encode(np.array([0.0, 1.0, -1.0, 2.0], dtype=np.float32), 24000, "pcm")
    assert np.frombuffer(data, dtype="<i2").tolist() == [0, 32767, -32767, 32767]


def test_undecodable_bytes_are_an_audio_error() -> None:
    with pytest.raises(media.AudioError):
        media.decode(b"not audio" * 20, 16000)
    with pytest.raises(media.AudioError, match="empty"):
        media.decode(b"", 16000)


def test_sentences_group_up_to_the_limit() -> None:
    assert sentences("One. Two! Three?", 100) == ["One. Two! Three?"]
    assert sentences("One. Two! Three?", 10) == ["One. Two!", "Three?"]
    long = "word " * 30
    pieces = sentences(long, 20)
    assert all(len(p) <= 20 for p in pieces) and " ".join(pieces).split() == long.split()
