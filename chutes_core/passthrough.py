"""The request a passthrough cord forwards, as plugins see it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UpstreamRequest:
    """Where and how a passthrough request goes.

    The runtime fills it from the cord and the incoming request, lets the
    ``passthrough`` hooks adjust it, then forwards it to
    ``http://{host}:{port}{path}?{query}``. ``headers`` holds the headers to
    send, lower-cased; hop-by-hop headers are already removed.
    """

    method: str
    path: str
    port: int
    host: str = "127.0.0.1"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        tail = f"?{self.query}" if self.query else ""
        return f"http://{self.host}:{self.port}{self.path}{tail}"
