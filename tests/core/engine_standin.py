"""A stand-in for an OpenAI-compatible engine server (vLLM cannot run in the core suite).

Usage: python engine_standin.py --port P --api-key K [--exit-early] [--ignore-sigterm] [--spawn-child FILE]
"""

import argparse
import contextlib
import signal
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--api-key", required=True)
parser.add_argument("--exit-early", action="store_true")
parser.add_argument("--ignore-sigterm", action="store_true")
parser.add_argument("--spawn-child")
parser.add_argument("--slow-start", type=float, default=0.3)
args = parser.parse_args()

print("standin: loading weights", flush=True)
if args.exit_early:
    print("standin: CUDA out of memory (pretend)", flush=True)
    sys.exit(3)
if args.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.spawn_child:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(args.spawn_child, "w") as f:
        f.write(str(child.pid))
time.sleep(args.slow_start)

import uvicorn  # noqa: E402
from fastapi import FastAPI, Header, HTTPException  # noqa: E402

app = FastAPI()


def check(authorization: str | None) -> None:
    if authorization != f"Bearer {args.api_key}":
        raise HTTPException(401, "bad api key")


@app.get("/v1/models")
def models(authorization: str | None = Header(None)):
    check(authorization)
    return {"object": "list", "data": [{"id": "standin", "object": "model"}]}


@app.post("/v1/completions")
def completions(body: dict, authorization: str | None = Header(None)):
    check(authorization)
    print(f"standin: completion for {body.get('prompt')!r}", flush=True)
    return {"choices": [{"text": "!"}]}


server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
if args.ignore_sigterm:
    # uvicorn would otherwise install its own SIGTERM handler and exit cleanly.
    server.capture_signals = contextlib.nullcontext
server.run()
