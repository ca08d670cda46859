"""Chutes on a real local Ray Serve instance: same answers as `chutes run`, knobs mapped.

Runs in the `plugin(name='ray')` nox session (with the embeddings plugin installed too).
The module starts one Ray head, through `chutes deploy` itself (no address
given, so it starts a local head on a free port), and stops that head's
process group at the end.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chutes_testing.running import free_port

pytestmark = pytest.mark.timeout(900)  # the module starts a Ray head in its first test

# Ray is imported later, by chutes, after it has set what a loopback-only cluster needs.
if importlib.util.find_spec("ray") is None:
    pytest.skip("needs Ray Serve (chutes-ray's dependency)", allow_module_level=True)

HERE = Path(__file__).resolve().parent
#: The repository's seed chutes (the same example the core suite uses).
SEEDS = HERE.parents[2] / "tests" / "seeds"
APPS = HERE / "apps"
HAS_EMBEDDINGS = importlib.util.find_spec("chutes_embeddings") is not None
needs_embeddings = pytest.mark.skipif(not HAS_EMBEDDINGS, reason="needs chutes-embeddings")


@dataclass
class Cluster:
    address: str
    url: str
    env: dict[str, str]

    def chutes(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chutes_cli", *args],
            cwd=cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )


def wait_ready(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/_chutes/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready")


def stop_group(pgid: int) -> None:
    """Stop the Ray head this module started (its whole process group), and only it."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    port, http_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "CHUTES_RAY_PORT": str(port),
    }
    cluster = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{http_port}", env)
    head = None
    try:
        # No --address: chutes starts the local head. CPU-only through the environment.
        example = cluster.chutes(
            "deploy", "example.py:chute", "--target", "ray", "--http-port", str(http_port),
            cwd=SEEDS, CHUTES_RAY_CPU_ONLY="1",
        )  # fmt: skip
        started = re.search(r"kill -- -(\d+)", example.stderr)
        head = int(started.group(1)) if started else None
        assert example.returncode == 0, example.stdout + example.stderr
        assert head is not None, example.stderr
        assert f"deployed example on Ray ({cluster.address}): {cluster.url}/" in example.stdout
        if HAS_EMBEDDINGS:
            # The same cluster named explicitly; CPU-only through the flag.
            minilm = cluster.chutes(
                "deploy", "minilm:chute", "--target", "ray", "--address", cluster.address,
                "--cpu-only", "--route-prefix", "/emb", cwd=APPS,
            )  # fmt: skip
            assert minilm.returncode == 0, minilm.stdout + minilm.stderr
            assert f"{cluster.url}/emb/" in minilm.stdout
        yield cluster
    finally:
        if head is not None:
            stop_group(head)


@pytest.fixture(scope="module")
def local_urls() -> Iterator[dict[str, str]]:
    """The same chutes under `chutes run`, for comparison."""
    apps = [("example", "example:chute", SEEDS)]
    if HAS_EMBEDDINGS:
        apps.append(("minilm", "minilm:chute", APPS))
    processes, urls = [], {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name, ref, cwd in apps:
        port = free_port()
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "chutes_cli", "run", ref, "--port", str(port)],
                cwd=cwd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        urls[name] = f"http://127.0.0.1:{port}"
    try:
        for url in urls.values():
            wait_ready(url)
        yield urls
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


@pytest.fixture(scope="module")
def serve_configs(cluster: Cluster) -> dict[str, dict]:
    """The deployment configs read back from Serve (from this test process)."""
    from chutes_ray.serve import deployed_config

    names = ["example", "minilm-ray"] if HAS_EMBEDDINGS else ["example"]
    try:
        return {name: deployed_config(name, address=cluster.address) for name in names}
    finally:
        import ray

        ray.shutdown()


def test_the_seed_example_answers_as_under_chutes_run(cluster, local_urls) -> None:
    statuses = []
    for method, path, body in (
        ("POST", "/echo", {"foo": "bar"}),
        ("POST", "/echo", {"foo": "x" * 200}),  # too long: a validation error
        ("POST", "/complex", {"foo": "z"}),  # its output model refuses an int: an error
        ("GET", "/image", None),  # its file is missing: an error, the same one
    ):
        on_ray = httpx.request(method, f"{cluster.url}{path}", json=body, timeout=30)
        local = httpx.request(method, f"{local_urls['example']}{path}", json=body, timeout=30)
        assert on_ray.status_code == local.status_code, path
        statuses.append(local.status_code)
        # Errors too: the same detail (each request has its own id).
        if on_ray.status_code >= 500:
            assert "detail" in local.json(), path
            assert without_request_id(on_ray.json()) == without_request_id(local.json()), path
        else:
            assert on_ray.text == local.text, path
    assert statuses == [200, 422, 500, 500]
    # The startup hook ran in the replica before it served.
    echo = httpx.post(f"{cluster.url}/echo", json={"foo": "bar"}, timeout=30)
    assert echo.text.startswith("billy says: foo='bar'")


def without_request_id(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "request_id"}


def test_scaling_knobs_map_onto_serve(serve_configs) -> None:
    example = serve_configs["example"]  # concurrency 4, max_instances 1, threshold 0.75, 300 s
    scaling = example["autoscaling_config"]
    assert example["max_ongoing_requests"] == 4
    assert scaling["target_ongoing_requests"] == 3.0
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (0, 1)
    assert scaling["downscale_delay_s"] == scaling["downscale_to_zero_delay_s"] == 300.0
    # gpu_count=1, overridden by CHUTES_RAY_CPU_ONLY=1.
    assert example["ray_actor_options"]["num_gpus"] == 0.0


@needs_embeddings
def test_embeddings_answer_as_under_chutes_run(cluster, local_urls) -> None:
    body = {"model": "all-MiniLM-L6-v2", "input": ["a cat sat on the mat", "stocks fell"]}
    on_ray = httpx.post(f"{cluster.url}/emb/v1/embeddings", json=body, timeout=60).json()
    local = httpx.post(f"{local_urls['minilm']}/v1/embeddings", json=body, timeout=60).json()
    assert on_ray["usage"] == local["usage"]
    assert len(on_ray["data"]) == 2 and len(on_ray["data"][0]["embedding"]) == 384
    for a, b in zip(on_ray["data"], local["data"], strict=True):
        assert max(abs(x - y) for x, y in zip(a["embedding"], b["embedding"], strict=True)) < 1e-6
    models = httpx.get(f"{cluster.url}/emb/v1/models", timeout=30).json()
    assert models["data"][0]["id"] == "all-MiniLM-L6-v2"


@needs_embeddings
def test_each_replica_ran_startup_once_and_locked_egress(cluster, local_urls) -> None:
    # The same chute again with two fixed replicas (its own knobs autoscale from one).
    pair = subprocess.run(
        [sys.executable, "two_replicas.py", cluster.address],
        cwd=APPS, env=cluster.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pair.returncode == 0, pair.stdout + pair.stderr
    try:
        # Ask until both replicas have answered: each reports its own process.
        seen: dict[int, dict] = {}
        deadline = time.monotonic() + 60
        while len(seen) < 2:
            assert time.monotonic() < deadline, f"only these replicas answered: {seen}"
            for answer in [httpx.get(f"{cluster.url}/pair/probe", timeout=30) for _ in range(4)]:
                assert answer.status_code == 200, answer.text
                seen[answer.json()["pid"]] = answer.json()
        for probe in seen.values():
            assert probe["startups"] == 1, probe
            assert probe["egress_locked"] and probe["outside_refused"], probe
        # Served by two Ray replicas, not by anything in this test or `chutes run`.
        local = httpx.get(f"{local_urls['minilm']}/probe", timeout=30).json()
        assert (local["egress_locked"], local["outside_refused"]) == (True, True)
        assert set(seen).isdisjoint({os.getpid(), local["pid"]})
    finally:
        removed = cluster.chutes("undeploy", "minilm-pair", "--target", "ray", cwd=APPS)
        assert removed.returncode == 0, removed.stderr


@needs_embeddings
def test_embeddings_knobs_map_onto_serve(serve_configs) -> None:
    minilm = serve_configs["minilm-ray"]  # concurrency 8, max 2, threshold 0.5, 120 s
    scaling = minilm["autoscaling_config"]
    assert minilm["max_ongoing_requests"] == 8
    assert scaling["target_ongoing_requests"] == 4.0
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (0, 2)
    assert scaling["downscale_delay_s"] == scaling["downscale_to_zero_delay_s"] == 120.0
    assert minilm["ray_actor_options"]["num_gpus"] == 0.0  # --cpu-only


def test_a_gpu_chute_without_gpus_fails_at_once_on_a_local_head(cluster, tmp_path) -> None:
    (tmp_path / "gpu.py").write_text(
        "from chutes.chute import Chute, NodeSelector\n"
        "chute = Chute(username='me', name='needs-gpus', node_selector=NodeSelector(gpu_count=2))\n"
    )
    result = cluster.chutes("deploy", "gpu.py:chute", "--target", "ray", cwd=tmp_path)
    assert result.returncode == 1
    assert "asks for 2 GPU(s) per replica" in result.stderr and "--cpu-only" in result.stderr


def test_undeploy_removes_the_application(cluster) -> None:
    unknown = cluster.chutes("undeploy", "no-such-chute", "--target", "ray", cwd=SEEDS)
    assert unknown.returncode == 1 and "no application named 'no-such-chute'" in unknown.stderr
    assert "example" in unknown.stderr  # it lists what runs
    result = cluster.chutes("undeploy", "example.py:chute", "--target", "ray", cwd=SEEDS)
    assert result.returncode == 0 and "removed example from Ray" in result.stdout
    deadline = time.monotonic() + 60
    while httpx.post(f"{cluster.url}/echo", json={"foo": "bar"}, timeout=30).status_code != 404:
        assert time.monotonic() < deadline, "the application is still served"
        time.sleep(0.5)


def test_gpu_count_maps_to_num_gpus() -> None:
    from chutes_ray.serve import deployment_options

    from chutes.chute import Chute, NodeSelector

    chute = Chute(
        username="me", name="big", node_selector=NodeSelector(gpu_count=4), concurrency=10
    )
    assert deployment_options(chute)["ray_actor_options"] == {"num_gpus": 4}
    assert deployment_options(chute, cpu_only=True)["ray_actor_options"] == {"num_gpus": 0}


def test_ray_imported_too_early_is_a_clear_error_not_a_hang() -> None:
    # Ray then resolves a loopback cluster to the LAN address and waits there for minutes.
    code = "import ray\nfrom chutes_ray.cluster import connect\nconnect('127.0.0.1:9')\n"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Ray was imported before chutes could keep it on loopback" in result.stderr
