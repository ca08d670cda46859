"""``chutes build``: render the image and its context, build locally or on the platform."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from chutes_cli.image_build import BuildPlan

SHOWN_FILES = 50


def confirm(question: str, *, yes: bool, command: str = "build") -> bool:
    """Ask in a terminal; ``--yes``, ``CHUTES_YES`` and runs without one (CI, scripts) go ahead."""
    from chutes_cli.exits import confirm as ask

    return bool(ask(question, yes=yes, command=command))


def fail(error: Exception, *, code: int | None = None) -> NoReturn:
    """One line on stderr, then exit (status from the error, see :mod:`chutes_cli.exits`)."""
    from chutes_cli.exits import fail as exit_with

    exit_with("build", error, code=code)
    raise AssertionError("unreachable")  # exit_with raises; this satisfies the type checker


def build(
    ref: Annotated[
        str, typer.Argument(help="The chute: module:attr, path/to/file.py:attr or pkg.module:attr.")
    ],
    local: Annotated[
        bool, typer.Option("--local", help="Build here with docker (or podman).")
    ] = False,
    include_cwd: Annotated[
        bool,
        typer.Option(
            "--include-cwd", help="Send the whole current directory, not just the chute's module."
        ),
    ] = False,
    public: Annotated[
        bool, typer.Option("--public", help="Make the image public (platform builds).")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Stream the platform's build log.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Print the Dockerfile too.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", envvar="CHUTES_YES", help="Do not ask for confirmation.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (progress goes to stderr).")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="With --local: write the Dockerfile and context here (and build from here).",
        ),
    ] = None,
    config_path: Annotated[
        Path | None, typer.Option("--config-path", help="Platform config file.")
    ] = None,
) -> None:
    """Build the chute's image: with docker/podman (--local) or on the platform (POST /images/)."""
    from rich.console import Console

    from chutes_cli.image_build import plan_build
    from chutes_core.errors import ChutesError

    console = Console(soft_wrap=True, stderr=as_json)
    try:
        plan = plan_build(ref, include_cwd=include_cwd)
    except ChutesError as exc:
        fail(exc, code=2)
    console.print(f"image [bold]{plan.image.reference}[/] for chute [bold]{plan.chute.name}[/]")
    console.print(
        f"context: {len(plan.files)} file(s), {plan.size() / 1024:.1f} KiB from {plan.root}"
    )
    for path in plan.files[:SHOWN_FILES]:
        console.print(f"  {path.as_posix()}", markup=False, highlight=False)
    if len(plan.files) > SHOWN_FILES:
        console.print(f"  ... and {len(plan.files) - SHOWN_FILES} more")
    if debug:
        console.print(plan.dockerfile(), markup=False, highlight=False)
    if not confirm("Build with these files?", yes=yes):
        fail(ChutesError("not built: the build was not confirmed (pass --yes)"))
    result: dict[str, object] = {"image": plan.image.reference, "chute": plan.chute.name}
    if local:
        result.update(_build_locally(plan, output, console))
    else:
        image_id = _build_on_platform(
            plan, public=public, wait=wait, config_path=config_path, console=console
        )
        result.update(image_id=image_id, where="platform")
    if as_json:
        import json

        typer.echo(json.dumps(result, indent=2, sort_keys=True))


def _build_locally(plan: BuildPlan, output: Path | None, console: Console) -> dict[str, str]:
    import tempfile

    from chutes_cli.image_build import local_builder, run_local_build
    from chutes_core.errors import ChutesError

    builder = local_builder()
    if builder is None:
        context = plan.write(output or Path(f"build-{plan.chute.name}"))
        console.print(f"wrote the Dockerfile and its context to {context}/", highlight=False)
        console.print("no docker engine or podman here; build it where one runs:")
        console.print(f"  docker build -t {plan.tag} {context}", markup=False, highlight=False)
        console.print(
            f"  podman build --isolation=chroot -t {plan.tag} {context}",
            markup=False,
            highlight=False,
        )
        return {"where": "written", "context": str(context), "tag": plan.tag}
    with tempfile.TemporaryDirectory(prefix="chutes-build-") as tmp:
        context = plan.write(output or Path(tmp))
        console.print(f"building {plan.tag} with {builder[0]}", highlight=False)
        try:
            for line in run_local_build(builder, context, plan.tag):
                console.print(line.rstrip("\n"), markup=False, highlight=False)
        except ChutesError as exc:
            fail(exc)
    console.print(f"built {plan.tag}", highlight=False)
    return {"where": "local", "tag": plan.tag, "builder": builder[0]}


def _build_on_platform(
    plan: BuildPlan, *, public: bool, wait: bool, config_path: Path | None, console: Console
) -> str:
    from chutes_cli.platform import PlatformClient, PlatformConfig, PlatformError

    image = plan.image
    try:
        with PlatformClient(PlatformConfig.load(config_path)) as client:
            image_id = client.build_image(
                image, dockerfile=plan.dockerfile(), context=_tarball(plan), public=public
            )
            console.print(f"image {image.reference} submitted: image_id={image_id}")
            if wait:
                for line in client.stream_lines(f"/images/{image_id}/logs"):
                    console.print(line, markup=False, highlight=False)
    except PlatformError as exc:
        fail(exc)
    return str(image_id)


def _tarball(plan: BuildPlan) -> bytes:
    """The context as a gzipped tarball (what the platform's builder receives)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in plan.files:
            tar.add(plan.root / path, arcname=path.as_posix())
    return buffer.getvalue()
