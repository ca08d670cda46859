"""Choosing how token vectors become one sentence vector."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chutes_core.errors import InvalidValueError

POOLING_TYPES = ("auto", "mean", "cls", "last")


def check_pooling(value: object) -> str:
    if value not in POOLING_TYPES:
        raise InvalidValueError("pooling_type", value, f"one of {', '.join(POOLING_TYPES)}")
    return str(value)


def by_name(model_name: str) -> str:
    """The usual pooling for a model family, judged by its name."""
    name = model_name.lower().rsplit("/", 1)[-1] if "/" in model_name else model_name.lower()
    if re.search(r"(^|[-_])(e5|t5|jina)", name) or name.startswith(("e5", "t5", "jina")):
        return "mean"
    if "bge" in name:
        return "cls"
    if "gte" in name or ("qwen" in name and "embed" in name):
        return "last"
    return "mean"


def declared(model_dir: Path) -> str | None:
    """The pooling a sentence-transformers model directory declares, if any."""
    modules = model_dir / "modules.json"
    folders = []
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Pooling"):
                folders.append(model_dir / module.get("path", ""))
    folders.append(model_dir / "1_Pooling")
    for folder in folders:
        config = folder / "config.json"
        if config.is_file():
            settings = json.loads(config.read_text())
            if settings.get("pooling_mode_cls_token"):
                return "cls"
            if settings.get("pooling_mode_lasttoken"):
                return "last"
            if settings.get("pooling_mode_mean_tokens"):
                return "mean"
    return None


def choose(requested: str, model_name: str, model_dir: Path | None) -> tuple[str, str]:
    """``(pooling, why)``: an explicit choice, else the model's own, else by name."""
    if requested != "auto":
        return requested, "requested"
    if model_dir is not None:
        own = declared(model_dir)
        if own is not None:
            return own, "declared by the model"
    return by_name(model_name), "chosen by model name"
