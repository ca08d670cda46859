"""Calling cords from Python through CHUTES_DEV_URL (chutes_core.client), over real HTTP."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from chutes_core.client import CordCallError
from chutes_core.errors import ChutesError

from .conftest import APPS, SEEDS


def test_the_seed_examples_main_reaches_the_dev_server(run_chute) -> None:
    served = run_chute("example:chute", "--dev", cwd=SEEDS)
    # As printed, main() passes a bare string where the cord takes an object:
    # the call reaches the server, which refuses it, and the error says so.
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=SEEDS,
        env={"CHUTES_DEV_URL": served.url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "CordCallError: cord 'echo' failed with HTTP 422" in result.stderr


async def test_cords_called_from_python_return_decoded_answers(run_chute, monkeypatch) -> None:
    served = run_chute("example:chute", "--dev", cwd=SEEDS)
    monkeypatch.setenv("CHUTES_DEV_URL", served.url)
    example = runpy.run_path(str(SEEDS / "example.py"), run_name="example_client")
    said = await example["echo"]({"foo": "bar", "zebra": 3})
    assert said == "billy says: foo='bar' bar=0 baz=False bunny=None giraffe=False zebra=3"
    assert await example["echo"](example["FullArgs"](foo="model")) == (
        "billy says: foo='model' bar=0 baz=False bunny=None giraffe=False zebra=None"
    )
    with pytest.raises(CordCallError) as failed:
        await example["complex"]({"foo": "z"})  # its output model refuses an int
    assert failed.value.status == 500 and "ValidationError" in str(failed.value.detail)
    with pytest.raises(CordCallError) as missing:
        await example["image"]()  # GET; its file does not exist
    assert missing.value.status == 500 and "parachute.png" in str(missing.value.detail)


async def test_streaming_cords_yield_events_and_a_missing_url_is_explained(
    run_chute, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("CHUTES_TEST_MARKS", str(tmp_path))
    served = run_chute("serving:chute", "--dev", env={"CHUTES_TEST_MARKS": str(tmp_path)})
    serving = runpy.run_path(str(APPS / "serving.py"), run_name="serving_client")
    monkeypatch.setenv("CHUTES_DEV_URL", served.url + "/")
    assert [event async for event in serving["count"](n=3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert await serving["echo"]("hi") == {"text": "hi"}
    monkeypatch.delenv("CHUTES_DEV_URL")
    with pytest.raises(ChutesError, match="needs CHUTES_DEV_URL"):
        await serving["echo"]("hi")
