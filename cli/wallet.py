"""Bittensor hotkeys: read one from a wallet folder, sign with it, verify a signature.

A standard Bittensor wallet folder looks like::

    ~/.bittensor/wallets/<wallet>/coldkeypub.txt       {"ss58Address": ...}
    ~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>     {"secretSeed": "0x...", "ss58Address": ...}

Signatures are sr25519 (schnorrkel), made by ``py-sr25519-bindings``; SS58
addresses are encoded by ``scalecodec``. Both come with the optional
``wallet`` extra (``pip install 'chutes[wallet]'``), so the core stays light.
No cryptography is written here.

The platform checks a signed request by rebuilding ``hotkey:nonce:sha256(body)``
(or ``hotkey:nonce:purpose`` for a request without a body) from the
``X-Chutes-Hotkey``, ``X-Chutes-Nonce`` and ``X-Chutes-Signature`` headers; the
nonce is the time in seconds and must be within ten minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chutes_core.errors import ChutesError

HOTKEY_HEADER = "X-Chutes-Hotkey"
NONCE_HEADER = "X-Chutes-Nonce"
SIGNATURE_HEADER = "X-Chutes-Signature"
SS58_FORMAT = 42  # the generic Substrate prefix Bittensor uses
INSTALL_HINT = "pip install 'chutes[wallet]' (py-sr25519-bindings and scalecodec)"


class WalletError(ChutesError):
    """A wallet or hotkey that cannot be read or used; nothing was sent."""

    exit_code = 2


def default_wallets_path() -> Path:
    return Path(os.environ.get("BT_WALLET_PATH") or Path.home() / ".bittensor" / "wallets")


def _sr25519() -> Any:
    try:
        import sr25519
    except ImportError:
        raise WalletError(f"signing with a hotkey needs sr25519: {INSTALL_HINT}") from None
    return sr25519


def ss58_encode(public_key: bytes) -> str:
    try:
        from scalecodec.utils.ss58 import ss58_encode as encode
    except ImportError:
        raise WalletError(f"SS58 addresses need scalecodec: {INSTALL_HINT}") from None
    return str(encode(public_key, SS58_FORMAT))


def ss58_decode(address: str) -> bytes:
    try:
        from scalecodec.utils.ss58 import ss58_decode as decode
    except ImportError:
        raise WalletError(f"SS58 addresses need scalecodec: {INSTALL_HINT}") from None
    try:
        return bytes.fromhex(decode(address))
    except (ValueError, TypeError) as exc:
        raise WalletError(f"{address!r} is not an SS58 address: {exc}") from None


def signing_message(hotkey: str, nonce: str, body: bytes | None, purpose: str = "") -> str:
    """What the platform verifies: ``hotkey:nonce:sha256(body)``, or the purpose without one."""
    if body:
        return f"{hotkey}:{nonce}:{hashlib.sha256(body).hexdigest()}"
    return f"{hotkey}:{nonce}:{purpose}"


def verify(address: str, message: bytes, signature_hex: str) -> bool:
    """Whether ``signature_hex`` is the hotkey at ``address`` signing ``message``."""
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    return bool(_sr25519().verify(signature, message, ss58_decode(address)))


@dataclass(frozen=True)
class Hotkey:
    """A hotkey's seed and address; ``name`` is its file name in the wallet."""

    seed_hex: str
    ss58_address: str
    name: str = ""

    @classmethod
    def from_seed(cls, seed_hex: str, *, name: str = "") -> Hotkey:
        seed = seed_hex.removeprefix("0x")
        try:
            raw = bytes.fromhex(seed)
        except ValueError:
            raise WalletError("the hotkey seed is not hexadecimal") from None
        if len(raw) != 32:
            raise WalletError(f"a hotkey seed is 32 bytes; this one is {len(raw)}")
        public, _secret = _sr25519().pair_from_seed(raw)
        return cls(seed_hex=seed, ss58_address=ss58_encode(public), name=name)

    def sign(self, message: bytes) -> str:
        sr25519 = _sr25519()
        keypair = sr25519.pair_from_seed(bytes.fromhex(self.seed_hex))
        return bytes(sr25519.sign(keypair, message)).hex()

    def signed_headers(self, body: bytes | None, purpose: str = "") -> dict[str, str]:
        nonce = str(int(time.time()))
        message = signing_message(self.ss58_address, nonce, body, purpose)
        return {
            HOTKEY_HEADER: self.ss58_address,
            NONCE_HEADER: nonce,
            SIGNATURE_HEADER: self.sign(message.encode()),
        }


@dataclass(frozen=True)
class Wallet:
    """A wallet folder: the coldkey's public address and one hotkey."""

    name: str
    coldkey_ss58: str
    hotkey: Hotkey

    @classmethod
    def load(cls, wallet: str, hotkey: str, wallets_path: Path | None = None) -> Wallet:
        root = (wallets_path or default_wallets_path()).expanduser() / wallet
        if not root.is_dir():
            raise WalletError(
                f"no wallet {wallet!r} at {root}; create one with `btcli wallet new_coldkey "
                f"--wallet.name {wallet}` or pass --wallets-path/--wallet"
            )
        hotkey_file = root / "hotkeys" / hotkey
        if not hotkey_file.is_file():
            have = sorted(p.name for p in (root / "hotkeys").glob("*") if p.is_file())
            raise WalletError(
                f"no hotkey {hotkey!r} in wallet {wallet!r} (has: {', '.join(have) or 'none'}); "
                f"create one with `btcli wallet new_hotkey --wallet.name {wallet}` or pass --hotkey"
            )
        data = _read_json(hotkey_file, "hotkey")
        seed = data.get("secretSeed")
        if not isinstance(seed, str):
            raise WalletError(
                f"{hotkey_file} has no secretSeed; an encrypted hotkey is not supported, "
                "regenerate it unencrypted with btcli"
            )
        key = Hotkey.from_seed(seed, name=hotkey)
        stated = data.get("ss58Address")
        if stated and stated != key.ss58_address:
            raise WalletError(
                f"{hotkey_file}: its ss58Address {stated} does not match its seed "
                f"({key.ss58_address}); the file is damaged"
            )
        coldkey = _read_json(root / "coldkeypub.txt", "coldkey public key").get("ss58Address")
        if not isinstance(coldkey, str):
            raise WalletError(f"{root / 'coldkeypub.txt'} has no ss58Address")
        return cls(name=wallet, coldkey_ss58=coldkey, hotkey=key)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WalletError(f"no {what} file at {path}") from None
    except (OSError, ValueError) as exc:
        raise WalletError(f"cannot read the {what} file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise WalletError(f"the {what} file {path} is not a JSON object")
    return data


def httpx_auth(hotkey: Hotkey) -> Any:
    """An ``httpx.Auth`` that signs every request with ``hotkey``."""
    import httpx

    class HotkeyAuth(httpx.Auth):
        requires_request_body = True

        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, Any, None]:
            purpose = request.url.path.strip("/").split("/")[0]
            request.headers.update(hotkey.signed_headers(request.content or None, purpose))
            yield request

    return HotkeyAuth()
