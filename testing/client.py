"""An in-process client for tests: the host's startup and shutdown included.

>>> async with ChuteClient(chute) as client:
...     response = await client.post("/echo", json={"foo": "bar"})

The client is an ``httpx.AsyncClient`` talking to the host over ASGI, so no
port is opened. ``client.host`` is the :class:`~chutes_runtime.host.Host`.
Responses are delivered whole; use a real server for streaming timing.
"""

from __future__ import annotations

from typing import Any

import httpx

from chutes_core.chute import Chute, unwrap
from chutes_core.plugins import PluginManager
from chutes_runtime.host import Host


class ChuteClient(httpx.AsyncClient):
    def __init__(
        self,
        chute: Chute | Any,
        *,
        dev: bool = True,
        plugins: PluginManager | None = None,
        **kwargs: Any,
    ) -> None:
        self.host = Host(unwrap(chute), dev=dev, plugins=plugins, wait_for_startup=True)
        kwargs.setdefault("base_url", "http://chute.test")
        super().__init__(transport=httpx.ASGITransport(app=self.host), **kwargs)

    async def __aenter__(self) -> ChuteClient:
        await self.host.startup()
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            await self.host.shutdown()
