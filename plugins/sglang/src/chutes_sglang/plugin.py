"""Entry point ``sglang``: the hooks that make ``build_sglang_chute`` a chutes template.

They register the builder, pin SGLang in the default image of its chutes
(unless they name an image), and keep those chutes off the network once
started. Import stays cheap, since every chutes process loads it.

For chat completions they also name each forwarded request for SGLang
(``X-Override-Rid``, which SGLang's chat endpoint takes as the request's
``rid``) so that a client leaving before the engine answers is told to the
engine with ``POST /abort_request {"rid": ...}``: queued work is dropped
instead of being computed for nobody. SGLang's other endpoints take no such
header; for them, dropping the connection is the signal.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from chutes_core import hookimpl
from chutes_core.engines.hooks import TemplateHooks

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.cord import Cord
    from chutes_core.passthrough import UpstreamRequest

register_templates, build_image, egress_policy = TemplateHooks.for_engine(
    "chutes_sglang.template:SGLANG"
).hooks()

#: The header SGLang's chat endpoint reads as the request's ``rid`` (sglang 0.5.x).
RID_HEADER = "x-override-rid"
#: The paths whose requests SGLang lets a header name (its chat endpoint only).
NAMED_PATHS = frozenset({"/v1/chat/completions"})
ABORT_PATH = "/abort_request"
ABORT_TIMEOUT = 5.0


@hookimpl
def passthrough(chute: Chute, cord: Cord, request: UpstreamRequest) -> None:
    """Give an SGLang chat request an id of the host's choosing (never the caller's)."""
    if chute.standard_template == "sglang" and request.path in NAMED_PATHS:
        request.headers[RID_HEADER] = f"chutes-{os.urandom(16).hex()}"


@hookimpl
def passthrough_abort(
    chute: Chute, cord: Cord, request: UpstreamRequest, request_id: str | None
) -> Awaitable[None] | None:
    """Tell SGLang to abort the request its client left (``POST /abort_request``)."""
    if chute.standard_template != "sglang":
        return None
    rid = request.headers.get(RID_HEADER)
    if not rid:
        return None
    return _abort(request, rid)


async def _abort(request: UpstreamRequest, rid: str) -> None:
    import httpx

    # The engine's key, as the forwarded request carried it (the endpoint is admin-optional).
    headers = {k: v for k, v in request.headers.items() if k == "authorization"}
    url = f"http://{request.host}:{request.port}{ABORT_PATH}"
    async with httpx.AsyncClient(timeout=ABORT_TIMEOUT, trust_env=False) as client:
        answer = await client.post(url, json={"rid": rid}, headers=headers)
        answer.raise_for_status()
