"""Serve a model with ``transformers serve`` behind chutes (an example plugin)."""

__version__ = "0.1.0"
