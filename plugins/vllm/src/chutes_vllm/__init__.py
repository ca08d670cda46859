"""vLLM for chutes: ``from chutes.chute.template.vllm import build_vllm_chute``."""

__version__ = "0.1.0"
