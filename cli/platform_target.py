"""The built-in deploy target: the Chutes platform (``chutes deploy REF``, ``--target platform``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chutes_core.deploy_targets import (
    DeployContext,
    DeployOption,
    DeployTarget,
    UndeployNotSupportedError,
)
from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    from chutes_core.chute import Chute

NAME = "platform"


class PlatformTarget(DeployTarget):
    """Upload the chute's source and description to the platform API (``~/.chutes/config.ini``)."""

    description = "the Chutes platform (configured in ~/.chutes/config.ini)"
    options = (
        DeployOption("accept_fee", "Accept the deployment fee.", type=bool),
        DeployOption("public", "Make the chute public.", type=bool),
        DeployOption("logo", "A logo image for the chute.", type=Path),
        DeployOption("config_path", "Platform config file.", type=Path),
    )

    def deploy(
        self,
        ref: str,
        chute: Chute,
        *,
        context: DeployContext,
        accept_fee: bool = False,
        public: bool = False,
        logo: Path | None = None,
        config_path: Path | None = None,
        **_: Any,
    ) -> str:
        from chutes_cli.platform import PlatformClient, PlatformConfig, PlatformError, chute_payload

        source = _source_file(ref)
        if not context.confirm(f"Upload {source.name} and deploy {chute.name}?"):
            raise ChutesError("not deployed: nothing was uploaded (answer yes, or pass --yes)")
        with PlatformClient(PlatformConfig.load(config_path)) as client:
            logo_id = client.upload_logo(logo) if logo else None
            payload = chute_payload(chute, ref=ref, source=source, public=public, logo_id=logo_id)
            context.debug(json.dumps(payload, indent=2, default=str))
            try:
                answer = client.deploy(payload, accept_fee=accept_fee)
            except PlatformError as exc:
                if exc.status == 402:
                    fee = _fee(exc.body)
                    raise PlatformError(
                        f"deploying {chute.name} costs "
                        f"{f'${fee}' if fee is not None else 'a fee'} (one time); "
                        "run again with --accept-fee to accept it",
                        exc.status,
                        exc.body,
                    ) from None
                if exc.status == 409:
                    raise PlatformError(
                        f"a chute named {chute.name!r} already exists; "
                        f"delete it (chutes chutes delete {chute.name}) or choose another name",
                        exc.status,
                        exc.body,
                    ) from None
                raise
        return (
            f"deployed chute {chute.name} chute_id={answer['chute_id']} version={answer['version']}"
        )

    def undeploy(self, ref_or_name: str, *, context: DeployContext, **options: Any) -> str:
        raise UndeployNotSupportedError("use `chutes chutes delete NAME` for the platform")


def _fee(body: Any) -> Any:
    """The fee in a 402 answer: ``{"detail": {"fee": ...}}`` or ``{"fee": ...}``."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if isinstance(detail, dict) and "fee" in detail:
        return detail["fee"]
    return body.get("fee")


def _source_file(ref: str) -> Path:
    """The file holding the chute's module (loaded already by ``load_ref``)."""
    import sys

    target = ref.partition(":")[0]
    if target.endswith(".py"):
        return Path(target)
    module = sys.modules[target]
    return Path(module.__file__ or "")
