"""Plugin discovery and the one facade through which hooks are called.

Plugins are named by entry points in the ``chutes.plugins`` group. stevedore's
``NamedExtensionManager`` imports only the selected ones, and pluggy registers
them; every hook call, registration included, goes through pluggy. A plugin
that fails to import, to register, that implements a hook that does not exist,
or that claims a template or kernel name another plugin also claims (both are
then disabled) is reported as a warning naming the plugin and the cause, and
everything else keeps working. Environment switches:

``CHUTES_STRICT_PLUGINS=1``
    turn any such failure into an error.
``CHUTES_PLUGINS=a,b``
    load only these plugins (by entry-point name); a name not installed is a failure.
``CHUTES_DISABLE_PLUGINS=a,b``
    never load (never even import) these plugins.
``CHUTES_TRACE_HOOKS=1``
    log every hook call, with the plugins it reached, its result and its
    duration, at INFO on the ``chutes.plugins.trace`` logger.

The rest of chutes calls hooks only through :class:`PluginManager` methods.
(A little over 400 lines: discovery, validation and the hook facade are one
object, and splitting them would expose its state between modules.)
"""

from __future__ import annotations

import logging
import os
import reprlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from chutes_core import builtin, hookspecs
from chutes_core.deploy_targets import DeployTargetRegistry
from chutes_core.errors import PluginConflictError, PluginError
from chutes_core.kernels import KernelRegistry
from chutes_core.templates import TemplateRegistry

if TYPE_CHECKING:
    from importlib.metadata import Distribution, EntryPoint

    import stevedore

    from chutes_core.chute import Chute
    from chutes_core.cord import Cord, LifecycleHook
    from chutes_core.image import Image
    from chutes_core.passthrough import UpstreamRequest

ENTRY_POINT_GROUP = "chutes.plugins"
log = logging.getLogger("chutes.plugins")
trace_log = logging.getLogger("chutes.plugins.trace")


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
    #: The distribution that declared the entry point; None for in-process plugins.
    distribution: Distribution | None = None


class PluginManager:
    """Finds, validates and calls chutes plugins.

    ``entry_points=False`` skips discovery (tests and embedding); ``plugins``
    registers extra ``(name, module_or_object)`` pairs as if discovered.
    Loading happens once, on first use. ``strict``, ``only``, ``disabled`` and
    ``trace`` default to the environment switches in this module's docstring.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        plugins: Iterable[tuple[str, object]] = (),
        strict: bool | None = None,
        only: list[str] | None = None,
        disabled: list[str] | None = None,
        trace: bool | None = None,
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
        if _env_flag("CHUTES_TRACE_HOOKS") if trace is None else trace:
            _trace_hook_calls(self._pm)
        self.templates = TemplateRegistry()
        self.kernels = KernelRegistry()
        self.deploy_targets = DeployTargetRegistry()
        self.failures: list[PluginFailure] = []
        #: Installed plugins left out by CHUTES_PLUGINS / CHUTES_DISABLE_PLUGINS.
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
        # Registered first; its hooks are trylast, so every plugin answers before it.
        self._pm.register(builtin, name=builtin.NAME)
        candidates: list[_Loaded] = []
        missing = set(self.only or ()) - set(self.disabled)
        if self._use_entry_points:
            missing = set()
            candidates.extend(self._discover(missing.update))
        for name, plugin in self._extra:
            if self._selected(name):
                candidates.append(_Loaded(name, getattr(plugin, "__name__", repr(plugin)), plugin))
        for item in candidates:
            self._register(item)
        # An installed plugin that failed to import is already reported as such.
        missing -= {item.name for item in candidates} | {f.name for f in self.failures}
        for name in sorted(missing):
            self._fail(name, "", "named in CHUTES_PLUGINS but not installed")
        if self.strict and self.failures:
            first = self.failures[0]
            others = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
            raise PluginError(first.name, f"{first.error}{others}; CHUTES_STRICT_PLUGINS is set")

    def _discover(self, report_missing: Callable[[Iterable[str]], None]) -> list[_Loaded]:
        """Import the selected entry points; a plugin not selected is never imported."""
        from importlib.metadata import entry_points

        from stevedore import NamedExtensionManager

        # stevedore's (cached) entry points carry no distribution; the metadata's do.
        installed = list(entry_points(group=ENTRY_POINT_GROUP))
        dists = {(ep.name, ep.value): ep.dist for ep in installed}
        wanted = self.only if self.only is not None else [ep.name for ep in installed]
        names = [name for name in dict.fromkeys(wanted) if self._selected(name)]
        self.skipped = sorted({ep.name for ep in installed if not self._selected(ep.name)})

        def on_failure(
            _manager: stevedore.ExtensionManager[Any], ep: EntryPoint, exc: BaseException
        ) -> None:
            error = f"failed to import: {type(exc).__name__}: {exc}"
            self._fail(ep.name, ep.value, error, dists.get((ep.name, ep.value)))

        manager: NamedExtensionManager[Any] = NamedExtensionManager(
            ENTRY_POINT_GROUP,
            names=names,
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=report_missing,
        )
        found = [(ext.entry_point, ext.plugin) for ext in manager.extensions]
        return [
            _Loaded(ep.name, ep.value, plugin, dists.get((ep.name, ep.value)))
            for ep, plugin in found
        ]

    def _register(self, item: _Loaded) -> None:
        try:
            self._pm.register(item.plugin, name=item.name)
        except Exception as exc:  # pluggy validation or a duplicate name
            return self._reject(item, f"cannot be registered: {exc}", registered=False)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            return self._reject(item, f"implements an unknown hook: {exc}")
        implemented = {caller.name for caller in self._pm.get_hookcallers(item.plugin) or []}
        try:
            for hook_name, registry in (
                ("register_templates", self.templates),
                ("register_kernels", self.kernels),
                ("register_deploy_targets", self.deploy_targets),
            ):
                if hook_name in implemented:
                    self._own_hook(item, hook_name)(register=registry.register_for(item.name))
        except PluginConflictError as clash:
            if self.strict:
                raise
            return self._disable_clash(item, clash)
        except Exception as exc:
            return self._reject(item, f"registration failed: {type(exc).__name__}: {exc}")
        self._loaded.append(item)

    def _own_hook(self, item: _Loaded, hook_name: str) -> Any:
        """``hook_name`` as a pluggy caller that reaches ``item``'s implementation only."""
        others = [plugin for plugin in self._pm.get_plugins() if plugin is not item.plugin]
        return self._pm.subset_hook_caller(hook_name, remove_plugins=others)

    def _disable_clash(self, item: _Loaded, clash: PluginConflictError) -> None:
        """Disable both claimants of one name; the name stays refused to any later one."""
        first, _second = clash.plugins
        registry = self.templates if clash.kind == "template" else self.kernels
        registry.contest(clash.name, first)
        for earlier in [loaded for loaded in self._loaded if loaded.name == first]:
            self._loaded.remove(earlier)
            self._reject(earlier, str(clash))
        self._reject(item, str(clash))

    def _reject(self, item: _Loaded, error: str, *, registered: bool = True) -> None:
        if registered:
            self._pm.unregister(name=item.name)
            self.templates.drop_plugin(item.name)
            self.kernels.drop_plugin(item.name)
            self.deploy_targets.drop_plugin(item.name)
        self._fail(item.name, item.target, error, item.distribution)

    def _fail(
        self, name: str, target: str, error: str, distribution: Distribution | None = None
    ) -> None:
        dist = distribution.name if distribution is not None else None
        self.failures.append(PluginFailure(name, target, error, dist))
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
        result = []
        for item in self._loaded:
            hooks = sorted(caller.name for caller in self._pm.get_hookcallers(item.plugin) or [])
            templates = self.templates.by_plugin(item.name)
            dist = item.distribution
            result.append(
                PluginInfo(
                    name=item.name,
                    target=item.target,
                    distribution=dist.name if dist is not None else None,
                    version=dist.version if dist is not None else None,
                    hooks=hooks,
                    templates=templates,
                    kernels=self.kernels.by_plugin(item.name),
                    egress={name: self.template_egress(name) for name in templates},
                )
            )
        return result

    # Hook facade -------------------------------------------------------------
    def build_image(self, chute: Chute) -> Image | str:
        """The image for ``chute`` (first plugin answer wins): an ``Image`` to build, or
        the ``str`` of a prebuilt image the chute names (nothing to build)."""
        self.load()
        image: Image | str = self._pm.hook.build_image(chute=chute, image=chute.image)
        return image

    def declare_cords(self, chute: Chute) -> list[Cord]:
        """Extra cords that plugins serve with ``chute``."""
        self.load()
        cords: list[Cord] = []
        for _plugin, answers in self._answers("declare_cords", chute=chute):
            for answer in answers:
                cords.extend(answer or [])
        return cords

    def startup_hooks(self, chute: Chute) -> list[LifecycleHook]:
        """Startup work contributed by plugins, each tagged with its plugin's name."""
        from dataclasses import replace

        from chutes_core.cord import LifecycleHook

        self.load()
        hooks: list[LifecycleHook] = []
        for plugin, answers in self._answers("on_startup", chute=chute):
            for answer in answers:
                for hook in [answer] if isinstance(answer, LifecycleHook) else answer:
                    if not isinstance(hook, LifecycleHook):
                        raise PluginError(
                            plugin, f"on_startup returned {hook!r}, not a LifecycleHook"
                        )
                    hooks.append(replace(hook, owner=f"plugin {plugin}"))
        return hooks

    def passthrough(self, chute: Chute, cord: Cord, request: UpstreamRequest) -> None:
        """Let installed plugins adjust a forwarded request (see :meth:`implementers`)."""
        self._pm.hook.passthrough(chute=chute, cord=cord, request=request)

    def passthrough_abort(
        self, chute: Chute, cord: Cord, request: UpstreamRequest, request_id: str | None
    ) -> list[Any]:
        """Tell installed plugins a forwarded request was abandoned; returns the
        coroutines they gave back, for the host to run (see :meth:`implementers`)."""
        answers = self._pm.hook.passthrough_abort(
            chute=chute, cord=cord, request=request, request_id=request_id
        )
        return [answer for answer in answers if answer is not None]

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

    def egress_decision(self, chute: Chute) -> tuple[bool, str]:
        """Whether ``chute`` may reach beyond loopback after startup, and who decided.

        An explicit ``allow_external_egress`` wins (``"chute"``); then the
        first plugin answer (that plugin's name); then the built-in default,
        allowed (``"builtin"``). The plugins are asked once.
        """
        if chute.allow_external_egress is not None:
            return chute.allow_external_egress, "chute"
        self.load()
        for plugin, answers in self._answers("egress_policy", chute=chute):
            if answers:
                return bool(answers[0]), plugin
        return True, builtin.NAME

    def egress_policy(self, chute: Chute) -> bool:
        """Whether ``chute`` may reach beyond loopback after startup (see :meth:`egress_decision`)."""
        return self.egress_decision(chute)[0]

    def egress_source(self, chute: Chute) -> str:
        """Who decided the egress policy: ``chute``, a plugin name, or ``builtin``."""
        return self.egress_decision(chute)[1]

    def template_egress(self, template: str) -> bool:
        """The egress default of chutes built from ``template`` that do not set their own."""
        from chutes_core.chute import Chute

        probe = Chute(username="chutes", name="egress-probe", standard_template=template)
        return self.egress_policy(probe)

    def _answers(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, list[Any]]]:
        """Each plugin's answers to ``hook_name``, in pluggy's call order, and who gave them.

        Each plugin is called through pluggy on its own, with every wrapper
        kept, so arguments are passed as for any hook call (any subset) and
        the facade can say which plugin answered what. Lazily: a caller may
        stop at the first answer, as a first-result hook does.
        """
        hook = getattr(self._pm.hook, hook_name)
        first_result = bool(hook.spec is not None and hook.spec.opts.get("firstresult"))
        answering = [i for i in hook.get_hookimpls() if not (i.wrapper or i.hookwrapper)]
        for impl in reversed(answering):  # pluggy calls the last one first
            others = [other.plugin for other in answering if other is not impl]
            result = self._pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)
            if first_result:
                yield impl.plugin_name, [] if result is None else [result]
            else:
                yield impl.plugin_name, list(result)


def _trace_hook_calls(pm: pluggy.PluginManager) -> None:
    """Log every hook call with the plugins it reached, its outcome and its duration."""
    trace_log.setLevel(logging.INFO)
    local = threading.local()

    def before(hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        local.__dict__.setdefault("started", []).append(time.perf_counter())

    def after(
        outcome: pluggy.Result[Any],
        hook_name: str,
        impls: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, Any],
    ) -> None:
        elapsed_ms = (time.perf_counter() - local.started.pop()) * 1000
        plugins = ", ".join(impl.plugin_name for impl in reversed(impls)) or "no plugin"
        if outcome.exception is not None:
            answer = f"raised {type(outcome.exception).__name__}: {outcome.exception}"
        else:
            answer = f"-> {reprlib.repr(outcome.get_result())}"
        trace_log.info(
            "hook %s(%s) on [%s] %s in %.2f ms",
            hook_name,
            ", ".join(kwargs),
            plugins,
            answer,
            elapsed_ms,
        )

    pm.add_hookcall_monitoring(before, after)


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
    return _manager.load()
