"""A chute forwarding chat completions to the upstream on UPSTREAM_PORT."""

import os

from chutes.chute import Chute

PORT = int(os.environ["UPSTREAM_PORT"])
chute = Chute(username="bench", name="forward", concurrency=1024)


@chute.cord(
    passthrough=True, passthrough_port=PORT, public_api_path="/v1/chat/completions", path="/chat"
)
async def chat(self, data):
    """Forwarded."""
