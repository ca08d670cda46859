"""Signed requests: RFC 9421 HTTP Message Signatures with Ed25519, shared by client and host.

A signed request carries ``Content-Digest`` (RFC 9530, SHA-256 of the body),
``Signature-Input`` and ``Signature``. The signature covers the method, the
path, the query and the digest, with a creation time and a random nonce the
host uses to refuse replays. The cryptography is the ``http-message-signatures``
and ``cryptography`` libraries' (install ``chutes[signing]``); nothing here is
hand-rolled.

Keys are raw Ed25519 keys in base64 (32 bytes each), or PEM. Make a pair with
:func:`generate_keypair` (``python -m chutes_core.signing``): the host trusts
the public half (``CHUTES_SIGNATURE_KEYS=<key id>=<public key>``), the client
signs with the private half (``CHUTES_SIGNING_KEY`` and ``CHUTES_SIGNING_KEY_ID``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import httpx

from chutes_core.errors import ChutesError

__all__ = [
    "COVERED",
    "TAG",
    "BearerAuth",
    "RequestSigner",
    "SignatureAuth",
    "auth_from_env",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
]

#: What every signature must cover.
COVERED = ("@method", "@path", "@query", "content-digest")
#: The signed application tag (``tag=`` in ``Signature-Input``).
TAG = "chutes"


def _key_bytes(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        return data
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ChutesError("an Ed25519 key is 32 bytes in base64, or PEM")
    return raw


def load_public_key(text: str | bytes) -> Any:
    """An ``Ed25519PublicKey`` from base64 (32 raw bytes) or PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _key_bytes(text)
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ChutesError("the PEM key is not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(data)


def load_private_key(text: str | bytes) -> Any:
    """An ``Ed25519PrivateKey`` from base64 (the 32-byte seed), PEM, or a file holding either."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(text, str) and not text.strip().startswith("-----") and os.path.isfile(text):
        text = Path(text).read_bytes()
    data = _key_bytes(text)
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ChutesError("the PEM key is not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(data)


def generate_keypair() -> tuple[str, str]:
    """A new ``(private, public)`` Ed25519 pair, each 32 raw bytes in base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    seed = private.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed).decode(), base64.b64encode(public).decode()


class RequestSigner:
    """Signs requests with one Ed25519 private key, known to the host as ``key_id``."""

    def __init__(self, key_id: str, private_key: Any) -> None:
        from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

        if isinstance(private_key, (str, bytes)):
            private_key = load_private_key(private_key)
        self.key_id = key_id
        self._signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: private_key}),
        )

    def sign(self, message: Any, body: bytes, *, created: Any = None) -> None:
        """Sign ``message`` in place: an object with ``method``, ``url`` and writable
        ``headers`` (an ``httpx.Request`` is one). ``created`` (a datetime) is for tests."""
        if "content-digest" in message.headers:
            del message.headers["content-digest"]
        self._signer.sign(
            message,
            key_id=self.key_id,
            created=created,
            nonce=os.urandom(16).hex(),
            tag=TAG,
            covered_component_ids=COVERED[:-1],  # the digest is added with the body
            body=body,
        )


class SignatureAuth(httpx.Auth):
    """``httpx`` auth signing each request (``httpx.Client(auth=SignatureAuth(...))``)."""

    requires_request_body = True

    def __init__(self, key_id: str, private_key: Any) -> None:
        self.signer = RequestSigner(key_id, private_key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
        self.signer.sign(request, request.content)
        yield request


class BearerAuth(httpx.Auth):
    """``httpx`` auth sending ``Authorization: Bearer <key>``."""

    def __init__(self, key: str) -> None:
        self.header = f"Bearer {key}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
        request.headers["authorization"] = self.header
        yield request


def auth_from_env(environ: Mapping[str, str] | None = None) -> httpx.Auth | None:
    """The client auth configured by the environment, or ``None``.

    ``CHUTES_SIGNING_KEY`` (a key, or a file holding one) with
    ``CHUTES_SIGNING_KEY_ID`` signs each request; ``CHUTES_API_KEY`` sends a
    bearer key.
    """
    env = os.environ if environ is None else environ
    key = env.get("CHUTES_SIGNING_KEY")
    if key:
        key_id = env.get("CHUTES_SIGNING_KEY_ID")
        if not key_id:
            raise ChutesError("CHUTES_SIGNING_KEY needs CHUTES_SIGNING_KEY_ID, its id on the host")
        return SignatureAuth(key_id, key)
    api_key = env.get("CHUTES_API_KEY")
    if api_key:
        return BearerAuth(api_key)
    return None


if __name__ == "__main__":
    private_b64, public_b64 = generate_keypair()
    print(f"CHUTES_SIGNING_KEY={private_b64}  # the client's, secret")
    print(f"CHUTES_SIGNATURE_KEYS=<key id>={public_b64}  # the host's")
