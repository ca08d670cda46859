"""The same trivial JSON work as a chute."""

from pydantic import BaseModel

from chutes.chute import Chute

chute = Chute(username="bench", name="trivial", concurrency=1024)


class Text(BaseModel):
    text: str


@chute.cord()
async def echo(self, body: Text) -> dict:
    return {"text": body.text}
