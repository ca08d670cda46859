"""The baseline: a bare FastAPI app doing the same work as the chute."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Text(BaseModel):
    text: str


@app.post("/echo")
async def echo(body: Text) -> dict:
    return {"text": body.text}
