"""``build_rerank_chute``: a cross-encoder serving ``/v1/rerank`` and ``/v1/classify``.

A template of its own rather than a ``task=`` option of the embedding one:
it loads another kind of model (a sequence-classification head, not an
encoder plus pooling), so half the embedding template's parameters
(pooling, normalize, dimensions, chunking, the vLLM engine) would mean
nothing, and its routes differ. Both routes run on the same head: rerank
scores (query, document) pairs, classify scores texts alone.

The rerank shape is the one Cohere, Jina, vLLM, TEI and infinity-emb share:
``query``, ``documents``, ``top_n``, ``return_documents`` in; ``results``
of ``index`` and ``relevance_score``, best first, out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
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
from chutes_core.validation import check_int, check_number
from chutes_embeddings.classify import ClassifyRequest, ClassifyResponse
from chutes_embeddings.schema import ModelList


class RerankDocument(BaseModel):
    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(..., description="What the documents are ranked against.")
    documents: list[str | RerankDocument] = Field(
        ..., description="Texts to rank (strings, or objects with a `text`)."
    )
    model: str | None = Field(None, description="The served model's name.")
    top_n: int | None = Field(None, ge=1, description="Return only the best N (all by default).")
    return_documents: bool = Field(False, description="Include each document's text.")


class RerankResult(BaseModel):
    index: int = Field(..., description="The document's position in the request.")
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult] = Field(..., description="Best first.")
    usage: RerankUsage


@documents_settings
def build_rerank_chute(
    username: str,
    model_name: str,
    *,
    served_model_name: str | None = None,
    max_length: int | None = None,
    max_batch_size: int = 32,
    max_batch_wait_ms: float = 5.0,
    max_documents: int = 1024,
    max_inputs: int = 2048,
    **settings: Unpack[ChuteSettings],
) -> ChutePack:
    """A rerank and classification chute for a cross-encoder ``model_name`` (hub name or path).

    ``POST /v1/rerank`` scores documents against a query (single-score
    models: ``relevance_score`` is ``CrossEncoder.predict``'s);
    ``POST /v1/classify`` gives each text's labels with scores. Pairs and
    texts longer than ``max_length`` tokens (default: the model's limit) are
    truncated. Inputs of concurrent requests share batches of up to
    ``max_batch_size``; ``concurrency`` defaults to 32.
    """
    if not isinstance(model_name, str) or not model_name.strip():
        raise InvalidValueError("model_name", model_name, "a hub model name or a local path")
    check_int("max_batch_size", max_batch_size, low=1, high=4096)
    check_number("max_batch_wait_ms", max_batch_wait_ms, low=0, high=10_000)
    check_int("max_documents", max_documents, low=1, high=100_000)
    check_int("max_inputs", max_inputs, low=1, high=100_000)
    if max_length is not None:
        check_int("max_length", max_length, low=1, high=1_000_000)
    served = served_model_name or model_name.rstrip("/").rsplit("/", 1)[-1]
    revision = settings.get("revision")
    chute = chute_from_settings(
        "build_rerank_chute",
        username,
        settings,
        template="rerank",
        name=settings.get("name") or chute_name_for(served, default="rerank"),
        tagline=f"{served} reranking and classification",
        concurrency=32,
    )
    names = {served, model_name}
    created = int(time.time())

    @chute.on_startup()
    async def load_model(self: Chute) -> None:
        from chutes_core.batching import Batcher
        from chutes_embeddings.scorer import Pair, Scorer
        from chutes_embeddings.template import _batch_metrics

        path = await fetch_model_async(model_name, revision)
        self.scorer = await asyncio.to_thread(Scorer.load, Path(path), max_length=max_length)
        sizes, dropped = _batch_metrics()  # the plugin's batch metrics, as for embeddings
        self.batcher = Batcher(
            self.scorer.run,
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=max_batch_wait_ms / 1000.0,
            on_batch=lambda size, waits: sizes.observe(size),
            on_drop=dropped.inc,
            name="rerank",
        )
        self.batcher.start()
        await self.batcher.submit([Pair("warm up", "warm up")])

    @chute.on_shutdown()
    async def stop_batcher(self: Chute) -> None:
        batcher = getattr(self, "batcher", None)
        if batcher is not None:
            await batcher.stop()

    @chute.cord(public_api_path="/v1/rerank", path="/rerank")
    async def rerank(self: Chute, request: Request, body: RerankRequest) -> RerankResponse:
        """Rank ``documents`` by relevance to ``query``, best first (Cohere/Jina/TEI shape)."""
        import numpy as np

        from chutes_embeddings.scorer import Pair

        if body.model is not None and body.model not in names:
            return _model_not_found(body.model, served)
        scorer = self.scorer
        if scorer.num_labels != 1:
            return _error(
                400,
                f"this model has {scorer.num_labels} labels; reranking needs a single-score "
                "model (use /v1/classify)",
                None,
            )
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        if not body.query:
            return _error(400, "query must not be empty", "query")
        if not texts:
            return _error(400, "documents must not be empty", "documents")
        if len(texts) > max_documents:
            return _error(
                400,
                f"documents has {len(texts)} items; at most {max_documents} are allowed",
                "documents",
            )
        scored = await _scored(self, request, [Pair(body.query, text) for text in texts])
        if isinstance(scored, Response):
            return scored
        scores = scorer.relevance(np.stack([s.logits for s in scored]).reshape(-1))
        order = np.argsort(-scores, kind="stable")[: body.top_n]
        results: list[dict[str, Any]] = []
        for i in order:
            result: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
            if body.return_documents:
                result["document"] = {"text": texts[i]}
            results.append(result)
        tokens = sum(s.tokens for s in scored)
        return _json(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": served,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @chute.cord(public_api_path="/v1/classify", path="/classify")
    async def classify(self: Chute, request: Request, body: ClassifyRequest) -> ClassifyResponse:
        """Each text's labels with their scores, best first."""
        from chutes_embeddings import classify as classification
        from chutes_embeddings.scorer import Pair

        if body.model is not None and body.model not in names:
            return _model_not_found(body.model, served)
        try:
            texts = classification.texts_of(body, max_inputs)
        except ValueError as exc:
            return _error(400, str(exc), "input")
        scored = await _scored(self, request, [Pair(text) for text in texts])
        if isinstance(scored, Response):
            return scored
        return _json(classification.response(self.scorer, scored, body, served))

    @chute.cord(public_api_path="/v1/models", method="GET", path="/models")
    async def models(self: Chute) -> ModelList:
        """The model this chute serves."""
        return ModelList.model_validate(
            {"data": [{"id": served, "created": created, "owned_by": username}]}
        )

    return ChutePack(chute, rerank=rerank, classify=classify, models=models)


async def _scored(chute: Chute, request: Request, pairs: list[Any]) -> Any:
    """The scorer's results for ``pairs`` through the batcher, or a 499 if the client left."""
    results = await chute.batcher.submit_while_connected(pairs, request.receive)
    if results is None:  # the client went away; its inputs left the queue
        return Response(status_code=499)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _json(payload: dict[str, Any]) -> Response:
    import orjson

    return Response(orjson.dumps(payload), media_type="application/json")


def _model_not_found(model: str, served: str) -> JSONResponse:
    message = f"The model `{model}` does not exist; this chute serves `{served}`."
    return _error(404, message, "model", "model_not_found")


def _error(status: int, message: str, param: str | None, code: str | None = None) -> JSONResponse:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status)
