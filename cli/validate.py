"""``chutes validate``: check a chute without the platform, and list every problem with its fix.

The SDK stops at the first bad value it is given, so loading a chute alone
finds one problem at a time. This reads the file first and passes every
literal argument of ``Chute``, ``NodeSelector``, ``Image``, ``@chute.cord`` and
the ``build_*_chute`` templates through the SDK's own validators, one at a
time, so that all of them are reported together. When the text holds no
problem, the chute is loaded and checked as a whole: its cords, their paths
and schemas, its image and its deploy payload. Nothing is sent anywhere.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

#: Templates whose model needs a revision (a hub model without one is an error).
LLM_TEMPLATES = {"build_vllm_chute", "build_sglang_chute", "build_embedding_chute"}
IMAGE_REF_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$")  # fmt: skip
MISSING = object()


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where, what, and (in ``problem``) what is allowed instead."""

    line: int | None
    field: str
    problem: str

    def render(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {self.problem}"


def validate(
    ref: Annotated[
        str | None,
        typer.Argument(help="The chute: module:attr or path/to/file.py:attr.", show_default=False),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="The chute's file (path.py or path.py:attr)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check a chute offline, printing every problem with its fix.

    Checks names, node selector, image, cords, schemas and template arguments;
    sends nothing. Exit status 2 when there is a problem.
    """
    from chutes_cli import exits

    given = file or ref
    if not given or (file and ref):
        exits.fail("validate", "give the chute as REF or --file PATH (one of them)", code=2)
    assert given is not None
    target, _, attr = given.partition(":")
    problems: list[Problem] = []
    source = Path(target) if target.endswith(".py") else _module_file(target)
    if source is not None:
        if not source.is_file():
            exits.fail("validate", f"file {target!r} does not exist", code=exits.BAD_INPUT)
        problems = check_source(source.read_text(), str(source))
    if not problems:
        problems = check_loaded(f"{target}:{attr or 'chute'}")
    shown = str(source or target)
    if as_json:
        typer.echo(
            json.dumps(
                {"ok": not problems, "ref": given, "problems": [asdict(p) for p in problems]},
                indent=2,
            )
        )
    else:
        for problem in problems:
            typer.echo(problem.render(shown), err=True)
        typer.echo(
            f"{shown}: {len(problems)} problem(s)" if problems else f"{shown}: no problems found"
        )
    if problems:
        raise typer.Exit(exits.BAD_INPUT)


def _module_file(module: str) -> Path | None:
    """The file of ``pkg.module`` in the current directory, when it is one."""
    candidate = Path(*module.split(".")).with_suffix(".py")
    return candidate if candidate.is_file() else None


# Reading the text -------------------------------------------------------------------
def check_source(text: str, filename: str) -> list[Problem]:
    """Every problem in the literal arguments of the SDK's calls in ``text``."""
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as exc:
        return [Problem(exc.lineno, "syntax", f"syntax error: {exc.msg}; fix the Python first")]
    problems: list[Problem] = []
    cord_paths: dict[tuple[str, str], int] = {}
    decorated = {
        id(decorator): function.name
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for decorator in function.decorator_list
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        kwargs = _literal_kwargs(node)
        if name == "Chute":
            problems += _each(node, kwargs, _try_chute)
        elif name == "NodeSelector":
            problems += _each(node, kwargs, _try_node_selector)
            if len(kwargs) > 1:
                problems += _whole(node, kwargs, _try_node_selector)
        elif name == "Image":
            problems += _each(node, kwargs, _try_image)
        elif name == "cord" and isinstance(node.func, ast.Attribute):
            function = decorated.get(id(node), "cord")
            problems += _each(node, kwargs, lambda values, f=function: _try_cord(values, f))
            path = kwargs.get("public_api_path", MISSING)
            method = kwargs.get("public_api_method", "POST")
            if isinstance(path, str) and isinstance(method, str):
                if (path, method) in cord_paths:
                    problems.append(Problem(node.lineno, "cord.public_api_path",
                        f"cord.public_api_path: {method} {path} is also the cord's on line "
                        f"{cord_paths[path, method]}; give each cord its own public path"))  # fmt: skip
                cord_paths.setdefault((path, method), node.lineno)
        elif name in LLM_TEMPLATES:
            problems += _template(node, name, kwargs)
    return sorted(problems, key=lambda p: p.line or 0)


def _called(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _literal_kwargs(node: ast.Call) -> dict[str, Any]:
    values = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            continue
        try:
            values[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue  # computed at run time: checked once the chute is loaded
    return values


def _each(node: ast.Call, kwargs: dict[str, Any], attempt: Any) -> list[Problem]:
    found = []
    for key, value in kwargs.items():
        message = attempt({key: value})
        if message:
            found.append(Problem(node.lineno, key, message))
    return found


def _whole(node: ast.Call, kwargs: dict[str, Any], attempt: Any) -> list[Problem]:
    if any(attempt({k: v}) for k, v in kwargs.items()):
        return []  # already reported field by field
    message = attempt(kwargs)
    return [Problem(node.lineno, "", message)] if message else []


def _try_chute(values: dict[str, Any]) -> str | None:
    from chutes_core.chute import Chute
    from chutes_core.errors import ChutesError

    try:
        Chute(**{"username": "valid", "name": "valid", **values})
    except (ChutesError, TypeError) as exc:
        return _one_line(exc)
    return None


def _try_node_selector(values: dict[str, Any]) -> str | None:
    from pydantic import ValidationError

    from chutes_core.node_selector import NodeSelector

    try:
        NodeSelector(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "NodeSelector"
        info = NodeSelector.model_fields.get(field)
        allowed = f"; {info.description}" if info and info.description else ""
        return f"NodeSelector.{field}: got {error.get('input')!r}; {error['msg']}{allowed}"
    return None


def _try_image(values: dict[str, Any]) -> str | None:
    from chutes_core.errors import ChutesError
    from chutes_core.image import Image

    try:
        Image(**{"username": "valid", "name": "valid", "tag": "valid", **values})
    except (ChutesError, TypeError) as exc:
        return _one_line(exc)
    return None


def _try_cord(values: dict[str, Any], function: str) -> str | None:
    from chutes_core.chute import Chute
    from chutes_core.errors import ChutesError

    if any(key.endswith("schema") for key in values):
        return None  # schemas are classes: checked once loaded

    async def probe(self: Any) -> dict[str, str]:
        return {}

    probe.__name__ = probe.__qualname__ = function
    try:
        Chute(username="valid", name="valid").cord(**values)(probe)
    except (ChutesError, TypeError) as exc:
        return _one_line(exc)
    return None


def _template(node: ast.Call, name: str, kwargs: dict[str, Any]) -> list[Problem]:
    from chutes_core.engines.model import check_revision
    from chutes_core.errors import ChutesError
    from chutes_core.validation import check_name

    found = []
    if "username" in kwargs:
        try:
            check_name(f"{name}(username)", kwargs["username"])
        except ChutesError as exc:
            found.append(Problem(node.lineno, "username", _one_line(exc)))
    model = kwargs.get("model_name", MISSING)
    dynamic = {k.arg for k in node.keywords} - set(kwargs)
    if isinstance(model, str) and "revision" not in dynamic:
        try:
            check_revision(name, model, kwargs.get("revision"))
        except ChutesError as exc:
            found.append(Problem(node.lineno, "revision", _one_line(exc)))
    return found


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# Loading it ---------------------------------------------------------------------------
def check_loaded(ref: str) -> list[Problem]:
    """Problems only the loaded chute shows: loading itself, cords, schemas, image, payload."""
    from chutes_core.errors import ChutesError
    from chutes_core.refs import load_ref

    try:
        chute = load_ref(ref)
    except ChutesError as exc:
        return [Problem(None, "ref", f"{_one_line(exc)}; fix it, then validate again")]
    except Exception as exc:  # a template raising while it builds
        return [Problem(None, "ref", f"loading {ref} failed: {type(exc).__name__}: {exc}")]
    problems: list[Problem] = []
    if not (chute.cords or chute.jobs or chute.websockets):
        problems.append(Problem(None, "cords", "the chute has no cords, jobs or websockets; "
                                "add one with @chute.cord(public_api_path=...)"))  # fmt: skip
    seen: dict[tuple[str, str], str] = {}
    for cord in chute.cords:
        described = cord.to_dict()
        key = (str(described.get("public_api_path")), str(described.get("public_api_method")))
        if key in seen and key[0] != "None":
            problems.append(Problem(None, "cords", f"cords {seen[key]} and {cord.name} both "
                                    f"answer {key[1]} {key[0]}; give each its own public_api_path"))  # fmt: skip
        seen.setdefault(key, cord.name)
        try:
            json.dumps(described)
        except (TypeError, ValueError) as exc:
            problems.append(Problem(None, f"cord {cord.name}", f"cord {cord.name}: its schemas "
                                    f"are not JSON ({exc}); use pydantic models for them"))  # fmt: skip
    image = chute.image
    if isinstance(image, str) and not IMAGE_REF_RE.match(image):
        problems.append(Problem(None, "image", f"Chute.image: got {image!r}; an image reference "
                                "such as 'user/name:tag' (lowercase, no spaces)"))  # fmt: skip
    try:
        json.dumps(chute.to_dict())
    except (TypeError, ValueError) as exc:
        problems.append(Problem(None, "payload", f"the deploy payload is not JSON ({exc})"))
    return problems
