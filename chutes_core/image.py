"""``Image``: a chained builder that renders a Dockerfile.

``str(image)`` is the Dockerfile. Every directive validates its arguments when
it is called, so a bad value fails where it was written, not at build time.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from chutes_core.errors import InvalidValueError
from chutes_core.validation import check_env_key, check_image_part, check_str

DEFAULT_BASE = "parachutes/python:3.12"
_PYTHON_VERSION_RE = re.compile(r"^3\.(\d+)(\.\d+)?$")
_APT_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.\-]*(=[A-Za-z0-9.+:~\-]+)?$")
_BASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@\-]*$")


@dataclass(frozen=True)
class Directive:
    """One Dockerfile instruction: ``INSTRUCTION arguments``."""

    instruction: str
    arguments: str

    def __str__(self) -> str:
        return f"{self.instruction} {self.arguments}"


class Image:
    """A container image definition.

    >>> image = (
    ...     Image(username="me", name="app", tag="1.0")
    ...     .from_base("parachutes/python:3.12")
    ...     .run_command("pip install numpy")
    ... )
    >>> print(image)  # the Dockerfile
    """

    def __init__(self, username: str, name: str, tag: str, readme: str = "") -> None:
        from chutes_core.validation import check_name

        self._username = check_name("Image.username", username)
        self._name = check_image_part("Image.name", name)
        self._tag = check_image_part("Image.tag", tag)
        self._readme = check_str("Image.readme", readme)
        self._base = DEFAULT_BASE
        self._directives: list[Directive] = []
        self._sources: list[str] = []

    # Read-only description -------------------------------------------------
    @property
    def username(self) -> str:
        return self._username

    @property
    def name(self) -> str:
        return self._name

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def readme(self) -> str:
        return self._readme

    @property
    def base(self) -> str:
        return self._base

    @property
    def reference(self) -> str:
        """``username/name:tag``, the image's full name."""
        return f"{self._username}/{self._name}:{self._tag}"

    @property
    def uid(self) -> str:
        """A stable id for this image name and tag."""
        import uuid

        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{self._username}/{self._name}:{self._tag}"))

    @property
    def directives(self) -> tuple[Directive, ...]:
        return (Directive("FROM", self._base), *self._directives)

    @property
    def sources(self) -> tuple[str, ...]:
        """Local paths that ``ADD`` directives copy into the image."""
        return tuple(self._sources)

    # Directives ------------------------------------------------------------
    def from_base(self, base: str) -> Image:
        """Start from ``base`` (``repository[:tag]``) instead of the default."""
        if not isinstance(base, str) or not _BASE_RE.match(base):
            raise InvalidValueError(
                "Image.from_base(base)", base, "an image reference such as 'python:3.12-slim'"
            )
        self._base = base
        return self

    def with_python(self, version: str = "3.12") -> Image:
        """Build and install CPython ``version`` from source as ``python``/``pip``."""
        match = _PYTHON_VERSION_RE.match(version) if isinstance(version, str) else None
        if not match or int(match.group(1)) < 9:
            raise InvalidValueError(
                "Image.with_python(version)", version, "a CPython version from 3.9, such as '3.12'"
            )
        full = version if match.group(2) else f"{version}.0"
        series = ".".join(full.split(".")[:2])
        self.apt_install(
            [
                "build-essential",
                "ca-certificates",
                "curl",
                "libbz2-dev",
                "libffi-dev",
                "liblzma-dev",
                "libreadline-dev",
                "libsqlite3-dev",
                "libssl-dev",
                "zlib1g-dev",
            ]
        )
        self.run_command(
            f"curl -fsSL https://www.python.org/ftp/python/{full}/Python-{full}.tgz "
            "| tar -xz -C /tmp"
            f" && cd /tmp/Python-{full} && ./configure --enable-optimizations --with-ensurepip"
            " && make -j$(nproc) && make altinstall"
            f" && ln -sf /usr/local/bin/python{series} /usr/local/bin/python"
            f" && ln -sf /usr/local/bin/pip{series} /usr/local/bin/pip"
            f" && cd / && rm -rf /tmp/Python-{full}"
        )
        return self

    def run_command(self, command: str) -> Image:
        """``RUN command`` (shell form)."""
        command = check_str("Image.run_command(command)", command)
        if not command.strip():
            raise InvalidValueError("Image.run_command(command)", command, "a non-empty command")
        # A newline would end the instruction; continue it instead.
        self._directives.append(Directive("RUN", command.strip().replace("\n", " \\\n    ")))
        return self

    def apt_install(self, packages: str | list[str]) -> Image:
        """Install Debian packages without recommends, cleaning the lists."""
        names = self._packages("Image.apt_install(packages)", packages)
        return self.run_command(
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {' '.join(names)} && rm -rf /var/lib/apt/lists/*"
        )

    def apt_remove(self, packages: str | list[str]) -> Image:
        """Purge Debian packages."""
        names = self._packages("Image.apt_remove(packages)", packages)
        return self.run_command(f"apt-get purge -y {' '.join(names)} && apt-get autoremove -y")

    def with_env(self, key: str, value: str) -> Image:
        """``ENV key=value``."""
        check_env_key("Image.with_env(key)", key)
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InvalidValueError("Image.with_env(value)", value, "a string or number")
        self._directives.append(Directive("ENV", f"{key}={json.dumps(str(value))}"))
        return self

    def add(
        self,
        source: str,
        dest: str,
        *,
        owner: str | None = None,
        permissions: str | None = None,
    ) -> Image:
        """``ADD source dest``; ``source`` is relative to the build context."""
        check_str("Image.add(source)", source)
        check_str("Image.add(dest)", dest)
        if not source or source.startswith("/") or ".." in source.split("/"):
            raise InvalidValueError(
                "Image.add(source)", source, "a relative path inside the build context"
            )
        if not dest:
            raise InvalidValueError("Image.add(dest)", dest, "a destination path")
        flags = []
        if owner is not None:
            if not re.match(r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$", owner):
                raise InvalidValueError("Image.add(owner)", owner, "'user' or 'user:group'")
            flags.append(f"--chown={owner}")
        if permissions is not None:
            if not re.match(r"^[0-7]{3,4}$", permissions):
                raise InvalidValueError("Image.add(permissions)", permissions, "an octal mode")
            flags.append(f"--chmod={permissions}")
        args = json.dumps([source, dest])
        self._sources.append(source)
        self._directives.append(Directive("ADD", " ".join([*flags, args])))
        return self

    def set_workdir(self, directory: str) -> Image:
        """``WORKDIR directory`` (absolute)."""
        if not isinstance(directory, str) or not directory.startswith("/"):
            raise InvalidValueError("Image.set_workdir(directory)", directory, "an absolute path")
        self._directives.append(Directive("WORKDIR", directory))
        return self

    def set_user(self, user: str) -> Image:
        """``USER user``."""
        if not isinstance(user, str) or not re.match(
            r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$", user
        ):
            raise InvalidValueError("Image.set_user(user)", user, "a user name or uid[:gid]")
        self._directives.append(Directive("USER", user))
        return self

    def with_maintainer(self, maintainer: str) -> Image:
        """``LABEL maintainer=...``."""
        check_str("Image.with_maintainer(maintainer)", maintainer, max_length=256)
        self._directives.append(Directive("LABEL", f"maintainer={json.dumps(maintainer)}"))
        return self

    def with_entrypoint(self, entrypoint: str | list[str]) -> Image:
        """``ENTRYPOINT [...]`` (exec form; a string is split like a shell would)."""
        args = shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise InvalidValueError(
                "Image.with_entrypoint(entrypoint)",
                entrypoint,
                "a command string or list of strings",
            )
        self._directives.append(Directive("ENTRYPOINT", json.dumps(args)))
        return self

    # Rendering -------------------------------------------------------------
    def copy(self) -> Image:
        """An independent copy, so a plugin can extend an image without changing it."""
        other = Image.__new__(Image)
        other.__dict__.update(self.__dict__)
        other._directives = list(self._directives)
        other._sources = list(self._sources)
        return other

    def dockerfile(self) -> str:
        return "\n".join(str(d) for d in self.directives) + "\n"

    def __str__(self) -> str:
        return self.dockerfile()

    def __repr__(self) -> str:
        return f"Image({self.reference!r}, {len(self._directives)} directives)"

    def to_dict(self) -> dict[str, Any]:
        """What a deploy sends to describe this image."""
        return {
            "username": self._username,
            "name": self._name,
            "tag": self._tag,
            "readme": self._readme,
            "dockerfile": self.dockerfile(),
        }

    @staticmethod
    def _packages(field: str, packages: str | list[str]) -> list[str]:
        names = packages.split() if isinstance(packages, str) else packages
        if not isinstance(names, list) or not names:
            raise InvalidValueError(field, packages, "a package name or a non-empty list of them")
        for name in names:
            if not isinstance(name, str) or not _APT_PACKAGE_RE.match(name):
                raise InvalidValueError(field, name, "a Debian package name such as 'curl'")
        return names
