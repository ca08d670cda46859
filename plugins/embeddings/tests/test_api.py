"""The embeddings API in process, through the host (``chutes_testing.ChuteClient``).

Two chutes on the bundled MiniLM: one with the defaults (a local path), and
one given a hub name, whose download is answered by a stand-in for
``huggingface_hub.snapshot_download`` (no network), running the
``transformers`` engine without normalisation and with chunked processing.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from chutes_embeddings.template import build_embedding_chute

from chutes_testing import ChuteClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXTS = [
    "A considerably longer sentence, with several clauses, that pads the others in its batch.",
    "short",
    "A man is playing a guitar.",
    "medium length text here",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(minilm) -> AsyncIterator[ChuteClient]:
    chute = build_embedding_chute(
        username="me", model_name=str(minilm), served_model_name="minilm", max_inputs=8
    )
    async with ChuteClient(chute) as client:
        yield client


class HubStandIn:
    """Answers ``snapshot_download`` with the bundled model's directory, recording each call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, repo_id: str, *, revision: str | None = None, **_: Any) -> str:
        self.calls.append((repo_id, revision))
        return self.path


@pytest.fixture(scope="module")
def hub(minilm) -> HubStandIn:
    return HubStandIn(str(minilm))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def raw(hub) -> AsyncIterator[ChuteClient]:
    import huggingface_hub

    chute = build_embedding_chute(
        username="me",
        model_name="sentence-transformers/all-MiniLM-L6-v2",
        revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
        engine="transformers",
        normalize=False,
        enable_chunked_processing=True,
        max_embed_len=32,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub, "snapshot_download", hub)
        async with ChuteClient(chute) as client:
            yield client


async def embed(client: ChuteClient, **body: Any) -> dict[str, Any]:
    answer = await client.post("/v1/embeddings", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def vectors(answer: dict[str, Any]) -> np.ndarray:
    return np.array([item["embedding"] for item in answer["data"]], dtype=np.float32)


# The default chute -------------------------------------------------------------


async def test_models_lists_the_served_name(api) -> None:
    listed = (await api.get("/v1/models")).json()
    assert [(m["id"], m["object"], m["owned_by"]) for m in listed["data"]] == [
        ("minilm", "model", "me")
    ]


async def test_a_batch_of_mixed_lengths_comes_back_in_request_order(api, reference) -> None:
    answer = await embed(api, input=TEXTS, model="minilm")
    assert [item["index"] for item in answer["data"]] == [0, 1, 2, 3]
    assert np.abs(vectors(answer) - reference.encode(TEXTS)).max() < 1e-5
    tokens = sum(len(ids) for ids in reference.tokenizer(TEXTS)["input_ids"])
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert answer["object"] == "list" and answer["model"] == "minilm"


async def test_model_may_be_omitted_or_given_as_the_path(api, minilm) -> None:
    omitted = await embed(api, input="hello")
    by_path = await embed(api, input="hello", model=str(minilm))
    assert np.array_equal(vectors(omitted), vectors(by_path))


async def test_base64_is_little_endian_float32_of_the_same_vector(api) -> None:
    floats = vectors(await embed(api, input=["hello", "world"]))
    encoded = await embed(api, input=["hello", "world"], encoding_format="base64")
    decoded = np.stack(
        [
            np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
            for item in encoded["data"]
        ]
    )
    assert np.array_equal(decoded, floats)


async def test_dimensions_keep_the_first_n_renormalised(api) -> None:
    full = vectors(await embed(api, input="hello"))[0]
    short = vectors(await embed(api, input="hello", dimensions=32))[0]
    assert short.shape == (32,)
    assert np.allclose(short, full[:32] / np.linalg.norm(full[:32]), atol=1e-6)


async def test_token_ids_and_lists_of_them(api, reference) -> None:
    ids = reference.tokenizer(["A man is playing a guitar.", "short"])["input_ids"]
    by_text = vectors(await embed(api, input=["A man is playing a guitar.", "short"]))
    assert np.allclose(vectors(await embed(api, input=ids)), by_text, atol=1e-6)
    one = await embed(api, input=ids[1])  # a single list of ids is one input
    assert len(one["data"]) == 1 and np.allclose(vectors(one)[0], by_text[1], atol=1e-6)
    assert one["usage"]["prompt_tokens"] == len(ids[1])


async def test_over_long_input_is_cut_when_truncation_is_asked_for(api, reference) -> None:
    text = "word " * 400
    answer = await embed(api, input=[text, "short"], truncate=True)
    assert answer["usage"]["prompt_tokens"] == 256 + 3  # what was embedded: the cut is not counted
    # Cut as sentence-transformers cuts: to 256 tokens, the special ones kept.
    assert np.abs(vectors(answer) - reference.encode([text, "short"])).max() < 1e-5
    # Token ids are cut as given.
    ids = reference.tokenizer(text)["input_ids"]
    by_ids = await embed(api, input=[ids], truncate=True)
    assert np.allclose(vectors(by_ids), vectors(await embed(api, input=[ids[:256]])), atol=1e-6)


async def test_a_flat_token_list_is_one_input_however_long(api, reference) -> None:
    ids = reference.tokenizer("word " * 3000)["input_ids"]  # over 2048 and over max_inputs
    assert len(ids) > 2048
    answer = await embed(api, input=ids, truncate=True)
    assert len(answer["data"]) == 1
    assert answer["usage"]["prompt_tokens"] == 256
    refused = await api.post("/v1/embeddings", json={"input": ids})
    assert refused.status_code == 400
    assert "set truncate=true" in refused.text


@pytest.mark.parametrize(
    "body",
    [b'{"input": "x", "dimensions": NaN}', b'{"input": NaN}', b'{"input": "\\ud800"}'],
)
async def test_unanswerable_json_is_a_400(api, body) -> None:
    answer = await api.post(
        "/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"input": ""}, 400, "input[0] is an empty string"),
        ({"input": ["fine", ""]}, 400, "input[1] is an empty string"),
        ({"input": []}, 400, "input must not be empty"),
        ({"input": [[]]}, 400, "input[0] must be a non-empty list of token ids"),
        ({"input": ["ok"] * 9}, 400, "input has 9 items; at most 8 are allowed"),
        (
            {"input": ["ok", "word " * 400]},
            400,
            "input[1] has 402 tokens; this model takes at most",
        ),
        ({"input": [[101, 99999999]]}, 400, "token id 99999999, outside this model's vocabulary"),
        ({"input": [[101, -1]]}, 400, "token id -1"),
        ({"input": "x", "dimensions": 385}, 400, "dimensions must be at most 384"),
        ({"input": "x", "dimensions": 0}, 422, "dimensions"),
        ({"input": "x", "model": "gpt-4"}, 404, "The model `gpt-4` does not exist"),
        ({"input": "x", "encoding_format": "hex"}, 422, "'float' or 'base64'"),
        ({"input": 42}, 422, "input"),
        ({"input": ["text", 7]}, 422, "input"),
        ({"model": "minilm"}, 422, "input"),
        ({"input": [True, False]}, 422, "input"),
        ({"input": [[101, True]]}, 422, "input"),
    ],
)
async def test_bad_requests_say_what_was_wrong(api, body, status, message) -> None:
    answer = await api.post("/v1/embeddings", json=body)
    assert answer.status_code == status, answer.text
    assert message in answer.text
    if status != 422:  # ours: OpenAI's error shape; 422 is the runtime's validation detail
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] in ("input", "model", "dimensions")


async def test_the_wrong_model_is_a_404_naming_the_served_one(api) -> None:
    error = (await api.post("/v1/embeddings", json={"input": "x", "model": "gpt-4"})).json()
    assert error["error"]["code"] == "model_not_found"
    assert "this chute serves `minilm`" in error["error"]["message"]


# Hub name, transformers engine, no normalisation, chunked processing ------------


async def test_a_hub_name_is_fetched_at_its_revision_and_served_by_its_short_name(raw, hub) -> None:
    assert hub.calls == [
        ("sentence-transformers/all-MiniLM-L6-v2", "c9745ed1d9f207416be6d2e6f8de32d1f16199bf")
    ]
    listed = (await raw.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == ["all-MiniLM-L6-v2"]


async def test_the_transformers_engine_gives_the_same_vectors_unnormalised(raw, reference) -> None:
    texts = TEXTS[1:]  # under the 32-token limit of this chute
    got = vectors(await embed(raw, input=texts))
    norms = np.linalg.norm(got, axis=1, keepdims=True)
    assert np.all(np.abs(norms - 1) > 0.01)
    assert np.abs(got / norms - reference.encode(texts)).max() < 1e-5


async def test_dimensions_without_normalisation_only_truncate(raw) -> None:
    full = vectors(await embed(raw, input="hello"))[0]
    short = vectors(await embed(raw, input="hello", dimensions=16))[0]
    assert np.array_equal(short, full[:16])


async def test_long_inputs_are_embedded_in_chunks_and_averaged_by_length(raw, reference) -> None:
    text = " ".join(f"word{i}" for i in range(60))
    ids = reference.tokenizer(text)["input_ids"]
    assert len(ids) > 64
    answer = await embed(raw, input=text)
    assert answer["usage"]["prompt_tokens"] == len(ids)
    chunks = [ids[start : start + 32] for start in range(0, len(ids), 32)]
    pieces = vectors(await embed(raw, input=chunks))
    weights = np.array([len(chunk) for chunk in chunks], dtype=np.float32)[:, None]
    expected = (pieces * weights).sum(axis=0) / weights.sum()
    assert np.allclose(vectors(answer)[0], expected, atol=1e-5)
