"""Built-in behaviour, written as a plugin registered last.

Every hook answered here is answered with ``trylast=True``, so any installed
plugin that answers the same hook takes precedence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chutes_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.cord import Cord
    from chutes_core.image import Image

NAME = "builtin"


@hookimpl(trylast=True)
def build_image(chute: Chute, image: Image | None) -> Image:
    """The chute's own image, or a plain Python image with chutes installed."""
    if image is not None:
        return image
    from chutes_core import __version__
    from chutes_core.image import Image

    return (
        Image(username=chute.username, name=chute.name, tag=chute.revision or "latest")
        .with_env("PYTHONUNBUFFERED", "1")
        .run_command(f"pip install --no-cache-dir 'chutes=={__version__}'")
    )


@hookimpl(trylast=True)
def egress_policy(chute: Chute) -> bool:
    """Custom chutes may reach the network unless they say otherwise."""
    return True


@hookimpl(trylast=True)
def passthrough_headers(chute: Chute, cord: Cord) -> dict[str, str] | None:
    """Requests forwarded to an engine attached with OpenAIServerEngine carry its API key."""
    engine = getattr(chute.state, "engine", None)
    if engine is not None and cord.passthrough_port == getattr(engine, "port", None):
        return {"authorization": f"Bearer {engine.api_key}"}
    return None
