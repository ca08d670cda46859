"""``chutes deploy`` and ``chutes undeploy``, over every installed deploy target.

The targets are the built-in ``platform`` plus those plugins register
(``register_deploy_targets``), and their options become flags of these
commands. Those are known only once plugins are loaded, so the commands on
the app take their arguments as they come and hand them to a command built
for the installed targets: ``chutes --help`` loads no plugin.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from chutes_core.deploy_targets import DeployOption, DeployTargetRegistry, RegisteredTarget
    from chutes_core.plugins import PluginManager

#: How the app registers the two commands: every argument, ``--help`` included, passes through.
PASS_THROUGH: dict[str, Any] = {
    "context_settings": {"ignore_unknown_options": True, "allow_extra_args": True},
    "add_help_option": False,
}
DEFAULT_TARGET = "platform"
#: Where first-party targets come from, for the error about a target that is not installed.
KNOWN_TARGETS = {"ray": "chutes-ray"}
REF_HELP = "The chute: module:attr, path/to/file.py:attr or pkg.module:attr."


def deploy(ctx: typer.Context) -> None:
    """Deploy a chute: to the platform, or to any installed target with --target NAME."""
    _hand_over(ctx, "deploy")


def undeploy(ctx: typer.Context) -> None:
    """Remove a deployed chute from its target (--target NAME), where the target can."""
    _hand_over(ctx, "undeploy")


def installed_targets(manager: PluginManager | None = None) -> DeployTargetRegistry:
    """The targets plugins registered, with the built-in platform target added."""
    from chutes_cli.platform_target import NAME, PlatformTarget
    from chutes_core.plugins import get_plugin_manager

    registry = (manager or get_plugin_manager()).load().deploy_targets
    if not any(entry.builtin and entry.name == NAME for entry in registry):
        registry.add_builtin(NAME, PlatformTarget())
    return registry


def _hand_over(ctx: typer.Context, verb: str) -> None:
    from chutes_core.errors import ChutesError
    from chutes_core.plugins import PluginManager

    manager = ctx.obj if isinstance(ctx.obj, PluginManager) else None
    try:
        registry = installed_targets(manager)
    except ChutesError as exc:
        _fail(verb, exc)
    build = _deploy_command if verb == "deploy" else _undeploy_command
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(verb, epilog=_targets_epilog(registry))(build(registry))
    typer.main.get_command(app).main(args=ctx.args, prog_name=f"chutes {verb}")


def _fail(verb: str, error: Exception | str, *, code: int | None = None) -> NoReturn:
    """One line on stderr, then exit: the status says who refused (:mod:`chutes_cli.exits`)."""
    from chutes_cli.exits import fail

    fail(verb, error, code=code)
    raise AssertionError("unreachable")  # fail() raises


def _targets_epilog(registry: DeployTargetRegistry) -> str:
    lines = ["Installed targets:"]
    lines += [f"{entry.name}: {entry.description or '(no description)'}" for entry in registry]
    for name, owners in registry.clashes.items():
        lines.append(f"{name}: registered by {' and '.join(owners)} (a clash)")
    return "\n\n".join(lines)


# The commands, built for the installed targets ------------------------------------
def _deploy_command(registry: DeployTargetRegistry) -> Callable[..., None]:
    names = ", ".join(registry.names())
    fixed = [
        _param("ref", str, typer.Argument(help=REF_HELP, show_default=False)),
        _param("target", str, typer.Option("--target", help=f"Where to deploy: {names}."))
        .replace(default=DEFAULT_TARGET),
        _param("yes", bool, typer.Option("--yes", "-y", envvar="CHUTES_YES", help="Do not ask for confirmation."))
        .replace(default=False),
        _param("debug", bool, typer.Option("--debug", help="Print what is sent.")).replace(
            default=False
        ),
        _param("as_json", bool, typer.Option("--json", help="Print the result as JSON.")).replace(
            default=False
        ),
    ]  # fmt: skip

    def command(ctx: typer.Context, **values: Any) -> None:
        from chutes_core.deploy_targets import DeployContext
        from chutes_core.errors import ChutesError
        from chutes_core.refs import RefError, load_ref

        ref, yes, debug = values.pop("ref"), values.pop("yes"), values.pop("debug")
        as_json = values.pop("as_json")
        entry = _select(registry, values.pop("target"), "deploy")
        options = _given(ctx, entry, values, "deploy")
        try:
            chute = load_ref(ref)
        except RefError as exc:
            _fail("deploy", exc, code=2)
        context = DeployContext(
            progress=lambda line: typer.echo(line, err=True),
            confirm=lambda question: _confirm(question, yes=yes),
            debug=(lambda text: typer.echo(text, err=as_json)) if debug else lambda _text: None,
        )
        try:
            done = entry.target.deploy(ref, chute, context=context, **options)
        except ChutesError as exc:
            _fail("deploy", exc)
        typer.echo(_as_json(entry.name, chute.name, done) if as_json else done)

    command.__doc__ = (
        "Deploy a chute to one of the installed targets (below); the platform's is "
        "POST /chutes/. Exit status 3 when the platform refuses (fee, name taken), "
        "2 for bad input here."
    )
    return _with_params(command, [*fixed, *_option_params(registry, undeploy=False)])


def _undeploy_command(registry: DeployTargetRegistry) -> Callable[..., None]:
    names = ", ".join(registry.names())
    fixed = [
        _param("ref", str, typer.Argument(help="The chute: a reference or its name.")),
        _param("target", str, typer.Option("--target", help=f"Where it runs: {names}."))
        .replace(default=DEFAULT_TARGET),
        _param("as_json", bool, typer.Option("--json", help="Print the result as JSON.")).replace(
            default=False
        ),
    ]  # fmt: skip

    def command(ctx: typer.Context, **values: Any) -> None:
        from chutes_core.deploy_targets import DeployContext, UndeployNotSupportedError
        from chutes_core.errors import ChutesError

        ref, as_json = values.pop("ref"), values.pop("as_json")
        entry = _select(registry, values.pop("target"), "undeploy")
        options = _given(ctx, entry, values, "undeploy")
        context = DeployContext(progress=lambda line: typer.echo(line, err=True))
        try:
            done = entry.target.undeploy(ref, context=context, **options)
        except UndeployNotSupportedError as exc:
            hint = f"; {exc}" if str(exc) else ""
            _fail("undeploy", f"the {entry.name} target cannot undeploy{hint}", code=2)
        except ChutesError as exc:
            _fail("undeploy", exc)
        typer.echo(_as_json(entry.name, ref, done) if as_json else done)

    command.__doc__ = "Remove a deployed chute from its target, where the target can."
    return _with_params(command, [*fixed, *_option_params(registry, undeploy=True)])


def _select(registry: DeployTargetRegistry, name: str, verb: str) -> RegisteredTarget:
    from chutes_core.deploy_targets import UnknownDeployTargetError
    from chutes_core.errors import ChutesError

    try:
        return registry.get(name)
    except UnknownDeployTargetError as exc:
        hint = f"; pip install {KNOWN_TARGETS[name]} adds it" if name in KNOWN_TARGETS else ""
        _fail(verb, f"{exc}{hint}", code=2)
    except ChutesError as exc:
        _fail(verb, exc, code=2)


def _given(
    ctx: typer.Context, entry: RegisteredTarget, values: dict[str, Any], verb: str
) -> dict[str, Any]:
    """The target options given, for ``entry``; another target's option on the command line
    is an error (from the environment, it is left out)."""
    own = {option.name for option in entry.target.options if verb == "deploy" or option.undeploy}
    given = {}
    for name, value in values.items():
        if value is None or value is False:  # not given (a flag's default is off)
            continue
        if name in own:
            given[name] = value
        elif _source(ctx, name) == "COMMANDLINE":
            flag = "--" + name.replace("_", "-")
            takes = ", ".join(f"--{o.replace('_', '-')}" for o in sorted(own)) or "none"
            _fail(verb, f"{flag} is not an option of target {entry.name!r} (its options: {takes})", code=2)  # fmt: skip
    return given


def _source(ctx: typer.Context, name: str) -> str:
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else ""


def _option_params(registry: DeployTargetRegistry, *, undeploy: bool) -> list[inspect.Parameter]:
    """One flag per option name; an option several targets take is shared."""
    owners: dict[str, list[str]] = {}
    first: dict[str, DeployOption] = {}
    for entry in registry:
        for option in entry.target.options:
            if undeploy and not option.undeploy:
                continue
            owners.setdefault(option.name, []).append(entry.name)
            first.setdefault(option.name, option)
    params = []
    for name, option in first.items():
        panel = f"Options of --target {', '.join(owners[name])}"
        declared = typer.Option(
            option.flag, help=option.help, envvar=option.envvar, rich_help_panel=panel
        )
        params.append(_param(name, option.type | None, declared).replace(default=None))
    return params


def _param(name: str, kind: Any, declared: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, declared]
    )


def _with_params(
    command: Callable[..., None], params: list[inspect.Parameter]
) -> Callable[..., None]:
    """``command`` with the signature typer reads its options from."""
    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
    all_params = [context, *params]
    command.__signature__ = inspect.Signature(all_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in all_params}
    return command


def _confirm(question: str, *, yes: bool) -> bool:
    from chutes_cli.build import confirm

    return bool(confirm(question, yes=yes, command="deploy"))


def _as_json(target: str, name: str, message: str) -> str:
    """The result for scripts: the target's message, with its ``key=value`` words as fields."""
    import json

    fields = dict(word.split("=", 1) for word in message.split() if "=" in word)
    return json.dumps({"target": target, "name": name, "message": message, **fields}, indent=2)
