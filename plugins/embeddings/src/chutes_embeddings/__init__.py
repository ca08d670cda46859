"""OpenAI-compatible embeddings for chutes."""

__version__ = "0.1.0"
