"""An OpenAI-style upstream server for passthrough tests (it stands in for an engine).

Usage: python upstream.py PORT MARKS_DIR
"""

import asyncio
import json
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

port, marks = int(sys.argv[1]), Path(sys.argv[2])
app = FastAPI()


@app.get("/v1/models")
async def models(request: Request):
    return {"object": "list", "data": [{"id": "upstream", "object": "model"}]}


@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    seen = {"authorization": request.headers.get("authorization"), "body": body}
    if not body.get("stream"):
        return {"seen": seen, "choices": [{"message": {"role": "assistant", "content": "hi"}}]}

    async def events():
        released = None
        try:
            for i in range(body.get("chunks", 5)):
                yield f"data: {json.dumps({'i': i, 'released': released})}\n\n"
                if i == 0 and body.get("hold"):
                    # Go on only once the client has seen this first chunk (it says so
                    # with a mark), or after 10 s: the later chunks tell which it was.
                    released = await appears(marks / f"release-{body['hold']}", 10)
                await asyncio.sleep(body.get("delay", 0.05))
            yield "data: [DONE]\n\n"
            (marks / "completed").write_text("yes")
        except asyncio.CancelledError:
            (marks / "cancelled").write_text(str(body.get("tag")))
            raise

    return StreamingResponse(events(), media_type="text/event-stream")


async def appears(path: Path, timeout: float) -> bool:
    for _ in range(int(timeout / 0.02)):
        if path.exists():
            return True
        await asyncio.sleep(0.02)
    return False


@app.post("/v1/slow")
async def slow(request: Request):
    """Answer (headers and all) only after ``wait`` seconds; note a client that left first."""
    body = await request.json()
    (marks / f"arrived-{body.get('tag')}").write_text("yes")
    for _ in range(int(body.get("wait", 5) / 0.02)):
        if body.get("hold") and (marks / f"release-{body.get('tag')}").exists():
            break  # released early by the test
        if await request.is_disconnected():
            (marks / f"gone-{body.get('tag')}").write_text("yes")
            return JSONResponse({"late": True})
        await asyncio.sleep(0.02)
    return {"slow": body.get("tag")}


@app.api_route("/v1/echo", methods=["GET", "POST"])
async def echo(request: Request):
    """What arrived, as the engine saw it; answered with headers a proxy must not repeat."""
    body = await request.body()
    seen = {
        "method": request.method,
        "query": request.url.query,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": len(body),
    }
    answer = JSONResponse(seen, headers={"x-engine": "upstream", "server": "engine/1"})
    answer.set_cookie("a", "1")
    answer.set_cookie("b", "2")
    return answer


@app.get("/v1/gzip")
async def gzipped():
    """A body the engine compressed itself: relayed as it is, never decompressed."""
    import gzip

    body = gzip.compress(json.dumps({"compressed": True}).encode())
    return Response(body, media_type="application/json", headers={"content-encoding": "gzip"})


@app.post("/v1/fail")
async def fail(request: Request):
    return JSONResponse(
        {"error": {"message": "teapots cannot chat", "type": "invalid_request"}}, 418
    )


@app.post("/v1/upload")
async def upload(request: Request):
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return {"received": total}


@app.get("/v1/big")
async def big():
    return StreamingResponse(
        (b"x" * 65536 for _ in range(32)), media_type="application/octet-stream"
    )


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
