"""``chutes build``: the image for a chute, its Dockerfile and build context.

The image comes from the chute (an ``Image`` it was given) or, when it has
none, from the plugins' ``build_image`` hook (engine templates supply their
engine's image; the built-in default is plain Python with chutes). The
Dockerfile renders that image, makes sure chutes is installed, and adds the
chute's code under ``/app``, so the result serves the chute as is:
``docker run -p 8000:8000 IMAGE``.

The context holds only what the Dockerfile needs: the chute's module (its
top-level package for a ``pkg.module:attr`` reference), or the whole project
with ``include_cwd``, plus what the image's own ``ADD`` directives copy.
Nothing outside the project directory is ever sent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chutes_core.errors import ChutesError

if TYPE_CHECKING:
    from chutes_core.chute import Chute
    from chutes_core.image import Image

#: Never sent to a builder with ``--include-cwd``.
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".nox", ".tox", ".mypy_cache",
     ".pytest_cache", ".ruff_cache", "node_modules", ".idea", ".vscode", "build", "dist"}
)  # fmt: skip
SKIP_SUFFIXES = (".pyc", ".pyo")
APP_DIR = "/app"
PORT = 8000


@dataclass
class BuildPlan:
    """Everything a builder needs: the image, the Dockerfile and the files to send.

    ``files`` is every file of the context, relative to ``root``; ``code`` is
    the chute's code as top-level entries (files or directories) of the
    context, each copied under ``/app`` by one ``ADD``: one layer per entry,
    not per file, keeps large projects within the image layer limit.
    """

    chute: Chute
    image: Image
    ref: str
    root: Path
    files: list[Path]
    code: list[Path]

    @property
    def tag(self) -> str:
        return f"{self.image.name}:{self.image.tag}"

    def dockerfile(self) -> str:
        from chutes_core import __version__

        lines = [self.image.dockerfile().rstrip("\n")]
        # An image of the user's own may not bring chutes; `chutes run` must exist.
        lines.append(
            "RUN python -c 'import chutes_runtime' 2>/dev/null"
            f" || pip install --no-cache-dir 'chutes=={__version__}'"
        )
        # The seccomp layer's binding (best effort: the image may lack libseccomp),
        # and a user to run as: the namespace mode needs no root (docs/egress.md).
        lines.append("RUN pip install --no-cache-dir 'pyseccomp>=0.1.2' || true")
        # Startup egress for clients that ignore proxies (best effort: Debian-based images).
        lines.append(
            "RUN command -v slirp4netns >/dev/null || (apt-get update -q && DEBIAN_FRONTEND="
            "noninteractive apt-get install -y -q --no-install-recommends slirp4netns"
            " && rm -rf /var/lib/apt/lists/*) || true"
        )
        if not any(d.instruction == "USER" for d in self.image.directives):
            lines.append(
                "RUN id -u chutes >/dev/null 2>&1 || useradd --create-home --uid 10001 chutes"
                " || adduser -D -u 10001 chutes"
            )
        lines.append(f"WORKDIR {APP_DIR}")
        for entry in self.code:
            lines.append(f"ADD {json.dumps([entry.as_posix(), f'{APP_DIR}/{entry.as_posix()}'])}")
        lines.append('ENV PYTHONUNBUFFERED="1"')
        lines.append(f"EXPOSE {PORT}")
        if not any(d.instruction == "USER" for d in self.image.directives):
            lines.append("USER chutes")
        command = ["chutes", "run", self.ref, "--host", "0.0.0.0", "--port", str(PORT)]
        lines.append(f"CMD {json.dumps(command)}")
        return "\n".join(lines) + "\n"

    def size(self) -> int:
        return sum((self.root / path).stat().st_size for path in self.files)

    def write(self, output: Path) -> Path:
        """The Dockerfile and the context files in ``output``, ready for ``docker build``."""
        output.mkdir(parents=True, exist_ok=True)
        for path in self.files:
            target = output / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.root / path, target)
        (output / "Dockerfile").write_text(self.dockerfile())
        return output


def plan_build(ref: str, *, include_cwd: bool = False) -> BuildPlan:
    """Load the chute behind ``ref`` and decide what to build and send.

    The project directory is the current directory; a file outside it (the
    chute's module, an ``Image.add`` source, a symlink's target) is refused.
    """
    from chutes_core.image import Image
    from chutes_core.plugins import get_plugin_manager
    from chutes_core.refs import load_ref

    project = Path.cwd().resolve()
    chute = load_ref(ref)
    image = get_plugin_manager().build_image(chute)
    if not isinstance(image, Image):
        raise ChutesError(f"no image to build for {ref!r}: the chute names a prebuilt image")
    entry = _code_entry(ref, project)
    if include_cwd:
        files = list(_walk(project))
        code = sorted({Path(path.parts[0]) for path in files})
    else:
        files = (
            list(_walk(project / entry, base=project)) if (project / entry).is_dir() else [entry]
        )
        code = [entry]
    for added in image.sources:
        files.extend(_image_source(project, added))
    return BuildPlan(
        chute=chute,
        image=image,
        ref=_portable_ref(ref, project),
        root=project,
        files=sorted(set(files)),
        code=code,
    )


def _code_entry(ref: str, project: Path) -> Path:
    """What to copy for the chute's code: its file, or its top-level package directory."""
    target = ref.partition(":")[0]
    if _is_file_ref(target):
        path = Path(target).resolve()
    else:
        top = target.split(".")[0]
        module = sys.modules.get(top)
        if module is None:
            raise ChutesError(f"cannot find the source of module {top!r}")
        locations = list(getattr(module, "__path__", []))  # a package: its directory
        file = getattr(module, "__file__", None)
        if locations:
            path = Path(locations[0]).resolve()
        elif file is not None:
            path = Path(file).resolve()
        else:
            raise ChutesError(f"cannot find the source of module {top!r}")
    _inside(project, path)
    relative = path.relative_to(project)
    if relative == Path("."):
        raise ChutesError(f"{ref!r} resolves to the project directory itself; use --include-cwd")
    return relative


def _is_file_ref(target: str) -> bool:
    return target.endswith(".py") or os.sep in target


def _portable_ref(ref: str, project: Path) -> str:
    """The reference as the container will see it (a file path becomes relative to /app)."""
    target, _, attr = ref.partition(":")
    if _is_file_ref(target):
        target = Path(target).resolve().relative_to(project).as_posix()
    return f"{target}:{attr}" if attr else target


def _image_source(project: Path, source: str) -> Iterator[Path]:
    path = project / source
    _inside(project, path)
    if not path.exists():
        raise ChutesError(f"the image adds {source!r}, which does not exist in {project}")
    if path.is_dir():
        yield from _walk(path, base=project)
    else:
        yield path.relative_to(project)


def _walk(directory: Path, base: Path | None = None) -> Iterator[Path]:
    """Files under ``directory`` (relative to ``base``), without VCS folders and caches."""
    base = base or directory
    for current, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            if name.endswith(SKIP_SUFFIXES):
                continue
            path = Path(current, name)
            _inside(base, path)
            yield path.relative_to(base)


def _inside(project: Path, path: Path) -> None:
    """Refuse a file outside the project (symlinks are followed first)."""
    resolved = path.resolve()
    if resolved != project and project not in resolved.parents:
        raise ChutesError(
            f"{path} is outside the project directory {project}; "
            "builds only send files from inside it"
        )


# Local builders -------------------------------------------------------------------
def local_builder() -> list[str] | None:
    """The build command to use: docker if its engine answers, else podman, else None.

    A docker client without a reachable engine (no daemon, no socket access)
    does not count.
    """
    if shutil.which("docker") and _answers(["docker", "info", "--format", "{{.ServerVersion}}"]):
        return ["docker", "build"]
    if shutil.which("podman"):
        # chroot isolation builds without user namespaces (CI runners, containers).
        return ["podman", "build", "--isolation=chroot"]
    return None


def _answers(command: list[str]) -> bool:
    try:
        probe = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def run_local_build(command: list[str], context: Path, tag: str) -> Iterator[str]:
    """Run the build, yielding its log lines as they come; raises on failure."""
    process = subprocess.Popen(
        [*command, "-t", tag, str(context)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    finished = False
    try:
        yield from process.stdout
        finished = True
    finally:
        if not finished:  # the caller stopped reading (Ctrl-C): do not leave the build running
            process.terminate()
        code = process.wait()
    if code != 0:
        raise ChutesError(f"{command[0]} build failed with exit code {code}")
