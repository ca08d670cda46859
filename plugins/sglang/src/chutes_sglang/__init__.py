"""SGLang for chutes: ``from chutes.chute.template.sglang import build_sglang_chute``."""

__version__ = "0.1.0"
