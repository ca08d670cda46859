"""Deploy targets: the places ``chutes deploy REF --target NAME`` can send a chute.

A plugin contributes targets through the ``register_deploy_targets`` hook;
the command line adds its built-in ``platform`` target (the Chutes platform).
A target is a :class:`DeployTarget`: a description, the options it takes
(offered as ``--flags`` by ``chutes deploy``) and ``deploy``/``undeploy``.

When two plugins register the same name, neither is used under that name
and the clash is reported (a warning, and ``chutes plugins``); a built-in
target keeps its name. Nothing else stops working.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from chutes_core.errors import ChutesError, InvalidValueError

if TYPE_CHECKING:
    from chutes_core.chute import Chute

TARGET_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
OPTION_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
#: The types an option may have: ``bool`` is a flag, the others take a value.
OPTION_TYPES: tuple[type, ...] = (str, int, float, bool, Path)
#: Names the deploy commands use themselves; a target's options cannot take them.
RESERVED_OPTIONS = frozenset({"ref", "target", "yes", "debug", "help", "ctx"})

log = logging.getLogger("chutes.plugins")


def _quiet(_line: str) -> None:
    pass


def _agree(_question: str) -> bool:
    return True


@dataclass(frozen=True)
class DeployOption:
    """An option a target takes: the keyword ``name``, offered as ``--name-with-dashes``.

    Only options the user gave reach the target, so its own keyword defaults
    apply otherwise (say what they are in ``help``).
    """

    name: str
    help: str
    #: ``str``, ``int``, ``float``, ``pathlib.Path``, or ``bool`` for a flag.
    type: type = str
    #: An environment variable that sets the option when it is not given.
    envvar: str | None = None
    #: Also an option of ``chutes undeploy`` (and passed to :meth:`DeployTarget.undeploy`).
    undeploy: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class DeployContext:
    """How a target talks to the user; the command line supplies one.

    The defaults suit a program calling a target directly: silent, and
    every question answered yes.
    """

    #: Report a step (the command line prints it on stderr).
    progress: Callable[[str], None] = field(default=_quiet)
    #: Ask before doing something the user may not expect (True: go ahead).
    #: The command line answers yes itself with ``--yes`` or without a terminal.
    confirm: Callable[[str], bool] = field(default=_agree)
    #: Show details (what is sent); printed only with ``--debug``.
    debug: Callable[[str], None] = field(default=_quiet)


class DeployTarget(ABC):
    """A place chutes can be deployed to. Subclass it and register an instance.

    Keep the module light: import the target's client library (Ray, a cloud
    SDK) inside :meth:`deploy`, since ``chutes deploy --help`` loads every
    target. Raise :class:`~chutes_core.errors.ChutesError` with a message
    that says what to do; the command line prints it as one line.
    """

    #: One line for ``chutes deploy --help`` and ``chutes plugins``.
    description: str = ""
    #: The options ``chutes deploy`` offers for this target.
    options: Sequence[DeployOption] = ()

    @abstractmethod
    def deploy(self, ref: str, chute: Chute, *, context: DeployContext, **options: Any) -> str:
        """Deploy (or update) ``chute``, loaded from ``ref``; return one line saying where it runs.

        ``options`` holds the options the user gave, by name.
        """

    def undeploy(self, ref_or_name: str, *, context: DeployContext, **options: Any) -> str:
        """Remove a chute (by reference or name) this target deployed; return one line.

        ``options`` holds the given options marked ``undeploy=True``. The
        default says the target cannot undeploy.
        """
        raise UndeployNotSupportedError("")


class DeployTargetRegister(Protocol):
    """The callback ``register_deploy_targets`` receives."""

    def __call__(self, name: str, target: DeployTarget) -> None: ...


class UnknownDeployTargetError(ChutesError):
    """No installed target has this name."""

    def __init__(self, name: str, installed: list[str]) -> None:
        self.name = name
        self.installed = installed
        super().__init__(
            f"no deploy target {name!r} (installed targets: {', '.join(installed) or 'none'})"
        )


class DeployTargetClashError(ChutesError):
    """Two plugins registered this target name, so neither is used under it."""

    def __init__(self, name: str, plugins: list[str]) -> None:
        self.name = name
        self.plugins = plugins
        super().__init__(
            f"deploy target {name!r} is registered by plugins {' and '.join(map(repr, plugins))}, "
            "so neither is used; uninstall one of them or disable it with CHUTES_DISABLE_PLUGINS"
        )


class UndeployNotSupportedError(ChutesError):
    """The target cannot remove what it deployed; the message may say what to use instead."""


@dataclass(frozen=True)
class RegisteredTarget:
    name: str
    target: DeployTarget
    #: The plugin that registered it, or the owner of a built-in target.
    plugin: str
    builtin: bool = False

    @property
    def description(self) -> str:
        return self.target.description


def _check(name: str, target: DeployTarget) -> None:
    if not isinstance(name, str) or not TARGET_NAME_RE.match(name):
        raise InvalidValueError(
            "deploy target name", name, f"a lowercase name ({TARGET_NAME_RE.pattern})"
        )
    if not isinstance(target, DeployTarget):
        raise InvalidValueError(f"deploy target {name!r}", target, "a DeployTarget instance")
    seen: set[str] = set()
    for option in target.options:
        where = f"deploy target {name!r}: option"
        if not isinstance(option, DeployOption):
            raise InvalidValueError(where, option, "a DeployOption")
        if not OPTION_NAME_RE.match(option.name) or option.name in RESERVED_OPTIONS:
            raise InvalidValueError(
                where,
                option.name,
                f"an identifier ({OPTION_NAME_RE.pattern}) other than "
                f"{', '.join(sorted(RESERVED_OPTIONS))}",
            )
        if option.name in seen:
            raise InvalidValueError(where, option.name, "a name given once")
        if option.type not in OPTION_TYPES:
            raise InvalidValueError(
                f"{where} {option.name!r}: type",
                option.type,
                ", ".join(t.__name__ for t in OPTION_TYPES),
            )
        seen.add(option.name)


class DeployTargetRegistry:
    """The deploy targets of the plugins in use, plus built-in ones added by the host."""

    def __init__(self) -> None:
        self._entries: dict[str, list[RegisteredTarget]] = {}

    def register_for(self, plugin: str) -> DeployTargetRegister:
        """A ``register`` callback that records targets as coming from ``plugin``."""

        def register(name: str, target: DeployTarget) -> None:
            _check(name, target)
            self._add(RegisteredTarget(name, target, plugin))

        return register

    def add_builtin(self, name: str, target: DeployTarget, *, owner: str = "chutes") -> None:
        """Add a built-in target: it keeps ``name`` whatever plugins register."""
        _check(name, target)
        self._add(RegisteredTarget(name, target, owner, builtin=True))

    def _add(self, entry: RegisteredTarget) -> None:
        entries = [e for e in self._entries.get(entry.name, []) if e.plugin != entry.plugin]
        entries.append(entry)
        self._entries[entry.name] = entries
        if len(entries) > 1:
            owners = " and ".join(repr(e.plugin) for e in entries)
            kept = self._winner(entries)
            outcome = "the built-in one is used" if kept else "neither is used"
            log.warning("deploy target %r is registered by %s; %s", entry.name, owners, outcome)

    @staticmethod
    def _winner(entries: list[RegisteredTarget]) -> RegisteredTarget | None:
        builtins = [e for e in entries if e.builtin]
        if builtins:
            return builtins[0]
        return entries[0] if len(entries) == 1 else None

    def get(self, name: str) -> RegisteredTarget:
        """The target called ``name``; an error lists the installed ones, or names a clash."""
        entries = self._entries.get(name, [])
        winner = self._winner(entries)
        if winner is not None:
            return winner
        if entries:
            raise DeployTargetClashError(name, [e.plugin for e in entries])
        raise UnknownDeployTargetError(name, self.names())

    def names(self) -> list[str]:
        """The names ``--target`` accepts, sorted."""
        return [entry.name for entry in self]

    @property
    def clashes(self) -> dict[str, list[str]]:
        """Names registered by more than one plugin (or a plugin and a built-in), with them."""
        return {
            name: [e.plugin for e in entries]
            for name, entries in sorted(self._entries.items())
            if len(entries) > 1
        }

    def by_plugin(self, plugin: str) -> list[str]:
        """The names ``plugin`` registered (whether or not a clash keeps them out of use)."""
        return sorted(
            name
            for name, entries in self._entries.items()
            if any(e.plugin == plugin and not e.builtin for e in entries)
        )

    def drop_plugin(self, plugin: str) -> None:
        for name in list(self._entries):
            kept = [e for e in self._entries[name] if e.plugin != plugin or e.builtin]
            if kept:
                self._entries[name] = kept
            else:
                del self._entries[name]

    def __iter__(self) -> Iterator[RegisteredTarget]:
        """The usable targets (clashes left out), by name."""
        for name in sorted(self._entries):
            winner = self._winner(self._entries[name])
            if winner is not None:
                yield winner

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._winner(self._entries.get(name, [])) is not None
