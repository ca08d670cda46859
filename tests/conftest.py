"""Shared fixtures for the core and runtime suites."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = Path(__file__).resolve().parent / "seeds"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def seeds_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the seed examples on sys.path (and forget them afterwards)."""
    monkeypatch.syspath_prepend(str(SEEDS))
    before = set(sys.modules)
    yield SEEDS
    seeds = {path.stem for path in SEEDS.glob("*.py")}
    for name in set(sys.modules) - before:
        if name in seeds:
            del sys.modules[name]
