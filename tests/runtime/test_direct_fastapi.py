"""With a FastAPI older than the one chutes_runtime.direct follows, FastAPI serves every cord.

Apart from test_direct (skipped there), so that it runs on every FastAPI, the one an
engine brings along included (the vllm_e2e session).
"""

from __future__ import annotations

import pytest

from chutes_runtime import direct

from .test_direct import make_chute
from .test_dispatch_accounting import hosted


async def test_an_older_fastapi_serves_every_cord(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "FASTAPI", min(direct.FASTAPI, (0, 150)))
    async with hosted(make_chute()) as (host, client):
        assert host.direct_cords == {}
        assert (await client.post("/dict_out", json={"name": "ab"})).json()["name"] == "ab"
