"""End to end: a real ``transformers serve`` behind ``chutes run``, called with the openai client.

The model is a tiny random Llama built on the spot, so nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from chutes_testing.running import free_port, run_chute, write_template_app

pytestmark = pytest.mark.timeout(600)  # the first test starts the chute

pytest.importorskip("transformers.cli.serving", reason="needs chutes-transformers-serve[engine]")
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    from chutes_testing.tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("transformers-serve")
    app = write_template_app(
        root,
        "transformers_serve",
        username="me",
        model_name=str(build_tiny_llama(root / "tiny-llama")),
        served_model_name="tiny-llama",
        device="cpu",
        port=free_port(),
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf")}
    with run_chute(app, cwd=root, env=env, ready_timeout=180) as running:
        yield running.url


@pytest.fixture(scope="module")
def client(server: str):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_models(client) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]


def test_chat_completion(client) -> None:
    reply = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == 4


def test_streamed_chat_completion(client) -> None:
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completion(client) -> None:
    reply = client.completions.create(model="tiny-llama", prompt="the quick", max_tokens=3)
    assert reply.choices[0].finish_reason == "length"


def test_requests_are_counted_by_cord(server: str) -> None:
    metrics = httpx.get(f"{server}/_chutes/metrics").text
    assert 'chutes_invocations_total{cord="chat",status="200"}' in metrics
