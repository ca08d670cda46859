"""``from chutes.image import Image``."""

from chutes_core.image import Image

__all__ = ["Image"]
