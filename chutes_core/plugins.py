"""Plugin discovery and the one facade through which hooks are called.

Plugins are found through the ``chutes.plugins`` entry-point group with
stevedore and registered with pluggy. A plugin that fails to import, to
register, or that implements a hook that does not exist is reported as a
warning naming the plugin and the cause, and everything else keeps working.
Environment switches:

``CHUTES_STRICT_PLUGINS=1``
    turn any such failure into an error.
``CHUTES_PLUGINS=a,b``
    load only these plugins (by entry-point name).
``CHUTES_DISABLE_PLUGINS=a,b``
    never load these plugins.

The rest of chutes calls hooks only through :class:`PluginManager` methods.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from chutes_core import builtin, hookspecs
from chutes_core.errors import PluginConflictError, PluginError
from chutes_core.kernels import KernelRegistry
from chutes_core.templates import TemplateRegistry

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    import stevedore

    from chutes_core.chute import Chute
    from chutes_core.cord import Cord, LifecycleHook
    from chutes_core.image import Image
    from chutes_core.passthrough import UpstreamRequest

ENTRY_POINT_GROUP = "chutes.plugins"
log = logging.getLogger("chutes.plugins")


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class PluginInfo:
    """An installed plugin, as ``chutes plugins`` lists it."""

    name: str
    target: str
    distribution: str | None
    version: str | None
    hooks: list[str]
    templates: list[str]
    kernels: list[str]
    #: Each template's egress default: False when its chutes are locked after startup.
    egress: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PluginFailure:
    """A plugin that could not be used, and why."""

    name: str
    target: str
    error: str
    distribution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Loaded:
    name: str
    target: str
    plugin: object
    dist_hint: str | None = field(default=None)


class PluginManager:
    """Finds, validates and calls chutes plugins.

    ``entry_points=False`` skips discovery (tests and embedding); ``plugins``
    registers extra ``(name, module_or_object)`` pairs as if discovered.
    Loading happens once, on first use.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        plugins: Iterable[tuple[str, object]] = (),
        strict: bool | None = None,
        only: list[str] | None = None,
        disabled: list[str] | None = None,
    ) -> None:
        self._use_entry_points = entry_points
        self._extra = list(plugins)
        self.strict = _env_flag("CHUTES_STRICT_PLUGINS") if strict is None else strict
        self.only = _env_list("CHUTES_PLUGINS") if only is None else only
        self.disabled = (
            (_env_list("CHUTES_DISABLE_PLUGINS") or []) if disabled is None else disabled
        )
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.templates = TemplateRegistry()
        self.kernels = KernelRegistry()
        self.failures: list[PluginFailure] = []
        self.skipped: list[str] = []
        self._loaded: list[_Loaded] = []
        self._load_lock = threading.Lock()
        self._is_loaded = False

    # Loading ---------------------------------------------------------------
    def load(self) -> PluginManager:
        """Discover and register plugins (once). Returns ``self``."""
        with self._load_lock:
            if not self._is_loaded:
                self._load()
                self._is_loaded = True
        return self

    def _selected(self, name: str) -> bool:
        if self.only is not None and name not in self.only:
            return False
        return name not in self.disabled

    def _load(self) -> None:
        self._pm.register(builtin, name=builtin.NAME)
        candidates: list[_Loaded] = []
        if self._use_entry_points:
            candidates.extend(self._discover())
        for name, plugin in self._extra:
            if self._selected(name):
                candidates.append(_Loaded(name, getattr(plugin, "__name__", repr(plugin)), plugin))
        for item in candidates:
            self._register(item)
        if self.only:
            missing = sorted(
                set(self.only)
                - {item.name for item in candidates}
                - {f.name for f in self.failures}
            )
            for name in missing:
                self._fail(name, "", "named in CHUTES_PLUGINS but not installed")
        if self.strict and self.failures:
            first = self.failures[0]
            others = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise PluginError(first.name, f"{first.error}{others}; CHUTES_STRICT_PLUGINS is set")

    def _discover(self) -> list[_Loaded]:
        from stevedore import ExtensionManager

        selected = self._selected
        skipped = self.skipped

        class _Discovery(ExtensionManager[Any]):
            # Decide before import, so a disabled plugin is never imported.
            def _load_one_plugin(self, ep: EntryPoint, *args: Any) -> Any:
                if not selected(ep.name):
                    skipped.append(ep.name)
                    return None
                return super()._load_one_plugin(ep, *args)

        def on_failure(
            _manager: stevedore.ExtensionManager[Any], ep: EntryPoint, exc: BaseException
        ) -> None:
            self._fail(ep.name, ep.value, f"failed to import: {type(exc).__name__}: {exc}")

        manager = _Discovery(ENTRY_POINT_GROUP, on_load_failure_callback=on_failure)
        return [_Loaded(ext.name, ext.entry_point.value, ext.plugin) for ext in manager.extensions]

    def _register(self, item: _Loaded) -> None:
        try:
            self._pm.register(item.plugin, name=item.name)
        except Exception as exc:  # pluggy validation or a duplicate name
            self._fail(item.name, item.target, f"cannot be registered: {exc}")
            return
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(name=item.name)
            self._fail(item.name, item.target, f"implements an unknown hook: {exc}")
            return
        try:
            self._call_registration(item.name, "register_templates", self.templates.register_for)
            self._call_registration(item.name, "register_kernels", self.kernels.register_for)
        except PluginConflictError:
            raise
        except Exception as exc:
            self._pm.unregister(name=item.name)
            self.templates.drop_plugin(item.name)
            self.kernels.drop_plugin(item.name)
            self._fail(item.name, item.target, f"registration failed: {type(exc).__name__}: {exc}")
            return
        self._loaded.append(item)

    def _call_registration(
        self, plugin_name: str, hook_name: str, make_register: Callable[[str], Any]
    ) -> None:
        for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
            if impl.plugin_name == plugin_name:
                impl.function(register=make_register(plugin_name))

    def _fail(self, name: str, target: str, error: str) -> None:
        failure = PluginFailure(name=name, target=target, error=error)
        self.failures.append(failure)
        log.warning("plugin %r disabled: %s", name, error)

    # Introspection -----------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """Names of the plugins in use (not counting the built-in one)."""
        self.load()
        return [item.name for item in self._loaded]

    def info(self) -> list[PluginInfo]:
        """Describe each plugin in use; failures are in :attr:`failures`."""
        self.load()
        dists = _distributions()
        result = []
        for item in self._loaded:
            hooks = sorted(caller.name for caller in self._pm.get_hookcallers(item.plugin) or [])
            dist = dists.get(item.target.split(":")[0].split(".")[0])
            templates = self.templates.by_plugin(item.name)
            result.append(
                PluginInfo(
                    name=item.name,
                    target=item.target,
                    distribution=dist,
                    version=_version(dist),
                    hooks=hooks,
                    templates=templates,
                    kernels=self.kernels.by_plugin(item.name),
                    egress={name: self.template_egress(name) for name in templates},
                )
            )
        for failure in self.failures:
            if failure.distribution is None and failure.target:
                failure.distribution = dists.get(failure.target.split(":")[0].split(".")[0])
        return result

    # Hook facade -------------------------------------------------------------
    def build_image(self, chute: Chute) -> Image:
        """The image to build for ``chute`` (first plugin answer wins)."""
        from chutes_core.image import Image

        self.load()
        own = chute.image if isinstance(chute.image, Image) else None
        image: Image = self._pm.hook.build_image(chute=chute, image=own)
        return image

    def declare_cords(self, chute: Chute) -> list[Cord]:
        """Extra cords that plugins serve with ``chute``."""
        self.load()
        cords: list[Cord] = []
        for _plugin, result in self._call_each("declare_cords", chute=chute):
            cords.extend(result or [])
        return cords

    def startup_hooks(self, chute: Chute) -> list[LifecycleHook]:
        """Startup work contributed by plugins, each tagged with its plugin's name."""
        from dataclasses import replace

        from chutes_core.cord import LifecycleHook

        self.load()
        hooks: list[LifecycleHook] = []
        for plugin, result in self._call_each("on_startup", chute=chute):
            if result is None:
                continue
            for hook in [result] if isinstance(result, LifecycleHook) else result:
                if not isinstance(hook, LifecycleHook):
                    raise PluginError(plugin, f"on_startup returned {hook!r}, not a LifecycleHook")
                hooks.append(replace(hook, owner=f"plugin {plugin}"))
        return hooks

    def passthrough(self, chute: Chute, cord: Cord, request: UpstreamRequest) -> None:
        """Let installed plugins adjust a forwarded request (see :meth:`implementers`)."""
        self._pm.hook.passthrough(chute=chute, cord=cord, request=request)

    def passthrough_headers(self, chute: Chute, cord: Cord) -> dict[str, str]:
        """Headers every request ``cord`` forwards carries; resolved once, at mount time.

        Where plugins answer the same header, the first answer in call order wins.
        """
        self.load()
        headers: dict[str, str] = {}
        for answer in self._pm.hook.passthrough_headers(chute=chute, cord=cord):
            for name, value in answer.items():
                headers.setdefault(name.lower(), str(value))
        return headers

    def implementers(self, hook_name: str) -> list[str]:
        """Names of the installed plugins implementing ``hook_name``, in call order.

        The built-in is left out, so the host can skip a per-request hook that
        no installed plugin implements.
        """
        self.load()
        impls = getattr(self._pm.hook, hook_name).get_hookimpls()
        return [impl.plugin_name for impl in reversed(impls) if impl.plugin_name != builtin.NAME]

    def egress_policy(self, chute: Chute) -> bool:
        """Whether ``chute`` may reach beyond loopback after startup.

        An explicit ``allow_external_egress`` wins; then the first plugin
        answer; then the built-in default (allowed).
        """
        if chute.allow_external_egress is not None:
            return chute.allow_external_egress
        self.load()
        return bool(self._pm.hook.egress_policy(chute=chute))

    def template_egress(self, template: str) -> bool:
        """The egress default of chutes built from ``template`` that do not set their own."""
        from chutes_core.chute import Chute

        probe = Chute(username="chutes", name="egress-probe", standard_template=template)
        return self.egress_policy(probe)

    def egress_source(self, chute: Chute) -> str:
        """Who decided the egress policy: ``chute``, a plugin name, or ``builtin``."""
        if chute.allow_external_egress is not None:
            return "chute"
        for plugin, result in self._call_each("egress_policy", chute=chute):
            if result is not None:
                return plugin
        return builtin.NAME

    def _call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call each implementation in pluggy's order, keeping who answered what."""
        results = []
        for impl in reversed(getattr(self._pm.hook, hook_name).get_hookimpls()):
            args = {name: kwargs[name] for name in impl.argnames}
            results.append((impl.plugin_name, impl.function(**args)))
        return results


def _distributions() -> dict[str, str]:
    from importlib.metadata import packages_distributions

    return {module: names[0] for module, names in packages_distributions().items() if names}


def _version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
    return _manager.load()


def set_plugin_manager(manager: PluginManager | None) -> None:
    """Replace (or with ``None``, forget) the process-wide manager; for tests and hosts."""
    global _manager
    with _manager_lock:
        _manager = manager
