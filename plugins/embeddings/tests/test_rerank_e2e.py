"""The rerank template under a real `chutes run` (its own module: the in-process hosts of
test_rerank.py have stopped, so their egress lock is not this process's any more)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from test_rerank import DOCUMENTS, QUERY, predict

import chutes_testing as testing


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory, minilm) -> Path:
    from tiny_cross_encoder import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("reranker"), minilm)


def test_serves_under_chutes_run(tmp_path, tiny_reranker) -> None:
    ref = testing.write_template_app(
        tmp_path, "rerank", username="me", model_name=str(tiny_reranker), served_model_name="tiny"
    )
    with testing.run_chute(
        ref, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"}, ready_timeout=120
    ) as running:
        answer = httpx.post(
            f"{running.url}/v1/rerank",
            json={"query": QUERY, "documents": DOCUMENTS, "top_n": 1},
            trust_env=False,
            timeout=30,
        )
        assert answer.status_code == 200, running.tail()
        expected = predict(tiny_reranker, [[QUERY, d] for d in DOCUMENTS])
        (best,) = answer.json()["results"]
        assert best["index"] == int(np.argmax(expected))
        assert abs(best["relevance_score"] - float(expected.max())) < 1e-5
        metrics = httpx.get(f"{running.url}/_chutes/metrics", trust_env=False, timeout=10)
        assert metrics.status_code == 200
        assert "chutes_embeddings_batch_size" in metrics.text
