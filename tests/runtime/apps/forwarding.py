"""Passthrough cords in front of the upstream stand-in (port in UPSTREAM_PORT)."""

import os

from chutes.chute import Chute
from chutes_core.engines.process import OpenAIServerEngine

PORT = int(os.environ["UPSTREAM_PORT"])
chute = Chute(username="test", name="forwarding", concurrency=8)
# Attached but not started: requests forwarded to its port carry its API key.
engine = OpenAIServerEngine("upstream", port=PORT, api_key="sekret").attach(chute)


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/chat/completions")
async def chat(self, data):
    """Forwarded."""


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/models", method="GET")
async def models(self):
    """Forwarded."""


@chute.cord(
    passthrough=True, passthrough_port=PORT, public_api_path="/oops", passthrough_path="/v1/fail"
)
async def oops(self):
    """Forwarded to a path that fails."""


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/upload")
async def upload(self):
    """Forwarded, with a streamed request body."""


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/big", method="GET")
async def big(self):
    """Forwarded, with a streamed response body."""


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/echo")
async def echo(self):
    """Forwarded as POST; the upstream says what it received."""


@chute.cord(
    passthrough=True,
    passthrough_port=PORT,
    public_api_path="/v1/echo_get",
    passthrough_path="/v1/echo",
    method="GET",
)
async def echo_get(self):
    """Forwarded as GET."""


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/gzip", method="GET")
async def gzipped(self):
    """Forwarded; the engine compresses its answer."""


@chute.cord(passthrough=True, passthrough_port=1, public_api_path="/nowhere")
async def nowhere(self):
    """Forwarded to a port nothing listens on."""


@chute.cord(passthrough=True, passthrough_port=PORT, public_api_path="/v1/slow")
async def slow(self):
    """Forwarded to an upstream that takes its time before its headers."""


@chute.cord(
    passthrough=True,
    passthrough_port=PORT,
    public_api_path="/impatient",
    passthrough_path="/v1/slow",
    passthrough_read_timeout=0.5,
)
async def impatient(self):
    """The same upstream, with an idle-read timeout of half a second."""


if os.environ.get("WITH_MIDDLEWARE"):

    class Tagging:
        """A user's ASGI middleware: passthrough must go through it, not around it."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            async def tagged(message):
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), (b"x-user-middleware", b"1")]
                await send(message)

            await self.app(scope, receive, tagged)

    chute.add_middleware(Tagging)
