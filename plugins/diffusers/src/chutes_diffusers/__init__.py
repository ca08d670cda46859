"""Image generation chutes with diffusers."""

__version__ = "0.1.0"
