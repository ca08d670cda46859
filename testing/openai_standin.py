"""A stand-in for an OpenAI-compatible engine, for routing and passthrough tests.

It answers like vLLM's server does, with canned text instead of a model:
``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``
(plain JSON, or Server-Sent Events ending in ``data: [DONE]`` when the
request sets ``stream``), ``POST /tokenize`` and ``POST /detokenize``. Every
route requires ``Authorization: Bearer <api key>``. Use it to test a
template's cords where the real engine cannot run; test against the real
engine wherever it can::

    python -m chutes_testing.openai_standin --port 10101 --api-key K --model M

Each finished or abandoned stream is printed (``standin: stream done`` or
``standin: stream aborted after N chunks``), so tests can see disconnects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse

WORDS = ["stand", "-in", " reply"]


def make_app(api_key: str, model: str, chunk_delay: float = 0.0) -> FastAPI:
    app = FastAPI()

    def authorise(authorization: str | None) -> None:
        if authorization != f"Bearer {api_key}":
            raise HTTPException(401, "invalid api key")

    @app.get("/v1/models")
    def models(authorization: str | None = Header(None)) -> dict[str, Any]:
        authorise(authorization)
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "standin"}]}

    async def answer(request: Request, authorization: str | None, chat: bool) -> Any:
        authorise(authorization)
        body = await request.json()
        if body.get("model") != model:
            raise HTTPException(404, f"model {body.get('model')!r} does not exist")
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        base = {"id": ident, "created": int(time.time()), "model": model}
        if body.get("stream"):
            return StreamingResponse(
                _events(base, chat, chunk_delay), media_type="text/event-stream"
            )
        text = "".join(WORDS)
        usage = {"prompt_tokens": 1, "completion_tokens": len(WORDS), "total_tokens": 4}
        if chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return {**base, "object": "text_completion", "choices": [choice], "usage": usage}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, authorization: str | None = Header(None)) -> Any:
        return await answer(request, authorization, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request, authorization: str | None = Header(None)) -> Any:
        return await answer(request, authorization, chat=False)

    @app.post("/tokenize")
    async def tokenize(request: Request, authorization: str | None = Header(None)) -> Any:
        authorise(authorization)
        prompt = str((await request.json()).get("prompt", ""))
        tokens = [ord(c) for c in prompt]
        return {"tokens": tokens, "count": len(tokens), "max_model_len": 256}

    @app.post("/detokenize")
    async def detokenize(request: Request, authorization: str | None = Header(None)) -> Any:
        authorise(authorization)
        tokens = (await request.json()).get("tokens", [])
        return {"prompt": "".join(chr(t) for t in tokens)}

    return app


async def _events(base: dict[str, Any], chat: bool, delay: float) -> AsyncIterator[bytes]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    sent = 0
    try:
        for word in WORDS:
            if chat:
                choice = {"index": 0, "delta": {"content": word}, "finish_reason": None}
            else:
                choice = {"index": 0, "text": word, "finish_reason": None, "logprobs": None}
            chunk = {**base, "object": kind, "choices": [choice]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            sent += 1
            await asyncio.sleep(delay)
        yield b"data: [DONE]\n\n"
        print("standin: stream done", flush=True)
    except BaseException:
        print(f"standin: stream aborted after {sent} chunks", flush=True)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--model", default="standin")
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"standin: ignoring engine flags {unknown}", flush=True)
    import uvicorn

    app = make_app(args.api_key, args.model, args.chunk_delay)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
