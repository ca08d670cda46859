"""An engine's command-line flags: ``engine_args`` turned into flags, and the
flags a template sets itself refused."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chutes_core.errors import InvalidValueError

#: What ``engine_args`` may be: flag names to values, a command-line string, or nothing.
EngineArgs = Mapping[str, Any] | str | None

#: Where the tensor-parallel size comes from, for owned-flag errors.
TP_FROM_GPUS = "node_selector.gpu_count"

#: The flags :meth:`~chutes_core.engines.process.OpenAIServerEngine.server_flags` sets,
#: and why users may not.
SERVER_FLAGS: Mapping[str, str] = {
    "--host": "the template (the engine listens on loopback only)",
    "--port": "the template (the chute forwards to that port)",
    "--api-key": "the template (a random key shared by the chute and the engine)",
}

_FLAG_RE = re.compile(r"^--?[A-Za-z][A-Za-z0-9_.-]*$")
_NEGATIVE_NUMBER_RE = re.compile(r"^-[0-9.]")


def standard_owned_flags(*, model: Sequence[str], tensor_parallel: Sequence[str]) -> dict[str, str]:
    """The flags an OpenAI engine template sets, spelled as the engine spells them.

    ``model`` and ``tensor_parallel`` list every spelling (aliases included)
    of the engine's model flag and tensor-parallel flag; ``--served-model-name``,
    ``--revision`` and :data:`SERVER_FLAGS` are added.
    """
    owned = dict(SERVER_FLAGS)
    owned.update(dict.fromkeys([*model, "--served-model-name"], "model_name"))
    owned["--revision"] = "revision (the model is fetched before the engine starts)"
    owned.update(dict.fromkeys(tensor_parallel, TP_FROM_GPUS))
    return owned


def engine_args_to_flags(
    engine_args: EngineArgs,
    *,
    owned: Mapping[str, str] | None = None,
    field: str = "engine_args",
) -> list[str]:
    """Turn ``engine_args`` into command-line flags, refusing the ``owned`` ones.

    A mapping becomes ``--name value`` pairs: underscores in names become
    dashes; ``True`` is a bare flag; ``False`` and ``None`` leave the flag
    out; a list or tuple repeats the flag once per item; a dict is passed as
    JSON. A name that already starts with ``-`` is used as written. A string
    is split like a shell command line.

    ``owned`` maps the flags the template sets itself to where their value
    comes from; giving one (even abbreviated, or with underscores) is an
    :class:`~chutes_core.errors.InvalidValueError` naming that source.
    """
    if engine_args is None:
        return []
    if isinstance(engine_args, str):
        try:
            argv = shlex.split(engine_args)
        except ValueError as exc:
            raise InvalidValueError(
                field, engine_args, f"a command line that splits into flags ({exc})"
            ) from None
    elif isinstance(engine_args, Mapping):
        argv = []
        for key, value in engine_args.items():
            argv += _mapped_flag(field, key, value)
    else:
        raise InvalidValueError(
            field,
            engine_args,
            "a dict of flag names to values (e.g. {'max_model_len': 4096}), "
            "a command-line string (e.g. '--max-model-len 4096') or None",
        )
    check_owned_flags(argv, owned or {}, field=field)
    return argv


def _mapped_flag(field: str, key: Any, value: Any) -> list[str]:
    if not isinstance(key, str) or not _FLAG_RE.match(key if key.startswith("-") else f"--{key}"):
        raise InvalidValueError(
            f"{field} key", key, "a flag name such as 'max_model_len' or '--max-model-len'"
        )
    flag = key if key.startswith("-") else "--" + key.replace("_", "-")
    if value is True:
        return [flag]
    if value is False or value is None:
        return []
    if isinstance(value, (list, tuple)):
        flags: list[str] = []
        for item in value:
            flags += [flag, _scalar(f"{field}[{key!r}] item", item)]
        return flags
    if isinstance(value, Mapping):
        return [flag, json.dumps(value, separators=(",", ":"))]
    return [flag, _scalar(f"{field}[{key!r}]", value)]


def _scalar(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidValueError(field, value, "a string or a number")
    return str(value)


def flag_names(argv: Iterable[str]) -> list[str]:
    """The flags in ``argv`` (values skipped), normalised: ``--max_model_len=8`` → ``--max-model-len``."""
    names = []
    for token in argv:
        if not token.startswith("-") or _NEGATIVE_NUMBER_RE.match(token):
            continue
        name = token.split("=", 1)[0]
        dashes = len(name) - len(name.lstrip("-"))
        names.append(name[:dashes] + name[dashes:].replace("_", "-"))
    return names


def check_owned_flags(argv: Sequence[str], owned: Mapping[str, str], *, field: str) -> None:
    """Refuse any flag in ``argv`` that the template sets itself.

    Abbreviations count too (argparse would expand ``--served-model`` to
    ``--served-model-name``).
    """
    for name in flag_names(argv):
        if name in owned:
            raise InvalidValueError(
                field,
                name,
                f"a flag the template does not set itself; {name} comes from {owned[name]}",
            )
        if name.startswith("--") and len(name) > 2:
            for full in owned:
                if full.startswith(name):
                    raise InvalidValueError(
                        field,
                        name,
                        f"a flag the template does not set itself; {name} abbreviates {full}, "
                        f"which comes from {owned[full]}",
                    )
