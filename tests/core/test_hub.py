"""fetch_model: local paths as they are; hub names file by file with byte progress, retried.

The hub is never contacted: ``huggingface_hub`` is replaced by a stand-in
module whose ``HfApi().model_info`` fails as told, whose ``hf_hub_download``
copies real local files chunk by chunk through the progress class it is
given (as the real one does), and whose ``snapshot_download`` answers a
local path.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import sys
import types
from pathlib import Path

import pytest

from chutes_core import progress
from chutes_core.engines.hub import fetch_model, offline_env
from chutes_core.errors import ChutesError


class RepositoryNotFoundError(Exception):
    """Named as huggingface_hub names it: the hub says the repository does not exist."""


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A stand-in huggingface_hub; ``hub.failures`` are raised, in order, before success."""
    module = types.ModuleType("huggingface_hub")
    utils = types.ModuleType("huggingface_hub.utils")
    module.calls = []  # (repo, revision) of each attempt
    module.snapshots = []  # what snapshot_download was asked
    module.downloads = []  # (file, revision) of each file fetched
    module.failures = []
    module.snapshot = tmp_path / "snapshot"
    module.snapshot.mkdir()
    module.remote = tmp_path / "remote"  # the repository's files, on local disk
    module.remote.mkdir()
    (module.remote / "config.json").write_text('{"layers": 2}')
    (module.remote / "model.safetensors").write_bytes(os.urandom(300_000))

    class HfApi:
        def model_info(self, repo_id, *, revision=None, files_metadata=False):
            module.calls.append((repo_id, revision))
            if module.failures:
                raise module.failures.pop(0)
            siblings = [
                types.SimpleNamespace(rfilename=f.name, size=f.stat().st_size)
                for f in sorted(module.remote.iterdir())
            ]
            return types.SimpleNamespace(sha="c0ffee", siblings=siblings)

    def hf_hub_download(repo_id, filename, *, revision=None, cache_dir=None, tqdm_class=None):
        module.downloads.append((filename, revision))
        source = module.remote / filename
        with (
            tqdm_class(total=source.stat().st_size, initial=0, unit="B") as bar,
            source.open("rb") as data,
            (module.snapshot / filename).open("wb") as out,
        ):
            while chunk := data.read(65536):
                out.write(chunk)
                bar.update(len(chunk))
        return str(module.snapshot / filename)

    def snapshot_download(repo_id, *, revision=None, cache_dir=None, allow_patterns=None):
        module.snapshots.append((repo_id, revision, cache_dir, allow_patterns))
        return str(module.snapshot)

    def filter_repo_objects(items, *, allow_patterns=None, key=None):
        for item in items:
            name = key(item) if key else item
            if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                yield item

    module.HfApi = HfApi
    module.hf_hub_download = hf_hub_download
    module.snapshot_download = snapshot_download
    utils.filter_repo_objects = filter_repo_objects
    module.utils = utils
    monkeypatch.setitem(sys.modules, "huggingface_hub", module)
    monkeypatch.setitem(sys.modules, "huggingface_hub.utils", utils)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
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
    assert hub.calls == [("org/model", "abc123")]
    # Files at the commit the revision resolved to; the folder from the cache.
    assert hub.downloads == [("config.json", "c0ffee")]
    assert hub.snapshots == [("org/model", "c0ffee", None, ["*.json"])]
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


def test_a_download_reports_the_bytes_of_each_file_as_they_arrive(hub, tmp_path) -> None:
    tracker = progress.Tracker()
    done: list[float] = []
    tracker.listeners.append(lambda p: done.append(p.done) if p is not None else None)
    token = progress.activate(tracker)
    try:
        fetch_model("org/model", attempts=1)
    finally:
        progress.deactivate(token)
    (download,) = tracker.snapshot()
    assert download.name == "download" and download.state == "done"
    size = 300_000 + len('{"layers": 2}')
    assert (download.done, download.total, download.unit) == (size, size, "bytes")
    assert download.files["model.safetensors"] == (300_000, 300_000)
    assert done == sorted(done) and any(0 < d < size for d in done)
    assert (hub.snapshot / "model.safetensors").read_bytes() == (
        hub.remote / "model.safetensors"
    ).read_bytes()


def test_offline_the_cache_answers_and_the_phase_counts_its_bytes(hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (hub.snapshot / "weights.bin").write_bytes(b"w" * 500)
    tracker = progress.Tracker()
    token = progress.activate(tracker)
    try:
        assert fetch_model("org/model", "v2", allow_patterns=["*.bin"]) == hub.snapshot
    finally:
        progress.deactivate(token)
    assert hub.calls == [] and hub.downloads == []  # no hub metadata, no file fetched
    assert hub.snapshots == [("org/model", "v2", None, ["*.bin"])]
    (download,) = tracker.snapshot()
    assert (download.state, download.done, download.total) == ("done", 500, 500)


def test_a_failed_download_fails_its_phase(hub) -> None:
    hub.failures = [RepositoryNotFoundError("404 org/nope")]
    tracker = progress.Tracker()
    token = progress.activate(tracker)
    try:
        with pytest.raises(ChutesError):
            fetch_model("org/nope", attempts=1)
    finally:
        progress.deactivate(token)
    (download,) = tracker.snapshot()
    assert download.state == "failed" and "404 org/nope" in (download.error or "")


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
