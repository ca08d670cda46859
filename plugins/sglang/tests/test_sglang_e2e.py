"""End to end on a GPU: a real SGLang behind ``chutes run``, called with the openai client.

Skipped without a visible GPU or without SGLang; the model is a tiny random
Llama built on the spot, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import importlib.util

import httpx
import pytest

from chutes_core.engines.devices import gpu_visible

pytestmark = [
    pytest.mark.timeout(1500),  # the engine starts in the first test
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not gpu_visible(), reason="SGLang serves on a GPU; none is visible"),
    pytest.mark.skipif(
        importlib.util.find_spec("sglang") is None, reason="SGLang is not installed"
    ),
]


def test_the_openai_client_gets_chat_stream_completion_and_models(tmp_path) -> None:
    from chutes_testing.egress import (
        EGRESS_TARGET_ENV,
        PROBE_PATH,
        NetnsUnavailable,
        check_egress_locked,
        namespaced_test_host,
        write_egress_probe_app,
    )
    from chutes_testing.openai_checks import check_openai_api
    from chutes_testing.running import run_chute
    from chutes_testing.tiny_models import build_tiny_llama

    # GPU attention kernels want heads of 64 or more; the tiny Llama's are 16.
    model = str(build_tiny_llama(tmp_path / "tiny-llama"))
    # A small share of GPU memory, and no CUDA graphs to capture for so tiny a model.
    engine_args = {"context_length": 256, "mem_fraction_static": 0.3, "disable_cuda_graph": True}
    # The template as a user builds it, plus a cord that probes egress (chutes_testing.egress).
    app = write_egress_probe_app(
        tmp_path, "sglang", username="me", model_name=model, engine_args=engine_args
    )
    env = {"HF_HUB_OFFLINE": "1"}
    with contextlib.ExitStack() as stack:
        try:
            env[EGRESS_TARGET_ENV] = stack.enter_context(namespaced_test_host())
        except NetnsUnavailable as exc:
            no_test_host = str(exc)
        else:
            no_test_host = ""
        chute = stack.enter_context(run_chute(app, cwd=tmp_path, env=env, ready_timeout=1200))
        summary = check_openai_api(chute.url, model)
        assert summary["models"] == [model]
        assert "decided by sglang" in chute.log()
        # The lock itself: reached during startup, refused afterwards.
        if no_test_host:
            print(f"egress lock not checked: {no_test_host}")
        else:
            check_egress_locked(httpx.get(chute.url + PROBE_PATH, timeout=90).json())
    assert chute.process.returncode == 0, chute.tail()
