"""Who may call the host: no one checked, static bearer keys, or signed requests.

The mode comes from the environment (``CHUTES_AUTH``, else inferred from which
keys are configured):

``none``
    Every caller is served (the default; ``chutes run`` refuses it on a
    non-loopback address in production mode unless ``--no-auth`` is given).
``bearer``
    ``Authorization: Bearer <key>`` with one of ``CHUTES_API_KEYS`` (comma
    separated) or the lines of ``CHUTES_API_KEYS_FILE``. Keys are compared in
    constant time.
``signature``
    RFC 9421 signatures with Ed25519 (see :mod:`chutes_core.signing`), by the
    public keys in ``CHUTES_SIGNATURE_KEYS`` (``id=base64,...``) or the lines
    of ``CHUTES_SIGNATURE_KEYS_FILE`` (``id base64``). A signature must cover
    the method, path, query and the body's digest, be created within
    ``CHUTES_SIGNATURE_MAX_AGE`` seconds (30; 5 s of clock skew allowed) and
    carry a nonce not seen in that window.

Liveness and readiness stay open; everything else (cords, websockets, the
documentation, metrics, jobs) needs a valid caller once a mode is set.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OPEN_PATHS", "AuthError", "Authenticator", "from_env"]

#: Answered to anyone, whatever the mode (probes, and their Open Inference Protocol aliases).
OPEN_PATHS = frozenset({"/_chutes/live", "/_chutes/ready", "/v2/health/live", "/v2/health/ready"})
MODES = ("none", "bearer", "signature")


class AuthError(Exception):
    """The request is not authenticated; the message says why (sent as a 401)."""


class Authenticator:
    """Checks one request's credentials; ``mode`` is one of :data:`MODES`."""

    mode = "none"

    def check(self, scope: Mapping[str, Any], body: bytes) -> None:
        """Raise :class:`AuthError` unless the request may be served."""


class BearerKeys(Authenticator):
    mode = "bearer"

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys if key]
        if not self._digests:
            raise ValueError("bearer authentication needs at least one key")

    def check(self, scope: Mapping[str, Any], body: bytes) -> None:
        value = _header(scope, b"authorization")
        if value is None or not value[:7].lower() == b"bearer ":
            raise AuthError("missing credentials: send Authorization: Bearer <key>")
        digest = hashlib.sha256(value[7:].strip()).digest()
        found = False
        for known in self._digests:  # every key compared, in constant time
            found |= hmac.compare_digest(digest, known)
        if not found:
            raise AuthError("invalid bearer key")


class _Incoming:
    """A request as the signature verifier reads it (method, URL, header lines)."""

    __slots__ = ("headers", "method", "url")

    def __init__(self, scope: Mapping[str, Any]) -> None:
        # A websocket's scope has no method: its handshake is a GET.
        self.method = scope.get("method", "GET")
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        target = path + b"?" + query if query else path
        host = _header(scope, b"host") or b"localhost"
        self.url = f"http://{host.decode('latin-1')}{target.decode('latin-1')}"
        # Only the fields a signature may cover here: less for the verifier to parse.
        self.headers = _Headers([(n, v) for n, v in scope["headers"] if n in _SIGNED_FIELDS])


_SIGNED_FIELDS = frozenset({b"signature", b"signature-input", b"content-digest"})


class _Headers:
    __slots__ = ("_items", "_raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._raw = raw
        # Decoded once: the verifier reads them twice (its field parse, its resolver).
        self._items = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]

    def items(self) -> Iterable[tuple[str, str]]:
        return self._items

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower().encode() for n, _ in self._raw)


#: The components every signature must cover, as the verifier names them (serialized).
_REQUIRED = tuple(f'"{name}"' for name in ("@method", "@path", "@query", "content-digest"))


class Signatures(Authenticator):
    mode = "signature"

    def __init__(self, public_keys: Mapping[str, Any], max_age: float = 30.0) -> None:
        from http_message_signatures import (
            ContentDigest,
            HTTPMessageVerifier,
            InvalidSignature,
            MappingKeyResolver,
            algorithms,
        )

        from chutes_core.signing import TAG, load_public_key

        self._digest, self._invalid, self._tag = ContentDigest, InvalidSignature, TAG

        if not public_keys:
            raise ValueError("signature authentication needs at least one public key")
        keys = {
            key_id: load_public_key(key) if isinstance(key, (str, bytes)) else key
            for key_id, key in public_keys.items()
        }
        self._verifier = HTTPMessageVerifier(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys=keys, private_keys={}),
        )
        self.max_age = max_age
        self._max_age = datetime.timedelta(seconds=max_age)
        #: nonce -> when it may be forgotten; insertion order is (nearly) expiry order.
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self.max_nonces = 1_000_000

    def check(self, scope: Mapping[str, Any], body: bytes) -> None:
        ContentDigest, InvalidSignature = self._digest, self._invalid
        if _header(scope, b"signature") is None:
            raise AuthError("missing credentials: this host serves signed requests only")
        try:
            results = self._verifier.verify(
                _Incoming(scope), max_age=self._max_age, expect_tag=self._tag
            )
            for result in results:
                covered = result.covered_components
                missing = [name for name in _REQUIRED if name not in covered]
                if missing:
                    raise AuthError(f"the signature must cover {', '.join(missing)}")
                # The signed digest must be the body's (RFC 9530), empty bodies included.
                # The usual field (one SHA-256 member, as our clients send it) is
                # matched against hashlib's digest; any other form goes to the library.
                signed_digest = covered['"content-digest"']
                if signed_digest != _sha256_field(body):
                    ContentDigest.verify(signed_digest, body)
        except InvalidSignature as exc:
            raise AuthError(f"invalid signature: {exc}") from None
        except AuthError:
            raise
        except Exception as exc:  # malformed input the library refuses otherwise
            raise AuthError(f"invalid signature: {type(exc).__name__}: {exc}") from None
        for result in results:
            self._remember(result.nonce)

    def _remember(self, nonce: Any) -> None:
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 128:
            raise AuthError("the signature needs a nonce (16 to 128 characters)")
        now = time.monotonic()
        nonces = self._nonces
        while nonces:
            oldest, until = next(iter(nonces.items()))
            if until > now:
                break
            del nonces[oldest]
        if nonce in nonces:
            raise AuthError("replayed request: this signature's nonce was seen already")
        if len(nonces) >= self.max_nonces:
            raise AuthError("too many signed requests in the replay window; retry shortly")
        # created may be max_age in the past and 5 s in the future: remember it that long.
        nonces[nonce] = now + self.max_age + 2 * self._verifier.max_clock_skew.total_seconds()


def _sha256_field(body: bytes) -> str:
    """``Content-Digest`` as RFC 9530 serializes one SHA-256 member of ``body``."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _lines(path: str) -> list[str]:
    text = Path(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def from_env(environ: Mapping[str, str] | None = None) -> Authenticator:
    """The authenticator the environment configures (see the module docstring)."""
    env = os.environ if environ is None else environ
    api_keys = [k.strip() for k in env.get("CHUTES_API_KEYS", "").split(",") if k.strip()]
    if env.get("CHUTES_API_KEYS_FILE"):
        api_keys += _lines(env["CHUTES_API_KEYS_FILE"])
    public: dict[str, str] = {}
    for entry in env.get("CHUTES_SIGNATURE_KEYS", "").split(","):
        if entry.strip():
            key_id, sep, key = entry.strip().partition("=")
            if not sep:
                raise ValueError(f"CHUTES_SIGNATURE_KEYS: {entry!r} is not <key id>=<public key>")
            public[key_id] = key
    if env.get("CHUTES_SIGNATURE_KEYS_FILE"):
        for line in _lines(env["CHUTES_SIGNATURE_KEYS_FILE"]):
            key_id, _, key = line.partition(" ")
            public[key_id] = key.strip()
    mode = env.get("CHUTES_AUTH") or ("signature" if public else "bearer" if api_keys else "none")
    if mode not in MODES:
        raise ValueError(f"CHUTES_AUTH={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "bearer":
        return BearerKeys(api_keys)
    if mode == "signature":
        max_age = float(env.get("CHUTES_SIGNATURE_MAX_AGE", "30"))
        return Signatures(public, max_age=max_age)
    return Authenticator()
