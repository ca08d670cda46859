"""Built-in behaviour, written as an ordinary plugin named ``builtin``.

It is registered before any installed plugin, and every hook here is marked
``trylast=True``, so pluggy calls it after all plugins: an installed plugin
that answers a first-result hook takes precedence.
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
def build_image(chute: Chute, image: Image | str | None) -> Image | str:
    """The chute's own image (built, or a prebuilt reference), or a plain Python image."""
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
