"""The model a template serves: its revision, and the chute name it gives."""

from __future__ import annotations

import logging
import os
import re

from chutes_core.engines.hub import is_local
from chutes_core.errors import InvalidValueError

log = logging.getLogger("chutes.templates")

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


def check_revision(template: str, model_name: str, revision: str | None) -> str | None:
    """The revision to serve: required for a hub model, optional for a local path."""
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise InvalidValueError(f"{template}(revision)", revision, "a commit hash (a string)")
    if revision is None and not is_local(model_name):
        raise InvalidValueError(
            f"{template}(revision)",
            None,
            f"the commit of {model_name!r} to serve, so that every instance serves the same "
            f"weights: pass {template}(..., revision=<commit>). {_find_commit(model_name)}",
        )
    if revision is not None and not _SHA_RE.match(revision):
        log.warning(
            "%s: revision %r of %s is not a commit hash; a branch or tag can move, so "
            "instances started later may serve other weights",
            template,
            revision,
            model_name,
        )
    return revision


def _find_commit(model_name: str) -> str:
    """How to find the commit: the hub's answer when it is reachable, else the command to run."""
    command = (
        f'`python -c "import huggingface_hub; '
        f"print(huggingface_hub.model_info('{model_name}').sha)\"`"
    )
    sha = None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in {"1", "true", "yes", "on"}:
        try:
            import huggingface_hub

            sha = huggingface_hub.model_info(model_name, timeout=10).sha
        except Exception:  # not installed, unreachable, unknown model: say how to look
            sha = None
    if isinstance(sha, str) and sha:
        return f"The hub's current commit of main is revision={sha!r}."
    return f"Find it with {command}, or on https://huggingface.co/{model_name}/commits/main."


def chute_name_for(model_name: str, *, default: str | None = None) -> str:
    """A valid chute name from a model name: ``org/Model-1.5B`` → ``org-model-1-5b``.

    A local path contributes only its last component. When nothing usable is
    left, ``default`` if given, else an error.
    """
    source = os.path.basename(model_name.rstrip("/")) if is_local(model_name) else model_name
    name = re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-")[:63].rstrip("-")
    if not name and default is not None:
        return default
    if not name:
        raise InvalidValueError("model_name", model_name, "a model name; or pass name= explicitly")
    return name
