"""Audio in and out: decoding uploads, resampling, cutting long audio, encoding speech.

Decoding tries libsndfile first (``soundfile``'s wheel bundles it: WAV,
FLAC, OGG/Vorbis and MP3), then the ``ffmpeg`` binary for everything else
(M4A, WebM, ...), which the template's image installs. Encoding needs no
binary: WAV and FLAC through libsndfile, MP3 through LAME (``lameenc``),
PCM as raw 16-bit little-endian samples, as OpenAI's API sends them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from math import gcd

import numpy as np

#: Response formats of ``/v1/audio/speech`` and their media types.
SPEECH_FORMATS = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


class AudioError(ValueError):
    """An upload that is not audio we can decode."""


def decode(data: bytes, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate`` from an audio file's bytes."""
    if not data:
        raise AudioError("the file is empty")
    try:
        import soundfile

        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile does not know the format: ask ffmpeg
        return _ffmpeg_decode(data, sampling_rate, reason=str(exc))
    return resample(samples.mean(axis=1), int(rate), sampling_rate)


def _ffmpeg_decode(data: bytes, sampling_rate: int, *, reason: str) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(f"cannot decode the file ({reason}), and ffmpeg is not installed")
    command = [ffmpeg, "-nostdin", "-loglevel", "error", "-i", "pipe:0"]
    command += ["-f", "f32le", "-ac", "1", "-ar", str(sampling_rate), "pipe:1"]
    done = subprocess.run(command, input=data, capture_output=True, timeout=600)
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no audio"]
        raise AudioError(f"cannot decode the file: {message[0]}")
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` from ``rate`` to ``target`` Hz (polyphase filtering)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target:
        return samples
    from scipy.signal import resample_poly

    common = gcd(rate, target)
    return np.asarray(resample_poly(samples, target // common, rate // common), dtype=np.float32)


@dataclass(frozen=True)
class Piece:
    """A piece of long audio: its samples and where it starts, in seconds."""

    samples: np.ndarray
    start: float


def pieces(samples: np.ndarray, rate: int, seconds: float) -> list[Piece]:
    """Cut audio longer than ``seconds`` into pieces of at most that length.

    Each cut falls at the quietest tenth of a second in the last sixth of
    the window, so that a cut rarely splits a word.
    """
    window = int(seconds * rate)
    if len(samples) <= window:
        return [Piece(samples, 0.0)]
    hop = max(1, rate // 10)
    out, start = [], 0
    while len(samples) - start > window:
        search_from = start + window - window // 6
        end = start + window
        region = samples[search_from:end]
        frames = len(region) // hop
        if frames > 1:
            energy = (region[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
            end = search_from + int(np.argmin(energy)) * hop + hop // 2
        out.append(Piece(samples[start:end], start / rate))
        start = end
    out.append(Piece(samples[start:], start / rate))
    return out


def encode(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """Speech samples (float, -1..1) as a ``fmt`` file (see :data:`SPEECH_FORMATS`)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0)
    pcm16 = (clipped * 32767.0).astype("<i2")
    if fmt == "pcm":
        return pcm16.tobytes()
    if fmt == "mp3":
        import lameenc

        if rate not in MP3_RATES:  # MPEG audio takes only these: the nearest above, or 48 kHz
            target = min((r for r in MP3_RATES if r >= rate), default=48000)
            pcm16 = (np.clip(resample(clipped, rate, target), -1, 1) * 32767.0).astype("<i2")
            rate = target

        encoder = lameenc.Encoder()
        encoder.set_bit_rate(64)
        encoder.set_in_sample_rate(rate)
        encoder.set_channels(1)
        encoder.set_quality(2)
        return bytes(encoder.encode(pcm16.tobytes()) + encoder.flush())
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, pcm16, rate, format=fmt.upper(), subtype="PCM_16")
    return buffer.getvalue()
