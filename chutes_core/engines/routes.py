"""An engine's routes, exposed as passthrough cords of the chute."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.cord import Cord


@dataclass(frozen=True)
class OpenAIRoute:
    """One engine route a template exposes as a passthrough cord named ``name``."""

    name: str
    path: str
    method: str = "POST"
    stream: bool = False
    doc: str = ""


CHAT = OpenAIRoute(
    "chat",
    "/v1/chat/completions",
    stream=True,
    doc="OpenAI chat completions; streams Server-Sent Events when the request sets stream.",
)
COMPLETION = OpenAIRoute(
    "completion",
    "/v1/completions",
    stream=True,
    doc="OpenAI text completions; streams Server-Sent Events when the request sets stream.",
)
MODELS = OpenAIRoute("models", "/v1/models", method="GET", doc="The served model, OpenAI style.")
OPENAI_ROUTES = (CHAT, COMPLETION, MODELS)


def add_passthrough_cords(
    chute: Chute, port: int, routes: Iterable[OpenAIRoute]
) -> dict[str, Cord]:
    """Add one passthrough cord per route, forwarding to ``port``; returns them by name.

    A cord's public path is the engine's path; its internal path is
    ``/<name>``. The engine's answer is relayed as it comes, so one cord
    serves both plain and streamed requests.
    """
    from chutes_core.cord import Cord

    cords = {}
    for route in routes:
        cords[route.name] = chute.add_cord(
            Cord(
                _forwarded(route),
                path=f"/{route.name}",
                public_api_path=route.path,
                method=route.method,
                stream=route.stream,
                passthrough=True,
                passthrough_path=route.path,
                passthrough_port=port,
            )
        )
    return cords


def _forwarded(route: OpenAIRoute) -> Callable[..., Any]:
    async def forwarded(self: Any, *args: Any, **kwargs: Any) -> None:
        """Never called: the host forwards the request to the engine."""

    forwarded.__name__ = forwarded.__qualname__ = route.name
    forwarded.__doc__ = route.doc or f"{route.method} {route.path}, answered by the engine."
    return forwarded
