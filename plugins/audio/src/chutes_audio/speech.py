"""``build_tts_chute``: OpenAI's ``/v1/audio/speech`` through transformers' text-to-speech.

Text is cut into sentences (grouped up to ``max_piece_chars``), each
synthesised in turn in one worker thread (requests take turns piece by
piece; a client that goes away stops costing compute), then joined and
encoded in the asked format: ``wav``, ``flac`` and ``mp3`` at the model's
rate, ``pcm`` as raw 16-bit little-endian samples at ``pcm_sample_rate``
(OpenAI's is 24 kHz). The rate is also in the ``x-sample-rate`` header.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Unpack

from chutes_core import Chute, ChutePack
from chutes_core.engines.hub import fetch_model_async
from chutes_core.engines.model import chute_name_for
from chutes_core.engines.settings import ChuteSettings, chute_from_settings, documents_settings
from chutes_core.errors import InvalidValueError
from chutes_core.validation import check_int

log = logging.getLogger("chutes.audio")


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``, as OpenAI defines it."""

    model_config = ConfigDict(extra="ignore")

    input: str = Field(..., description="The text to speak.")
    model: str | None = Field(None, description="The served model's name.")
    voice: str | None = Field(None, description="Accepted for compatibility; the model's voice.")
    response_format: str = Field("mp3", description="wav, mp3, flac or pcm.")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="VITS models only (speaking rate).")


@documents_settings
def build_tts_chute(
    username: str,
    model_name: str,
    *,
    served_model_name: str | None = None,
    max_input_chars: int = 4096,
    max_piece_chars: int = 400,
    pcm_sample_rate: int = 24000,
    **settings: Unpack[ChuteSettings],
) -> ChutePack:
    """A text-to-speech chute serving OpenAI's ``POST /v1/audio/speech``.

    ``model_name`` is any model transformers' ``text-to-speech`` pipeline
    runs by itself (VITS/MMS, Bark, ...), as a hub name or a local path.
    Inputs over ``max_input_chars`` are refused. ``concurrency`` defaults to 4.
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidValueError("model_name", model_name, "a hub model name or a local path")
    check_int("max_input_chars", max_input_chars, low=1, high=1_000_000)
    check_int("max_piece_chars", max_piece_chars, low=16, high=100_000)
    check_int("pcm_sample_rate", pcm_sample_rate, low=8000, high=192_000)
    served = served_model_name or model_name.rstrip("/").rsplit("/", 1)[-1]
    revision = settings.get("revision")
    chute = chute_from_settings(
        "build_tts_chute",
        username,
        settings,
        template="tts",
        name=settings.get("name") or chute_name_for(served, default="tts"),
        tagline=f"{served} text to speech (OpenAI API)",
        concurrency=4,
    )
    names = {served, model_name, "tts-1", "tts-1-hd", "gpt-4o-mini-tts"}

    @chute.on_startup()
    async def load_model(self: Chute) -> None:
        path = await fetch_model_async(model_name, revision)
        self.tts = await asyncio.to_thread(_Synthesizer.load, Path(path))
        self.tts_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")

    @chute.on_shutdown()
    async def stop_worker(self: Chute) -> None:
        worker = getattr(self, "tts_worker", None)
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)

    @chute.cord(
        public_api_path="/v1/audio/speech", path="/speech", output_content_type="audio/mpeg"
    )
    async def speech(self: Chute, request: Request, body: SpeechRequest) -> Response:
        """Speak ``input``, as OpenAI's ``POST /v1/audio/speech``: the audio file's bytes."""
        import numpy as np

        from chutes_audio import media

        if body.model is not None and body.model not in names:
            message = f"The model `{body.model}` does not exist; this chute serves `{served}`."
            return _error(404, message, "model", "model_not_found")
        fmt = body.response_format
        if fmt not in media.SPEECH_FORMATS:
            formats = ", ".join(media.SPEECH_FORMATS)
            return _error(400, f"response_format must be one of {formats}", "response_format")
        text = body.input.strip()
        if not text:
            return _error(400, "input must not be empty", "input")
        if len(text) > max_input_chars:
            return _error(
                400, f"input has {len(text)} characters; at most {max_input_chars}", "input"
            )
        tts = self.tts
        if body.speed != 1.0 and not tts.takes_speed:
            return _error(400, "this model does not take a speed", "speed")
        loop = asyncio.get_running_loop()
        parts = sentences(text, max_piece_chars)
        audio = []
        for number, part in enumerate(parts, 1):
            if await request.is_disconnected():
                return Response(status_code=499)
            audio.append(await loop.run_in_executor(self.tts_worker, tts.say, part, body.speed))
            if len(parts) > 1:
                log.info("spoke piece %d/%d", number, len(parts))
        samples = np.concatenate(audio)
        rate = tts.sampling_rate
        if fmt == "pcm":
            samples, rate = media.resample(samples, rate, pcm_sample_rate), pcm_sample_rate
        payload = await asyncio.to_thread(media.encode, samples, rate, fmt)
        headers = {"x-sample-rate": str(rate)}
        return Response(payload, media_type=media.SPEECH_FORMATS[fmt], headers=headers)

    return ChutePack(chute, speech=speech)


def sentences(text: str, limit: int) -> list[str]:
    """``text`` in pieces of whole sentences, each at most ``limit`` characters when it can be."""
    pieces: list[str] = []
    for sentence in re.split(r"(?<=[.!?;:])\s+|\n+", text):
        sentence = sentence.strip()
        while len(sentence) > limit:  # no sentence end in sight: cut at a space
            cut = sentence.rfind(" ", 0, limit)
            cut = cut if cut > 0 else limit
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        if not sentence:
            continue
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= limit:
            pieces[-1] += " " + sentence
        else:
            pieces.append(sentence)
    return pieces


class _Synthesizer:
    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        config = pipe.model.config
        self.takes_speed = hasattr(config, "speaking_rate")
        self.base_rate = getattr(config, "speaking_rate", 1.0)
        self.sampling_rate = int(pipe.sampling_rate)

    @classmethod
    def load(cls, path: Path) -> _Synthesizer:
        import torch
        from transformers import pipeline

        device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe = pipeline("text-to-speech", model=str(path), device=device)
        loaded = cls(pipe)
        log.info("loaded %s on %s (%d Hz)", path.name, device, loaded.sampling_rate)
        return loaded

    def say(self, text: str, speed: float) -> Any:
        """One piece's samples, in the worker thread."""
        import numpy as np

        forward = {"speaking_rate": self.base_rate * speed} if self.takes_speed else {}
        out = self.pipe(text, forward_params=forward)
        return np.asarray(out["audio"], dtype=np.float32).reshape(-1)


def _error(status: int, message: str, param: str | None, code: str | None = None) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)
