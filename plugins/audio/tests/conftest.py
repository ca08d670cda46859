from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SPOKEN = "The quick brown fox jumps over the lazy dog. Hello, how are you today?"


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    from tiny_audio_models import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="session")
def tiny_vits(tmp_path_factory) -> Path:
    from tiny_audio_models import build_tiny_vits

    return build_tiny_vits(tmp_path_factory.mktemp("vits"), sampling_rate=22050)


def espeak(path: Path, text: str = SPOKEN) -> Path:
    """Real speech (espeak-ng's WAV, 22050 Hz mono), or the test skips."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): no real speech")
    subprocess.run([binary, "-s", "170", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    return espeak(tmp_path_factory.mktemp("speech") / "speech.wav")
