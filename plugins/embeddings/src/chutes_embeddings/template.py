"""``build_embedding_chute``: OpenAI ``/v1/embeddings`` for any encoder model."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from typing_extensions import Unpack

from chutes_core import Chute, ChutePack, progress
from chutes_core.batching import Batcher
from chutes_core.engines.hub import fetch_model_async
from chutes_core.engines.model import chute_name_for
from chutes_core.engines.settings import ChuteSettings, chute_from_settings, documents_settings
from chutes_core.errors import InvalidValueError
from chutes_core.validation import check_bool, check_int, check_number
from chutes_embeddings import pooling as poolings
from chutes_embeddings.schema import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    HostError,
    ModelList,
)

ENGINES = ("sentence-transformers", "transformers", "vllm")
VLLM_PORT = 10101


@documents_settings
def build_embedding_chute(
    username: str,
    model_name: str,
    *,
    served_model_name: str | None = None,
    pooling_type: str = "auto",
    normalize: bool = True,
    max_embed_len: int | None = None,
    enable_chunked_processing: bool = False,
    max_batch_size: int = 32,
    max_batch_wait_ms: float = 5.0,
    max_inputs: int = 2048,
    engine: str = "sentence-transformers",
    engine_args: dict[str, Any] | str | None = None,
    **settings: Unpack[ChuteSettings],
) -> ChutePack:
    """An OpenAI-compatible embeddings chute for ``model_name`` (a hub name or a local path).

    ``engine`` runs the model in the chute's process (``sentence-transformers``
    or ``transformers``) or in vLLM's pooling server (``vllm``). Inputs longer
    than ``max_embed_len`` tokens (default: the model's limit) are refused,
    unless the request sets ``truncate`` or ``enable_chunked_processing`` is
    on, in which case they are embedded in chunks and averaged. ``engine_args``
    are vLLM flags (``engine="vllm"`` only); ``concurrency`` defaults to 32.
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidValueError("model_name", model_name, "a hub model name or a local path")
    if engine not in ENGINES:
        raise InvalidValueError("engine", engine, f"one of {', '.join(ENGINES)}")
    pooling_type = poolings.check_pooling(pooling_type)
    check_bool("normalize", normalize)
    check_bool("enable_chunked_processing", enable_chunked_processing)
    check_int("max_batch_size", max_batch_size, low=1, high=4096)
    check_number("max_batch_wait_ms", max_batch_wait_ms, low=0, high=10_000)
    check_int("max_inputs", max_inputs, low=1, high=100_000)
    if max_embed_len is not None:
        check_int("max_embed_len", max_embed_len, low=1, high=1_000_000)
    if engine != "vllm" and engine_args is not None:
        raise InvalidValueError("engine_args", engine_args, "only used with engine='vllm'")
    served = served_model_name or model_name.rstrip("/").rsplit("/", 1)[-1]
    revision = settings.get("revision")
    vllm = None
    if engine == "vllm":
        from chutes_embeddings.vllm_engine import VLLMPoolingEngine

        # In the order of its fields: how vLLM pools, then its port.
        vllm = VLLMPoolingEngine(
            pooling_type, normalize, max_embed_len, enable_chunked_processing, VLLM_PORT
        )
        # Checked now, so that a bad flag fails where the chute is defined.
        flags = vllm.check_engine_args(engine_args, where="build_embedding_chute")
    chute = chute_from_settings(
        "build_embedding_chute",
        username,
        settings,
        template="embedding",
        name=settings.get("name") or chute_name_for(served, default="embeddings"),
        tagline=f"{served} embeddings (OpenAI API)",
        concurrency=32,
    )
    chute.state.embedding_engine = engine  # the image the plugin builds depends on it
    names = {served, model_name}
    created = int(time.time())

    if vllm is not None:
        return vllm.serve(
            chute, model_name, revision=revision, flags=flags, served_model_name=served
        )

    @chute.on_startup()
    async def load_model(self: Chute) -> None:
        from chutes_embeddings.model import EmbeddingModel, Input

        path = await fetch_model_async(model_name, revision)
        pooling, why = poolings.choose(pooling_type, model_name, Path(path))
        self.logger.info("pooling: %s (%s)", pooling, why)
        with progress.phase(progress.LOAD, detail=f"{engine}, {pooling} pooling"):
            self.embedder = await asyncio.to_thread(
                EmbeddingModel.load,
                Path(path),
                engine=engine,
                pooling=pooling,
                normalize=normalize,
                max_length=max_embed_len,
            )
        sizes, dropped = _batch_metrics()
        # Batches sorted by length cut padding; the host's batcher, with the plugin's metrics.
        self.batcher = Batcher(
            self.embedder.run,
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=max_batch_wait_ms / 1000.0,
            sort_key=len,
            on_batch=lambda size, waits: sizes.observe(size),
            on_drop=dropped.inc,
            name="embeddings",
        )
        self.batcher.start()
        # Warm up: the first forward pass allocates what later ones reuse.
        with progress.phase(progress.WARMUP):
            await self.batcher.submit([Input(text="warm up")])

    @chute.on_shutdown()
    async def stop_batcher(self: Chute) -> None:
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            await batcher.stop()

    @chute.cord(
        public_api_path="/v1/embeddings",
        path="/embeddings",
        responses={
            400: {
                "model": ErrorResponse | HostError,
                "description": "The input cannot be embedded as sent",
            },
            404: {"model": ErrorResponse, "description": "The model is not the one served"},
        },
    )
    async def embeddings(
        self: Chute, request: Request, body: EmbeddingRequest
    ) -> EmbeddingResponse:
        """Embed text or token ids, as OpenAI's ``POST /v1/embeddings``."""
        from chutes_embeddings.model import Embedded, TooLong

        if body.model is not None and body.model not in names:
            message = f"The model `{body.model}` does not exist; this chute serves `{served}`."
            return _error(404, message, "model", "model_not_found")
        model = self.embedder
        try:
            if body.dimensions is not None and body.dimensions > model.dimension:
                raise _Invalid(
                    f"dimensions must be at most {model.dimension} for this model", "dimensions"
                )
            inputs, owners = await _inputs(
                model, body, max_inputs, chunked=enable_chunked_processing
            )
        except _Invalid as exc:
            return _error(400, exc.message, exc.param)
        results = await self.batcher.submit_while_connected(inputs, request.receive)
        if results is None:  # the client went away; its inputs left the queue
            return Response(status_code=499)
        for index, result in enumerate(results):
            if isinstance(result, TooLong):
                return _error(
                    400,
                    f"input[{owners[index]}] has {result.tokens} tokens; this model takes at most "
                    f"{result.limit} (set truncate=true to cut it)",
                    "input",
                )
            if not isinstance(result, Embedded):
                raise result
        embedded = [r for r in results if isinstance(r, Embedded)]
        vectors = _combine(embedded, owners, normalize)
        if body.dimensions is not None:
            vectors = vectors[:, : body.dimensions]
            if normalize:
                vectors = vectors / np_norm(vectors)
        # What was embedded: the tokens truncation cut off are not counted.
        tokens = sum(min(r.tokens, model.max_length) for r in embedded)
        payload = _response(vectors, body.encoding_format, served, tokens)
        return Response(payload, media_type="application/json")

    @chute.cord(public_api_path="/v1/models", method="GET", path="/models")
    async def models(self: Chute) -> ModelList:
        """The model this chute serves."""
        return ModelList.model_validate(
            {"data": [{"id": served, "created": created, "owned_by": username}]}
        )

    return ChutePack(chute, embeddings=embeddings, models=models)


_metrics: tuple[Any, Any] | None = None


def _batch_metrics() -> tuple[Any, Any]:
    """Batch-size histogram and dropped-input counter, in prometheus' default registry."""
    global _metrics
    if _metrics is None:
        from prometheus_client import Counter, Histogram

        _metrics = (
            Histogram(
                "chutes_embeddings_batch_size",
                "Inputs per forward pass.",
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            ),
            Counter(
                "chutes_embeddings_dropped_inputs",
                "Inputs dropped because their client went away before their batch started.",
            ),
        )
    return _metrics


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = "input") -> None:
        self.message = message
        self.param = param


def _error(status: int, message: str, param: str | None, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        },
        status_code=status,
    )


async def _inputs(
    model: Any, body: EmbeddingRequest, max_inputs: int, *, chunked: bool
) -> tuple[list[Any], list[int]]:
    """What to embed, and which request input each piece belongs to.

    Texts are tokenized in the batch, off the event loop; with chunked
    processing they are tokenized here, so that long ones can be cut into
    chunks of the model's length (averaged back into one vector later).
    """
    from chutes_embeddings.model import Input

    raw = body.input
    if isinstance(raw, str):
        raw = [raw]
    if not raw:
        raise _Invalid("input must not be empty")
    if isinstance(raw[0], int):
        raw = [raw]  # one sequence of token ids: one input, however long (truncate may cut it)
    if len(raw) > max_inputs:
        raise _Invalid(f"input has {len(raw)} items; at most {max_inputs} are allowed per request")
    sequences: list[list[int]] = []
    if all(isinstance(item, str) for item in raw):
        empty = [i for i, text in enumerate(raw) if not text]
        if empty:
            raise _Invalid(f"input[{empty[0]}] is an empty string")
        if not chunked:
            return [Input(text=text, truncate=body.truncate) for text in raw], list(range(len(raw)))
        sequences = await asyncio.to_thread(model.tokenize, list(raw))
    else:
        for i, ids in enumerate(raw):
            if not isinstance(ids, list) or not ids:
                raise _Invalid(f"input[{i}] must be a non-empty list of token ids")
            bad = [t for t in ids if not 0 <= t < model.vocab_size]
            if bad:
                raise _Invalid(
                    f"input[{i}] has token id {bad[0]}, outside this model's vocabulary of {model.vocab_size}"
                )
            sequences.append(ids)
    inputs, owners = [], []
    limit = model.max_length
    for i, ids in enumerate(sequences):
        pieces = (
            [ids[start : start + limit] for start in range(0, len(ids), limit)]
            if chunked
            else [ids]
        )
        inputs += [Input(ids=piece, truncate=body.truncate) for piece in pieces]
        owners += [i] * len(pieces)
    return inputs, owners


def _combine(embedded: list[Any], owners: list[int], normalize: bool) -> Any:
    """One vector per request input: chunks are averaged, weighted by their length."""
    import numpy as np

    vectors = np.stack([piece.vector for piece in embedded])
    if len(owners) == len(set(owners)):
        return vectors
    rows = []
    for owner in sorted(set(owners)):
        picked = [i for i, o in enumerate(owners) if o == owner]
        weights = np.array([embedded[i].tokens for i in picked], dtype=np.float32)
        rows.append((vectors[picked] * weights[:, None]).sum(axis=0) / weights.sum())
    combined = np.stack(rows)
    return combined / np_norm(combined) if normalize else combined


def np_norm(vectors: Any) -> Any:
    import numpy as np

    return np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _response(vectors: Any, encoding: str, model: str, tokens: int) -> bytes:
    """The response body; float32 vectors serialised by orjson, without a Python float pass."""
    import orjson

    if encoding == "base64":
        encoded: list[Any] = [
            base64.b64encode(row.astype("<f4").tobytes()).decode() for row in vectors
        ]
    else:
        encoded = list(vectors.astype("float32", copy=False))
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
