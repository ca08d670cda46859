"""The client for a Chutes-compatible platform API.

Configuration lives in ``~/.chutes/config.ini`` (or the file named by
``CHUTES_CONFIG_PATH``)::

    [api]
    base_url = https://api.chutes.ai

    [auth]
    username = me
    api_key = cpk_...

``CHUTES_API_URL`` overrides ``base_url``. Every request carries the key in
the ``Authorization`` header. Errors become :class:`PlatformError` with one
line that says what to do.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.image import Image

DEFAULT_API_URL = "https://api.chutes.ai"


class PlatformError(ChutesError):
    """The platform refused a request, or could not be reached or configured."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        self.status = status
        self.body = body
        super().__init__(message)


@dataclass(frozen=True)
class PlatformConfig:
    base_url: str
    api_key: str
    username: str | None
    path: Path

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> PlatformConfig:
        where = Path(
            path or os.environ.get("CHUTES_CONFIG_PATH") or Path.home() / ".chutes" / "config.ini"
        )
        if not where.is_file():
            raise PlatformError(
                f"no chutes config at {where}: create it with [auth] api_key = ... "
                "(see docs/deploy.md), or point CHUTES_CONFIG_PATH at yours"
            )
        parser = configparser.ConfigParser()
        try:
            parser.read(where)
        except configparser.Error as exc:
            raise PlatformError(
                f"{where} is not a valid config file: {exc}".splitlines()[0]
            ) from None
        api_key = parser.get("auth", "api_key", fallback="").strip()
        if not api_key:
            raise PlatformError(f"{where} has no [auth] api_key")
        from_env = os.environ.get("CHUTES_API_URL")
        base_url = str(from_env or parser.get("api", "base_url", fallback=DEFAULT_API_URL))
        if not base_url.startswith(("http://", "https://")):
            source = "CHUTES_API_URL" if from_env else f"[api] base_url in {where}"
            raise PlatformError(f"{source} is {base_url!r}; it must start with http:// or https://")
        username = parser.get("auth", "username", fallback=None)
        return cls(base_url=base_url.rstrip("/"), api_key=api_key, username=username, path=where)


class PlatformClient:
    """Thin, typed calls to the platform API over httpx."""

    def __init__(
        self, config: PlatformConfig, *, transport: Any = None, timeout: float = 60.0
    ) -> None:
        import httpx

        self.config = config
        self._client = httpx.Client(
            base_url=config.base_url,
            headers={"authorization": config.api_key, "user-agent": "chutes-cli"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise PlatformError(
                f"cannot reach the chutes API at {self.config.base_url}: {exc}"
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def stream_lines(self, path: str) -> Iterator[str]:
        """Lines of a streamed answer (build logs), as they arrive."""
        with self._client.stream("GET", path, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise self._error(response)
            for line in response.iter_lines():
                yield line[6:] if line.startswith("data: ") else line

    def _error(self, response: Any) -> PlatformError:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        detail = body.get("detail", body) if isinstance(body, dict) else body
        lines = str(detail).strip().splitlines() or [""]
        detail = lines[0][:300]  # one line, even for an HTML error page
        status = response.status_code
        if status in (401, 403):
            message = (
                f"the chutes API refused the key in {self.config.path} (HTTP {status}): {detail}"
            )
        else:
            message = f"HTTP {status}: {detail}"
        return PlatformError(message, status, body)

    # Images and chutes -------------------------------------------------------------
    def build_image(self, image: Image, *, dockerfile: str, context: bytes, public: bool) -> str:
        """Send an image build (the Dockerfile and a gzipped context); returns its id."""
        answer = self.request(
            "POST",
            "/images/",
            data={
                "username": image.username,
                "name": image.name,
                "tag": image.tag,
                "readme": image.readme,
                "public": str(public).lower(),
                "dockerfile": dockerfile,
            },
            files={"context": ("context.tar.gz", context, "application/gzip")},
        )
        return str(answer["image_id"])

    def deploy(self, payload: dict[str, Any], *, accept_fee: bool) -> Any:
        params = {"accept_fee": "true"} if accept_fee else {}
        return self.request("POST", "/chutes/", json=payload, params=params)

    def upload_logo(self, path: Path) -> str:
        with path.open("rb") as image:
            answer = self.request("POST", "/logos/", files={"logo": (path.name, image)})
        return str(answer["logo_id"])


def chute_payload(
    chute: Chute, *, ref: str, source: Path, public: bool, logo_id: str | None
) -> dict[str, Any]:
    """What ``chutes deploy`` sends: the chute as described, plus its code and reference.

    The code is the chute's module file; the reference is rewritten to name
    that file as a module (``path/to/app.py:chute`` becomes ``app:chute``),
    which is how the platform imports the code it stores.
    """
    attr = ref.partition(":")[2] or "chute"
    payload = chute.to_dict()
    payload.update(
        {
            "ref_str": f"{source.stem}:{attr}",
            "code": source.read_text(),
            "filename": source.name,
            "public": public,
            "logo_id": logo_id,
        }
    )
    return payload
