"""``chutes build``: render the image and its context, build locally or on the platform."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from chutes_cli.image_build import BuildPlan

SHOWN_FILES = 50


def confirm(question: str, *, yes: bool) -> bool:
    """Ask in a terminal; ``--yes`` and non-interactive runs (CI, scripts) go ahead."""
    if yes or not sys.stdin.isatty():
        return True
    return typer.confirm(question, default=True)


def fail(error: Exception, *, code: int = 1) -> NoReturn:
    """One line on stderr, then exit."""
    typer.echo(f"chutes build: {error}", err=True)
    raise typer.Exit(code)


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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
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
    """Build the chute's image: with docker/podman (--local) or on the platform."""
    from rich.console import Console

    from chutes_cli.image_build import plan_build
    from chutes_core.errors import ChutesError

    console = Console(soft_wrap=True)
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
        raise typer.Exit(1)
    if local:
        _build_locally(plan, output, console)
    else:
        _build_on_platform(plan, public=public, wait=wait, config_path=config_path, console=console)


def _build_locally(plan: BuildPlan, output: Path | None, console: Console) -> None:
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
        return
    with tempfile.TemporaryDirectory(prefix="chutes-build-") as tmp:
        context = plan.write(output or Path(tmp))
        console.print(f"building {plan.tag} with {builder[0]}", highlight=False)
        try:
            for line in run_local_build(builder, context, plan.tag):
                console.print(line.rstrip("\n"), markup=False, highlight=False)
        except ChutesError as exc:
            fail(exc)
    console.print(f"built {plan.tag}", highlight=False)


def _build_on_platform(
    plan: BuildPlan, *, public: bool, wait: bool, config_path: Path | None, console: Console
) -> None:
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


def _tarball(plan: BuildPlan) -> bytes:
    """The context as a gzipped tarball (what the platform's builder receives)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in plan.files:
            tar.add(plan.root / path, arcname=path.as_posix())
    return buffer.getvalue()
