"""A template-style result (a ChutePack) in a dotted package path."""

from chutes.chute import Chute, ChutePack

_chute = Chute(username="test", name="packed")


@_chute.cord(method="GET")
async def hello(self) -> str:
    return "hello from a pack"


@_chute.cord(path="/internal_name", public_api_path="/public/name", method="GET")
async def renamed(self) -> str:
    return "renamed"


pack = ChutePack(_chute, hello=hello, renamed=renamed)
