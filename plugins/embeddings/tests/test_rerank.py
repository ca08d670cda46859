"""The rerank template: /v1/rerank and /v1/classify in process, and under `chutes run`.

Two tiny random cross-encoders built on the spot (no download): one single-score
(a reranker) and one with three labels (a classifier). Scores must equal
``CrossEncoder.predict`` on the same model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from chutes_embeddings.rerank import build_rerank_chute

import chutes_testing as testing
from chutes_core.errors import InvalidValueError
from chutes_core.plugins import get_plugin_manager

QUERY = "Who plays the guitar?"
DOCUMENTS = [
    "A man is playing a guitar.",
    "The stock market fell sharply today.",
    "short",
    "A considerably longer sentence, with several clauses, that pads the others in its batch.",
    "Someone is strumming a guitar on the street.",
]


@pytest.fixture(scope="module")
def tiny_reranker(tmp_path_factory, minilm) -> Path:
    from tiny_cross_encoder import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("reranker"), minilm)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory, minilm) -> Path:
    from tiny_cross_encoder import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("classifier"), minilm, num_labels=3)


def predict(path: Path, pairs: list[Any]) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return np.asarray(CrossEncoder(str(path), device="cpu").predict(pairs, convert_to_numpy=True))


def logits_of(path: Path, texts: list[str]) -> np.ndarray:
    """The head's logits for single texts, as transformers computes them."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.inference_mode():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reranker(tiny_reranker) -> AsyncIterator[testing.ChuteClient]:
    chute = build_rerank_chute(
        username="me", model_name=str(tiny_reranker), served_model_name="tiny", max_documents=8
    )
    async with testing.ChuteClient(chute) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def classifier(tiny_classifier) -> AsyncIterator[testing.ChuteClient]:
    chute = build_rerank_chute(username="me", model_name=str(tiny_classifier), max_inputs=4)
    async with testing.ChuteClient(chute) as client:
        yield client


pytestmark_async = pytest.mark.asyncio(loop_scope="module")


@pytestmark_async
async def test_rerank_scores_equal_cross_encoder_predict(reranker, tiny_reranker) -> None:
    answer = await reranker.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = predict(tiny_reranker, [[QUERY, d] for d in DOCUMENTS])
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert sorted(got) == [0, 1, 2, 3, 4]
    assert np.abs(np.array([got[i] for i in range(5)]) - expected).max() < 1e-5
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)  # best first
    assert all("document" not in r for r in body["results"])
    assert body["model"] == "tiny" and body["id"].startswith("rerank-")
    assert body["usage"]["total_tokens"] > len(DOCUMENTS) * 3


@pytestmark_async
async def test_top_n_and_return_documents(reranker, tiny_reranker) -> None:
    documents = [DOCUMENTS[0], {"text": DOCUMENTS[1]}, DOCUMENTS[4]]
    answer = await reranker.post(
        "/v1/rerank",
        json={"query": QUERY, "documents": documents, "top_n": 2, "return_documents": True},
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    expected = predict(tiny_reranker, [[QUERY, DOCUMENTS[i]] for i in (0, 1, 4)])
    best = list(np.argsort(-expected, kind="stable")[:2])
    assert [r["index"] for r in results] == best
    texts = [DOCUMENTS[0], DOCUMENTS[1], DOCUMENTS[4]]
    assert [r["document"]["text"] for r in results] == [texts[i] for i in best]


@pytestmark_async
async def test_long_documents_are_truncated_to_the_model(reranker, tiny_reranker) -> None:
    long = " ".join(["guitar music and more words"] * 60)  # about 300 tokens; the model takes 128
    answer = await reranker.post("/v1/rerank", json={"query": QUERY, "documents": [long, "a"]})
    assert answer.status_code == 200, answer.text
    from sentence_transformers import CrossEncoder

    expected = CrossEncoder(str(tiny_reranker), device="cpu", max_length=128).predict(
        [[QUERY, long], [QUERY, "a"]]
    )
    got = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
    assert abs(got[0] - float(expected[0])) < 1e-5 and abs(got[1] - float(expected[1])) < 1e-5
    assert answer.json()["usage"]["total_tokens"] <= 128 + 20


@pytestmark_async
async def test_concurrent_requests_share_batches_and_match(reranker, tiny_reranker) -> None:
    stats = reranker.host.chute.batcher.stats
    batches, inputs = stats.batches, stats.inputs
    answers = await asyncio.gather(
        *[reranker.post("/v1/rerank", json={"query": QUERY, "documents": [d]}) for d in DOCUMENTS]
    )
    expected = predict(tiny_reranker, [[QUERY, d] for d in DOCUMENTS])
    got = [a.json()["results"][0]["relevance_score"] for a in answers]
    assert np.abs(np.array(got) - expected).max() < 1e-5
    assert stats.inputs - inputs == len(DOCUMENTS)
    assert stats.batches - batches < len(DOCUMENTS)  # some requests shared a forward pass


@pytestmark_async
@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"query": "", "documents": ["a"]}, 400, "query"),
        ({"query": "q", "documents": []}, 400, "documents"),
        ({"query": "q", "documents": ["a"] * 9}, 400, "documents"),
        ({"query": "q", "documents": ["a"], "model": "other"}, 404, "model"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 422, None),
        ({"documents": ["a"]}, 422, None),
    ],
)
async def test_bad_rerank_requests(reranker, body, status, param) -> None:
    answer = await reranker.post("/v1/rerank", json=body)
    assert answer.status_code == status, answer.text
    if param is not None:
        assert answer.json()["error"]["param"] == param


@pytestmark_async
async def test_classify_gives_softmax_labels_best_first(classifier, tiny_classifier) -> None:
    texts = DOCUMENTS[:3]
    answer = await classifier.post("/v1/classify", json={"input": texts})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    logits = logits_of(tiny_classifier, texts)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for index, item in enumerate(body["data"]):
        assert item["index"] == index
        scores = {label["label"]: label["score"] for label in item["labels"]}
        assert sorted(scores) == ["class_0", "class_1", "class_2"]
        got = np.array([scores[f"class_{j}"] for j in range(3)])
        assert np.abs(got - probabilities[index]).max() < 1e-5
        assert item["label"] == f"class_{int(np.argmax(probabilities[index]))}"
        assert [x["score"] for x in item["labels"]] == sorted(got.tolist(), reverse=True)
    raw = await classifier.post(
        "/v1/classify", json={"input": texts[0], "raw_scores": True, "top_k": 1}
    )
    (item,) = raw.json()["data"]
    assert len(item["labels"]) == 1 and abs(item["score"] - float(logits[0].max())) < 1e-5


@pytestmark_async
async def test_classify_limits_and_rerank_on_a_classifier(classifier) -> None:
    too_many = await classifier.post("/v1/classify", json={"input": ["a"] * 5})
    assert too_many.status_code == 400 and "at most 4" in too_many.json()["error"]["message"]
    empty = await classifier.post("/v1/classify", json={"input": ["a", ""]})
    assert empty.status_code == 400 and "input[1]" in empty.json()["error"]["message"]
    rerank = await classifier.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert rerank.status_code == 400 and "3 labels" in rerank.json()["error"]["message"]


@pytestmark_async
async def test_classify_on_a_reranker_uses_its_sigmoid(reranker, tiny_reranker) -> None:
    answer = await reranker.post("/v1/classify", json={"input": "A man is playing a guitar."})
    (item,) = answer.json()["data"]
    (logit,) = logits_of(tiny_reranker, ["A man is playing a guitar."])[0]
    expected = 1 / (1 + np.exp(-logit))  # one label: sigmoid, as CrossEncoder and pipelines do
    assert item["label"] == "LABEL_0" and abs(item["score"] - float(expected)) < 1e-5


@pytestmark_async
async def test_openapi_documents_the_routes(reranker) -> None:
    schema = (await reranker.get("/openapi.json")).json()
    rerank = schema["paths"]["/v1/rerank"]["post"]
    assert "requestBody" in rerank
    names = set(schema["components"]["schemas"])
    assert {"RerankRequest", "RerankResponse", "ClassifyRequest", "ClassifyResponse"} <= names


def test_template_conformance_egress_and_image(tiny_reranker) -> None:
    chute = testing.check_template("rerank", username="me", model_name=str(tiny_reranker))
    assert [(c.method, c.public_api_path) for c in chute.cords] == [
        ("POST", "/v1/rerank"),
        ("POST", "/v1/classify"),
        ("GET", "/v1/models"),
    ]
    from chutes.chute.template.rerank import build_rerank_chute as documented

    manager = get_plugin_manager()
    built = documented(username="me", model_name="BAAI/bge-reranker-base")
    assert manager.egress_policy(built) is False
    assert manager.egress_source(built) == "embeddings"
    image = str(manager.build_image(built)).split()
    assert "sentence-transformers==6.2.0" in image and "chutes-embeddings==0.1.0" in image
    assert manager.build_image(documented("me", "x/y", image="org/prebuilt:1")) == "org/prebuilt:1"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"model_name": ""}, "model_name"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_documents": 0}, "max_documents"),
        ({"max_length": 0}, "max_length"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field) -> None:
    with pytest.raises(InvalidValueError, match=field):
        build_rerank_chute(**{"username": "me", "model_name": "x/y", **kwargs})
