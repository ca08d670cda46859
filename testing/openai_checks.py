"""End-to-end checks for a chute that serves an OpenAI-compatible API.

>>> summary = check_openai_api(chute.url, "my-model")

Uses the official ``openai`` client (``pip install openai``), as users do:
a chat completion, a streamed chat completion (which must arrive in several
chunks), a text completion and the model list. ``ignore_eos`` is sent so a
tiny random model still produces ``max_tokens`` tokens; vLLM and SGLang both
accept it. Raises :class:`~chutes_testing.ConformanceError` naming what
is wrong.
"""

from __future__ import annotations

from typing import Any

from chutes_testing.conformance import ConformanceError

__all__ = ["check_openai_api", "openai_client"]


def openai_client(base_url: str, *, timeout: float = 120.0) -> Any:
    """An ``openai.OpenAI`` client for the chute at ``base_url`` (ignoring proxy settings)."""
    import openai

    return openai.OpenAI(
        base_url=f"{base_url.rstrip('/')}/v1",
        api_key="chutes-does-not-check-this",
        max_retries=0,
        timeout=timeout,
        http_client=openai.DefaultHttpxClient(trust_env=False, timeout=timeout),
    )


def check_openai_api(base_url: str, model: str, *, max_tokens: int = 8) -> dict[str, Any]:
    """Run the four checks; returns what each produced, for further assertions."""
    client = openai_client(base_url)
    messages = [{"role": "user", "content": "Hello, how are you today?"}]
    sampling = {"max_tokens": max_tokens, "extra_body": {"ignore_eos": True}}

    chat = client.chat.completions.create(model=model, messages=messages, **sampling)
    _require(chat.model == model, f"chat answered for model {chat.model!r}, not {model!r}")
    _require(
        isinstance(chat.choices[0].message.content, str) and chat.usage.completion_tokens > 0,
        f"chat gave no text: {chat}",
    )

    stream = client.chat.completions.create(model=model, messages=messages, stream=True, **sampling)
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    _require(len(texts) >= 2, f"the stream brought {len(texts)} text chunk(s), not several")
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    _require(finish[-1] == "length", f"the stream ended with finish_reason {finish[-1]!r}")

    completion = client.completions.create(model=model, prompt="The quick brown fox", **sampling)
    _require(
        completion.usage.completion_tokens == max_tokens,
        f"the completion made {completion.usage.completion_tokens} tokens, not {max_tokens}",
    )

    models = [entry.id for entry in client.models.list()]
    _require(model in models, f"the model list {models} lacks {model!r}")
    return {"chat": chat, "chunks": chunks, "completion": completion, "models": models}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)
