"""The client for a Chutes-compatible platform API.

Configuration lives in ``~/.chutes/config.ini`` (or the file named by
``CHUTES_CONFIG_PATH``)::

    [api]
    base_url = https://api.chutes.ai

    [auth]
    username = me
    api_key = cpk_...

``CHUTES_API_URL`` overrides ``base_url`` and ``CHUTES_API_KEY`` the key (then
no file is needed: what CI uses). Every request carries the key in the
``Authorization`` header; a config written by ``chutes register`` has no key
but a hotkey (``[auth] hotkey_seed``), and then each request is signed with
it (:mod:`chutes_cli.wallet`). Errors become :class:`PlatformError` with one
line that says what to do, and an ``exit_code`` (:mod:`chutes_cli.exits`).
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
#: What to do about a refusal, by HTTP status (401/403 name the config file instead).
WHAT_TO_DO = {
    402: "; top up the account's balance, or accept the fee where the command has --accept-fee",
    404: "; check the name or id (`chutes chutes list`, `chutes images list`)",
    409: "; it exists already: delete it first or pick another name",
    422: "; the platform rejected the request's fields: run `chutes validate` and check the options",
    429: "; the platform is rate limiting: wait a little and run it again",
}
SERVER_ERROR_HINT = "; the platform failed: run it again later"


class PlatformError(ChutesError):
    """The platform refused a request, or could not be reached or configured."""

    #: The exit status for a refusal (an HTTP error answer); see :mod:`chutes_cli.exits`.
    exit_code = 3

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        self.status = status
        self.body = body
        super().__init__(message)


class PlatformConfigError(PlatformError):
    """No usable configuration here; nothing was sent."""

    exit_code = 2


class PlatformUnreachableError(PlatformError):
    """The API did not answer at all."""

    exit_code = 4


class NoEndpointError(PlatformError):
    """The platform's public API has no endpoint for this; nothing was sent."""

    exit_code = 5


@dataclass(frozen=True)
class PlatformConfig:
    base_url: str
    api_key: str
    username: str | None
    path: Path
    #: A hotkey seed (hex) written by ``chutes register``; requests are signed with it.
    hotkey_seed: str | None = None
    user_id: str | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> PlatformConfig:
        where = config_path(path)
        env_key = os.environ.get("CHUTES_API_KEY", "").strip()
        parser = configparser.ConfigParser()
        if where.is_file():
            try:
                parser.read(where)
            except configparser.Error as exc:
                raise PlatformConfigError(
                    f"{where} is not a valid config file: {exc}".splitlines()[0]
                ) from None
        elif not env_key:
            raise PlatformConfigError(
                f"no chutes config at {where}: run `chutes register` or `chutes auth login "
                "--api-key KEY`, set CHUTES_API_KEY, or point CHUTES_CONFIG_PATH at yours"
            )
        api_key = env_key or parser.get("auth", "api_key", fallback="").strip()
        hotkey_seed = parser.get("auth", "hotkey_seed", fallback="").strip() or None
        if not api_key and not hotkey_seed:
            raise PlatformConfigError(
                f"{where} has no [auth] api_key (nor a hotkey from `chutes register`); "
                "add one with `chutes auth login --api-key KEY` or set CHUTES_API_KEY"
            )
        from_env = os.environ.get("CHUTES_API_URL")
        base_url = str(from_env or parser.get("api", "base_url", fallback=DEFAULT_API_URL))
        if not base_url.startswith(("http://", "https://")):
            source = "CHUTES_API_URL" if from_env else f"[api] base_url in {where}"
            raise PlatformConfigError(
                f"{source} is {base_url!r}; it must start with http:// or https://"
            )
        username = parser.get("auth", "username", fallback=None)
        return cls(
            base_url=base_url.rstrip("/"),
            api_key=api_key,
            username=username,
            path=where,
            hotkey_seed=None if api_key else hotkey_seed,
            user_id=parser.get("auth", "user_id", fallback=None),
        )


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file: ``path``, else ``CHUTES_CONFIG_PATH``, else ``~/.chutes/config.ini``."""
    return Path(
        path or os.environ.get("CHUTES_CONFIG_PATH") or Path.home() / ".chutes" / "config.ini"
    )


def api_url() -> str:
    """The API base without a config file (``chutes register``): ``CHUTES_API_URL`` or the default."""
    url = os.environ.get("CHUTES_API_URL") or DEFAULT_API_URL
    if not url.startswith(("http://", "https://")):
        raise PlatformConfigError(
            f"CHUTES_API_URL is {url!r}; it must start with http:// or https://"
        )
    return url.rstrip("/")


class PlatformClient:
    """Thin, typed calls to the platform API over httpx."""

    def __init__(
        self, config: PlatformConfig, *, transport: Any = None, timeout: float = 60.0
    ) -> None:
        import httpx

        self.config = config
        headers = {"user-agent": "chutes-cli"}
        auth = None
        if config.api_key:
            headers["authorization"] = config.api_key
        elif config.hotkey_seed:
            from chutes_cli.wallet import Hotkey, WalletError, httpx_auth

            try:
                auth = httpx_auth(Hotkey.from_seed(config.hotkey_seed))
            except WalletError as exc:
                raise PlatformConfigError(f"{config.path}: {exc}") from None
        self._client = httpx.Client(
            base_url=config.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            auth=auth,
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
            raise PlatformUnreachableError(
                f"cannot reach the chutes API at {self.config.base_url}: {exc}; "
                "check the address (CHUTES_API_URL) and your network"
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def stream_lines(self, path: str, params: dict[str, Any] | None = None) -> Iterator[str]:
        """Lines of a streamed answer (build logs), as they arrive."""
        import httpx

        try:
            with self._client.stream("GET", path, params=params, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                for line in response.iter_lines():
                    yield line[6:] if line.startswith("data: ") else line
        except httpx.TransportError as exc:
            raise PlatformUnreachableError(
                f"lost the chutes API at {self.config.base_url}: {exc}; run the command again"
            ) from None

    def _error(self, response: Any) -> PlatformError:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        detail = body.get("detail", body) if isinstance(body, dict) else body
        if isinstance(detail, list):  # FastAPI's 422: [{"loc": [...], "msg": ...}, ...]
            detail = "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', ()))}: {item.get('msg')}"
                if isinstance(item, dict)
                else str(item)
                for item in detail
            )
        lines = str(detail).strip().splitlines() or [""]
        detail = lines[0][:300]  # one line, even for an HTML error page
        status = response.status_code
        if status in (401, 403):
            message = (
                f"the chutes API refused the key in {self.config.path} (HTTP {status}): {detail}; "
                "check it, or make a new one with `chutes keys create`"
            )
        else:
            hint = SERVER_ERROR_HINT if status >= 500 else WHAT_TO_DO.get(status, "")
            message = f"HTTP {status}: {detail}{hint}"
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
