"""The ASGI lifespan protocol: startup when the server starts, shutdown when it stops.

With ``wait_for_startup`` the server starts answering only once startup is
done (``build_app``, the test client); without it (``chutes run``) startup runs
in the background so liveness answers meanwhile, and cords answer 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from chutes_runtime.lifecycle import StartupError, background_startup, shutdown, startup

if TYPE_CHECKING:
    from chutes_runtime.host import Host

Message = MutableMapping[str, Any]


async def lifespan(
    host: Host,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if host.wait_for_startup:
                try:
                    await startup(host)
                except StartupError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
            else:
                host.startup_task = asyncio.get_running_loop().create_task(background_startup(host))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown(host)
            await send({"type": "lifespan.shutdown.complete"})
            return
