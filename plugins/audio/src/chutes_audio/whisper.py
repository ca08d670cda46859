"""``build_whisper_chute``: OpenAI's ``/v1/audio/transcriptions`` through transformers.

The upload (multipart, as OpenAI's API and ``curl -F`` send it) is decoded
and resampled to the model's rate off the event loop, then cut into pieces
of at most ``chunk_length_s`` seconds at quiet points (see
:func:`chutes_audio.media.pieces`). Pieces go one at a time through the
``automatic-speech-recognition`` pipeline in one worker thread, so
concurrent requests take turns piece by piece, a long file logs its
progress, and a client that goes away stops costing compute at the next
piece. Segment timestamps are the model's, shifted by each piece's start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from typing_extensions import Unpack

from chutes_core import Chute, ChutePack
from chutes_core.engines.hub import fetch_model_async
from chutes_core.engines.model import chute_name_for
from chutes_core.engines.settings import ChuteSettings, chute_from_settings, documents_settings
from chutes_core.errors import InvalidValueError
from chutes_core.validation import check_number

log = logging.getLogger("chutes.audio")

FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


class Transcription(BaseModel):
    text: str


class Word(BaseModel):
    word: str
    start: float
    end: float


class Segment(BaseModel):
    id: int
    seek: int = Field(..., description="Where the segment's piece starts, in 10 ms frames.")
    start: float
    end: float
    text: str
    tokens: list[int] = []
    temperature: float = 0.0
    avg_logprob: float = Field(0.0, description="Not computed (0).")
    compression_ratio: float = Field(0.0, description="Not computed (0).")
    no_speech_prob: float = Field(0.0, description="Not computed (0).")


class VerboseTranscription(BaseModel):
    task: Literal["transcribe"] = "transcribe"
    language: str
    duration: float
    text: str
    segments: list[Segment]
    words: list[Word] | None = None


@documents_settings
def build_whisper_chute(
    username: str,
    model_name: str,
    *,
    served_model_name: str | None = None,
    chunk_length_s: float = 30.0,
    max_file_mb: float = 25.0,
    max_duration_s: float = 4 * 3600.0,
    **settings: Unpack[ChuteSettings],
) -> ChutePack:
    """A speech-to-text chute serving OpenAI's ``POST /v1/audio/transcriptions``.

    ``model_name`` is a Whisper checkpoint (hub name or local path) or any
    model transformers' ``automatic-speech-recognition`` pipeline runs.
    Audio longer than ``chunk_length_s`` (at most 30: Whisper's window) is
    transcribed piece by piece; uploads over ``max_file_mb`` or
    ``max_duration_s`` are refused. ``concurrency`` defaults to 4.
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidValueError("model_name", model_name, "a hub model name or a local path")
    check_number("chunk_length_s", chunk_length_s, low=1, high=30)
    check_number("max_file_mb", max_file_mb, low=0.001, high=4096)
    check_number("max_duration_s", max_duration_s, low=1, high=24 * 3600)
    served = served_model_name or model_name.rstrip("/").rsplit("/", 1)[-1]
    revision = settings.get("revision")
    chute = chute_from_settings(
        "build_whisper_chute",
        username,
        settings,
        template="whisper",
        name=settings.get("name") or chute_name_for(served, default="whisper"),
        tagline=f"{served} speech to text (OpenAI API)",
        concurrency=4,
    )
    names = {served, model_name, "whisper-1"}
    max_bytes = int(max_file_mb * 1024 * 1024)

    @chute.on_startup()
    async def load_model(self: Chute) -> None:
        path = await fetch_model_async(model_name, revision)
        self.asr = await asyncio.to_thread(_load, Path(path))
        self.asr_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")

    @chute.on_shutdown()
    async def stop_worker(self: Chute) -> None:
        worker = getattr(self, "asr_worker", None)
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)

    @chute.cord(public_api_path="/v1/audio/transcriptions", path="/transcriptions")
    async def transcriptions(
        self: Chute,
        request: Request,
        file: UploadFile = File(..., description="The audio: wav, flac, ogg, mp3, m4a, webm..."),
        model: str | None = Form(None, description="The served model's name."),
        language: str | None = Form(None, description="ISO-639-1 code; detected if left out."),
        prompt: str | None = Form(None, description="Accepted for compatibility; not used."),
        response_format: str = Form("json", description=f"One of {', '.join(FORMATS)}."),
        temperature: float = Form(0.0, ge=0.0, le=1.0, description="0: greedy decoding."),
        timestamp_granularities: list[str] | None = Form(
            None,
            alias="timestamp_granularities[]",
            description="`segment` and/or `word` (verbose_json); words need alignment heads.",
        ),
    ) -> Transcription | VerboseTranscription:
        """Transcribe an audio file, as OpenAI's ``POST /v1/audio/transcriptions``."""
        from chutes_audio import media

        if model is not None and model not in names:
            message = f"The model `{model}` does not exist; this chute serves `{served}`."
            return _error(404, message, "model", "model_not_found")
        if response_format not in FORMATS:
            return _error(
                400, f"response_format must be one of {', '.join(FORMATS)}", "response_format"
            )
        asr = self.asr
        granularities = set(timestamp_granularities or ["segment"])
        if not granularities <= {"segment", "word"}:
            return _error(
                400, "timestamp_granularities must be segment or word", "timestamp_granularities"
            )
        words = "word" in granularities and response_format == "verbose_json"
        if words and not asr.words:
            return _error(400, "this model gives no word timestamps", "timestamp_granularities")
        try:
            generate = asr.generate_kwargs(language, temperature)
        except ValueError as exc:
            return _error(400, str(exc), "language")
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return _error(413, f"the file is over {max_file_mb:g} MB", "file")
        rate = asr.sampling_rate
        try:
            samples = await asyncio.to_thread(media.decode, data, rate)
        except media.AudioError as exc:
            return _error(400, str(exc), "file")
        duration = len(samples) / rate
        if duration > max_duration_s:
            return _error(400, f"the audio is over {max_duration_s:g} seconds long", "file")
        pieces = media.pieces(samples, rate, chunk_length_s)
        timestamps: Any = "word" if words else response_format not in ("json", "text")
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        outputs = []
        for number, piece in enumerate(pieces, 1):
            if await request.is_disconnected():
                log.info("transcription stopped: the client went away")
                return Response(status_code=499)
            output = await loop.run_in_executor(
                self.asr_worker, asr.transcribe, piece.samples, timestamps, generate
            )
            outputs.append((piece, output))
            if len(pieces) > 1:
                done = piece.start + len(piece.samples) / rate
                log.info(
                    "transcribed piece %d/%d (%.0f of %.0f s of audio, %.1f s)",
                    number,
                    len(pieces),
                    done,
                    duration,
                    time.monotonic() - started,
                )
        return _render(outputs, response_format, language, duration, rate, words)

    return ChutePack(chute, transcriptions=transcriptions)


class _Pipeline:
    """The speech-recognition pipeline and what the routes need to know of its model."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        config = getattr(pipe.model, "generation_config", None)
        self.whisper = getattr(pipe.model.config, "model_type", "") == "whisper"
        self.multilingual = bool(getattr(config, "is_multilingual", False))
        self.words = getattr(config, "alignment_heads", None) is not None
        self.sampling_rate = int(pipe.feature_extractor.sampling_rate)

    def generate_kwargs(self, language: str | None, temperature: float) -> dict[str, Any]:
        """Whisper's generation options for a request, or ``ValueError`` for a bad language."""
        kwargs: dict[str, Any] = {}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        if not self.whisper:
            return kwargs
        if language is not None:
            from transformers.models.whisper.tokenization_whisper import (
                LANGUAGES,
                TO_LANGUAGE_CODE,
            )

            code = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
            if code not in LANGUAGES:
                raise ValueError(f"unknown language {language!r}: use an ISO-639-1 code")
            if not self.multilingual and code != "en":
                raise ValueError("this model transcribes English only")
            if self.multilingual:
                kwargs["language"] = code
        if self.multilingual:
            kwargs["task"] = "transcribe"
        return kwargs

    def transcribe(self, samples: Any, timestamps: Any, generate: dict[str, Any]) -> Any:
        """One piece, in the worker thread."""
        options: dict[str, Any] = {"generate_kwargs": dict(generate)}
        if timestamps:
            options["return_timestamps"] = timestamps
            if self.whisper and self.multilingual and timestamps is True:
                options["return_language"] = True
        inputs = {"raw": samples, "sampling_rate": self.sampling_rate}
        return self.pipe(inputs, **options)


def _load(path: Path) -> _Pipeline:
    import torch
    from transformers import pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = pipeline("automatic-speech-recognition", model=str(path), device=device, dtype=dtype)
    loaded = _Pipeline(pipe)
    log.info("loaded %s on %s (%d Hz)", path.name, device, loaded.sampling_rate)
    return loaded


def _render(
    outputs: list[tuple[Any, dict[str, Any]]],
    response_format: str,
    language: str | None,
    duration: float,
    rate: int,
    words: bool,
) -> Any:
    text = "".join(output["text"] for _, output in outputs).strip()
    if response_format == "json":
        return JSONResponse({"text": text})
    if response_format == "text":
        return PlainTextResponse(text + "\n")
    segments: list[dict[str, Any]] = []
    word_list: list[dict[str, Any]] = []
    detected = None
    for piece, output in outputs:
        end_of_piece = piece.start + len(piece.samples) / rate
        chunks = output.get("chunks") or [{"timestamp": (None, None), "text": output["text"]}]
        if words:
            for chunk in chunks:
                start, end = _span(chunk, piece.start, end_of_piece)
                word_list.append({"word": chunk["text"].strip(), "start": start, "end": end})
            chunks = [{"timestamp": (0.0, None), "text": output["text"]}]
        for chunk in chunks:
            detected = detected or chunk.get("language")
            start, end = _span(chunk, piece.start, end_of_piece)
            segments.append(
                {
                    "id": len(segments),
                    "seek": round(piece.start * 100),
                    "start": start,
                    "end": end,
                    "text": chunk["text"],
                }
            )
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(_subtitles(segments, response_format), media_type="text/plain")
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    name = LANGUAGES.get((language or "").lower(), language) if language else detected
    body = VerboseTranscription.model_validate(
        {
            "language": name or "unknown",
            "duration": round(duration, 3),
            "text": text,
            "segments": segments,
            "words": word_list if words else None,
        }
    )
    return JSONResponse(body.model_dump(exclude_none=True))


def _span(chunk: dict[str, Any], offset: float, end_of_piece: float) -> tuple[float, float]:
    """A chunk's (start, end) in the whole audio; the model may leave either out."""
    start, end = chunk.get("timestamp") or (None, None)
    begin = offset + (start if start is not None else 0.0)
    finish = offset + end if end is not None else end_of_piece
    return round(begin, 3), round(max(begin, min(finish, end_of_piece)), 3)


def _subtitles(segments: list[dict[str, Any]], kind: str) -> str:
    def clock(seconds: float) -> str:
        millis = round(seconds * 1000)
        hours, millis = divmod(millis, 3_600_000)
        minutes, millis = divmod(millis, 60_000)
        secs, millis = divmod(millis, 1000)
        mark = "," if kind == "srt" else "."
        return f"{hours:02d}:{minutes:02d}:{secs:02d}{mark}{millis:03d}"

    blocks = ["WEBVTT\n"] if kind == "vtt" else []
    for index, segment in enumerate(segments, 1):
        timing = f"{clock(segment['start'])} --> {clock(segment['end'])}"
        lines = [str(index), timing] if kind == "srt" else [timing]
        blocks.append("\n".join([*lines, segment["text"].strip()]) + "\n")
    return "\n".join(blocks)


def _error(status: int, message: str, param: str | None, code: str | None = None) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)
