"""The demo chute under `chutes run`, called with the official openai client."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from chutes_testing.running import run_chute

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tmp_path_factory, minilm):
    with run_chute(
        "chutes_embeddings.demo:chute",
        cwd=tmp_path_factory.mktemp("embeddings"),
        env={"HF_HUB_OFFLINE": "1"},
        ready_timeout=120,
    ) as running:
        yield running.url, running.log_path
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(30) == 0


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


TEXTS = [
    "A man is playing a guitar.",
    "Someone is strumming a guitar.",
    "The stock market fell sharply today.",
    "short",
    "A considerably longer sentence, with several clauses, that pads the others in its batch.",
]


def test_vectors_match_sentence_transformers(client, reference) -> None:
    response = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
    got = np.array([item.embedding for item in response.data], dtype=np.float32)
    expected = reference.encode(TEXTS, convert_to_numpy=True)
    assert got.shape == (5, 384)
    assert np.abs(got - expected).max() < 1e-5
    assert [item.index for item in response.data] == [0, 1, 2, 3, 4]
    assert response.model == "all-MiniLM-L6-v2"
    expected_tokens = sum(len(ids) for ids in reference.tokenizer(TEXTS)["input_ids"])
    assert response.usage.prompt_tokens == response.usage.total_tokens == expected_tokens


def test_base64_decodes_to_the_same_floats(client) -> None:
    def create(**kwargs):
        return client.embeddings.create(model="all-MiniLM-L6-v2", input="hello world", **kwargs)

    floats = np.array(create(encoding_format="float").data[0].embedding, dtype=np.float32)
    encoded = create(encoding_format="base64").data[0].embedding
    assert isinstance(encoded, str)
    assert np.array_equal(np.frombuffer(base64.b64decode(encoded), dtype="<f4"), floats)
    # Without encoding_format the client asks for base64 itself and decodes it.
    assert np.array_equal(np.array(create().data[0].embedding, dtype=np.float32), floats)


def test_paraphrases_are_close_and_unrelated_texts_are_not(client) -> None:
    data = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:3]).data
    a, b, c = (np.array(item.embedding) for item in data)
    assert float(a @ b) > 0.6
    assert float(a @ c) < 0.2


def test_dimensions_truncate_and_renormalise(client) -> None:
    full = np.array(
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hello").data[0].embedding
    )
    short = np.array(
        client.embeddings.create(model="all-MiniLM-L6-v2", input="hello", dimensions=64)
        .data[0]
        .embedding
    )
    assert short.shape == (64,)
    assert abs(np.linalg.norm(short) - 1) < 1e-5
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


def test_token_id_inputs_match_text_inputs(client, reference) -> None:
    ids = reference.tokenizer(["A man is playing a guitar.", "short"])["input_ids"]
    by_ids = client.embeddings.create(model="all-MiniLM-L6-v2", input=ids).data
    by_text = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[0]).data
    assert np.allclose(by_ids[0].embedding, by_text[0].embedding, atol=1e-6)
    single = client.embeddings.create(model="all-MiniLM-L6-v2", input=ids[1]).data
    assert len(single) == 1


def test_errors_reach_the_openai_client_as_its_own_exceptions(client) -> None:
    with pytest.raises(openai.NotFoundError, match="this chute serves `all-MiniLM-L6-v2`"):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="at most 256"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input="word " * 400)
    with pytest.raises(openai.BadRequestError, match="input must not be empty"):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[])


def test_concurrent_requests_are_batched(server) -> None:
    url = server[0]

    def batches() -> tuple[float, float]:
        text = httpx.get(f"{url}/_chutes/metrics").text
        count = total = 0.0
        for line in text.splitlines():
            if line.startswith("chutes_embeddings_batch_size_count"):
                count = float(line.split()[-1])
            elif line.startswith("chutes_embeddings_batch_size_sum"):
                total = float(line.split()[-1])
        return count, total

    before = batches()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(
                *[
                    client.post(f"{url}/v1/embeddings", json={"input": f"sentence number {i}"})
                    for i in range(48)
                ]
            )
        return [a.status_code for a in answers]

    assert asyncio.run(burst()) == [200] * 48
    after = batches()
    forward_passes, inputs = after[0] - before[0], after[1] - before[1]
    assert inputs == 48
    assert forward_passes < 24, f"48 requests took {forward_passes} forward passes"


def test_the_demo_says_where_to_send_requests(server) -> None:
    url, log = server[0], Path(server[1]).read_text()
    assert f"send requests to POST {url}/v1/embeddings" in log
    assert f"curl -s {url}/v1/embeddings" in log and '"model": "all-MiniLM-L6-v2"' in log
    assert f"OpenAI(base_url='{url}/v1', api_key='unused')" in log


def test_a_client_that_goes_away_costs_no_more_compute(server) -> None:
    url = server[0]

    def metric(name: str) -> float:
        for line in httpx.get(f"{url}/_chutes/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return 0.0

    dropped, batches = (
        "chutes_embeddings_dropped_inputs_total",
        "chutes_embeddings_batch_size_count",
    )
    before, batches_before = metric(dropped), metric(batches)
    texts = [f"a sentence that takes a little while to embed, number {i}" for i in range(2000)]

    async def leave_once_embedding_began() -> None:
        # The client leaves as soon as the first of its ~32 batches has begun,
        # however fast or slow this machine embeds: a few batches at most run meanwhile.
        async with httpx.AsyncClient(timeout=60) as client:
            request = asyncio.ensure_future(
                client.post(f"{url}/v1/embeddings", json={"input": texts})
            )
            deadline = time.monotonic() + 60
            while metric(batches) == batches_before:
                assert not request.done(), "the request finished before it could be left"
                assert time.monotonic() < deadline, "no batch began"
                await asyncio.sleep(0.01)
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)

    asyncio.run(leave_once_embedding_began())
    deadline = time.monotonic() + 20
    while metric(dropped) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(dropped) - before > 500  # most of the 2000 inputs never reached the model
    # And the chute still serves.
    assert httpx.post(f"{url}/v1/embeddings", json={"input": "still here"}).status_code == 200


def test_served_in_its_own_network_namespace_where_the_machine_allows(server) -> None:
    """`chutes run` puts a locked chute in its own network namespace (as root here; CI runs as root)."""
    import os
    import shutil

    import httpx

    egress = httpx.get(f"{server[0]}/_chutes/ready").json()["egress"]
    assert egress["locked"] is True and egress["layers"][-1] == "audit", egress
    if os.geteuid() == 0:
        assert egress["layers"][0] == "netns", egress
        if shutil.which("slirp4netns"):  # startup egress for every client, not proxies only
            assert egress["startup_egress"].startswith("slirp4netns (routed: 0.0.0.0/0)"), egress


def test_the_template_locks_egress_after_startup(tmp_path, minilm) -> None:
    # Asserted by connecting to a test host in a network namespace, not by the log.
    from chutes_testing.egress import (
        EGRESS_TARGET_ENV,
        PROBE_PATH,
        NetnsUnavailable,
        check_egress_locked,
        namespaced_test_host,
        write_egress_probe_app,
    )

    app = write_egress_probe_app(tmp_path, "embedding", username="me", model_name=str(minilm))
    try:
        host = namespaced_test_host()
        target = host.__enter__()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    try:
        env = {"HF_HUB_OFFLINE": "1", EGRESS_TARGET_ENV: target}
        with run_chute(app, cwd=tmp_path, env=env, ready_timeout=120) as running:
            check_egress_locked(httpx.get(running.url + PROBE_PATH, timeout=90).json())
    finally:
        host.__exit__(None, None, None)
