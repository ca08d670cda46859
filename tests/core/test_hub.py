"""fetch_model: local paths as they are; hub names through snapshot_download, retried.

The hub is never contacted: ``huggingface_hub`` is replaced by a stand-in
module whose ``snapshot_download`` fails as told, then answers a local path.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from chutes_core.engines.hub import fetch_model, offline_env
from chutes_core.errors import ChutesError


class RepositoryNotFoundError(Exception):
    """Named as huggingface_hub names it: the hub says the repository does not exist."""


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A stand-in huggingface_hub; ``hub.failures`` are raised, in order, before success."""
    module = types.ModuleType("huggingface_hub")
    module.calls = []
    module.failures = []
    module.snapshot = tmp_path / "snapshot"
    module.snapshot.mkdir()

    def snapshot_download(repo_id, *, revision=None, cache_dir=None, allow_patterns=None):
        module.calls.append((repo_id, revision, cache_dir, allow_patterns))
        if module.failures:
            raise module.failures.pop(0)
        return str(module.snapshot)

    module.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    return module


def test_a_local_path_is_used_as_it_is(hub, tmp_path, monkeypatch) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    assert fetch_model(str(model)) == model.resolve()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert fetch_model("~/my-model") == model.resolve()
    assert hub.calls == []


def test_a_hub_name_is_downloaded_at_its_revision(hub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chutes.hub")
    path = fetch_model("org/model", "abc123", allow_patterns=["*.json"])
    assert path == hub.snapshot
    assert hub.calls == [("org/model", "abc123", None, ["*.json"])]
    assert "downloading org/model@abc123 (attempt 1/5)" in caplog.text
    assert f"to {hub.snapshot}" in caplog.text


def test_transient_failures_are_retried(hub, caplog) -> None:
    hub.failures = [ConnectionError("reset by peer"), TimeoutError("read timed out")]
    assert fetch_model("org/model", attempts=3, backoff=0) == hub.snapshot
    assert len(hub.calls) == 3
    assert "reset by peer" in caplog.text and "retrying" in caplog.text


def test_giving_up_names_the_model_revision_and_last_error(hub) -> None:
    hub.failures = [ConnectionError("first"), ConnectionError("second")]
    with pytest.raises(ChutesError, match=r"'org/model' at revision 'v1': second"):
        fetch_model("org/model", "v1", attempts=2, backoff=0)


def test_a_missing_repository_is_not_retried(hub) -> None:
    hub.failures = [RepositoryNotFoundError("404 org/nope")]
    with pytest.raises(ChutesError, match="404 org/nope"):
        fetch_model("org/nope", attempts=5, backoff=0)
    assert len(hub.calls) == 1


def test_without_huggingface_hub_the_error_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ChutesError, match=r"pip install 'chutes\[hub\]'"):
        fetch_model("org/model")


def test_engines_run_offline_with_caches_beside_the_weights(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CHUTES_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    env = offline_env()
    assert env["HF_HUB_OFFLINE"] == "1"
    assert Path(env["TRITON_CACHE_DIR"]) == tmp_path / "triton_cache_dir"


def test_an_engines_own_caches_join_only_when_its_template_names_them(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("CHUTES_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("VLLM_CACHE_ROOT", raising=False)
    assert "VLLM_CACHE_ROOT" not in offline_env()  # the core names no engine
    env = offline_env(["MYENGINE_CACHE"])
    assert Path(env["MYENGINE_CACHE"]) == tmp_path / "myengine_cache"


async def test_fetch_model_async_downloads_off_the_event_loop(monkeypatch, tmp_path) -> None:
    import threading

    from chutes_core.engines import hub as hub_module
    from chutes_core.engines.hub import fetch_model_async

    seen = []

    def fetch(model, revision, **options):
        seen.append((model, revision, options, threading.current_thread()))
        return tmp_path

    monkeypatch.setattr(hub_module, "fetch_model", fetch)
    assert await fetch_model_async("org/model", "abc", attempts=1) == tmp_path
    ((model, revision, options, thread),) = seen
    assert (model, revision, options) == ("org/model", "abc", {"attempts": 1})
    assert thread is not threading.main_thread()
