"""Discovery, validation and the hook facade, with plugins registered in-process."""

from __future__ import annotations

import logging
import types

import pytest

from chutes.chute import Chute
from chutes_core import hookimpl
from chutes_core.errors import PluginConflictError, PluginError, TemplateNotInstalledError
from chutes_core.image import Image
from chutes_core.plugins import PluginManager


def plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        fn.__name__ = hook_name
        setattr(module, hook_name, fn)
    return module


def build_echo_chute(username: str = "me") -> Chute:
    chute = Chute(username=username, name="echo", standard_template="echo")

    @chute.cord()
    def echo(self, text: str) -> str:
        return text

    return chute


def echo_plugin() -> types.ModuleType:
    @hookimpl
    def register_templates(register):
        register("echo", build_echo_chute, description="echo text")

    @hookimpl
    def egress_policy(chute):
        return False if chute.standard_template == "echo" else None

    @hookimpl
    def build_image(chute, image):
        if chute.standard_template == "echo" and image is None:
            return Image(username="me", name="echo", tag="1").run_command("pip install echo")
        return None

    return plugin(
        "echo_plugin",
        register_templates=register_templates,
        egress_policy=egress_policy,
        build_image=build_image,
    )


def manager(*plugins: tuple[str, object], **kwargs) -> PluginManager:
    return PluginManager(
        entry_points=False, plugins=plugins, strict=kwargs.pop("strict", False), **kwargs
    ).load()


def test_templates_and_first_result_hooks() -> None:
    pm = manager(("echo", echo_plugin()))
    assert pm.names == ["echo"]
    chute = pm.templates.get("echo").builder()
    assert pm.egress_policy(chute) is False
    assert pm.egress_source(chute) == "echo"
    assert "pip install echo" in str(pm.build_image(chute))
    # Not the plugin's chute: the built-in defaults answer.
    custom = Chute(username="me", name="custom")
    assert pm.egress_policy(custom) is True
    assert pm.egress_source(custom) == "builtin"
    assert "pip install --no-cache-dir 'chutes==" in str(pm.build_image(custom))


def test_plugin_info_gives_each_templates_egress_default() -> None:
    def register_open(register):
        register("open", build_echo_chute)

    pm = manager(
        ("echo", echo_plugin()),
        ("open", plugin("open_plugin", register_templates=hookimpl(register_open))),
    )
    egress = {info.name: info.egress for info in pm.info()}
    assert egress == {"echo": {"echo": False}, "open": {"open": True}}


def test_an_explicit_egress_setting_wins_over_plugins() -> None:
    pm = manager(("echo", echo_plugin()))
    chute = Chute(username="me", name="x", standard_template="echo", allow_external_egress=True)
    assert pm.egress_policy(chute) is True
    assert pm.egress_source(chute) == "chute"


def test_the_users_image_wins_over_the_default() -> None:
    pm = manager()
    image = Image(username="me", name="mine", tag="2")
    chute = Chute(username="me", name="x", image=image)
    assert pm.build_image(chute) is image


def test_unknown_hook_is_reported_and_the_rest_keeps_working(caplog) -> None:
    @hookimpl
    def on_strartup(chute):  # typo'd hook name
        return None

    caplog.set_level(logging.WARNING, logger="chutes.plugins")
    pm = manager(("typo", plugin("typo", on_strartup=on_strartup)), ("echo", echo_plugin()))
    assert pm.names == ["echo"]
    assert [f.name for f in pm.failures] == ["typo"]
    assert "unknown hook" in pm.failures[0].error and "on_strartup" in pm.failures[0].error
    assert "plugin 'typo' disabled" in caplog.text
    assert "echo" in pm.templates


def test_wrong_hook_arguments_are_reported() -> None:
    @hookimpl
    def egress_policy(chute, surprise):
        return True

    pm = manager(("bad", plugin("bad", egress_policy=egress_policy)))
    assert pm.names == []
    assert "surprise" in pm.failures[0].error


def test_strict_mode_fails_naming_the_plugin() -> None:
    @hookimpl
    def register_templates(register):
        raise RuntimeError("boom")

    with pytest.raises(PluginError, match=r"plugin 'broken'.*boom.*CHUTES_STRICT_PLUGINS"):
        manager(("broken", plugin("broken", register_templates=register_templates)), strict=True)


def test_strict_mode_from_the_environment(monkeypatch) -> None:
    @hookimpl
    def nope(chute):
        return None

    monkeypatch.setenv("CHUTES_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="'bad'"):
        PluginManager(entry_points=False, plugins=[("bad", plugin("bad", nope=nope))]).load()


def test_only_and_disabled_filters(monkeypatch) -> None:
    monkeypatch.setenv("CHUTES_DISABLE_PLUGINS", "echo")
    pm = PluginManager(entry_points=False, plugins=[("echo", echo_plugin())]).load()
    assert pm.names == []
    monkeypatch.delenv("CHUTES_DISABLE_PLUGINS")
    monkeypatch.setenv("CHUTES_PLUGINS", "other")
    pm = PluginManager(entry_points=False, plugins=[("echo", echo_plugin())]).load()
    assert pm.names == []
    assert [f.name for f in pm.failures] == ["other"]  # asked for but not installed


def test_a_template_clash_disables_both_plugins_and_nothing_else(caplog) -> None:
    def register_other(register):
        register("other", build_echo_chute)

    caplog.set_level(logging.WARNING, logger="chutes.plugins")
    pm = manager(
        ("first", echo_plugin()),
        ("bystander", plugin("bystander", register_templates=hookimpl(register_other))),
        ("second", echo_plugin()),
        ("third", echo_plugin()),  # a later claimant of the name is refused as well
    )
    assert pm.names == ["bystander"]
    assert [f.name for f in pm.failures] == ["first", "second", "third"]
    for failure in pm.failures[:2]:
        assert "template 'echo'" in failure.error
        assert "'first'" in failure.error and "'second'" in failure.error
    assert "'third'" in pm.failures[2].error
    assert "plugin 'first' disabled: template 'echo' is registered by both" in caplog.text
    assert "echo" not in pm.templates and "other" in pm.templates
    # The disabled plugins' other hooks are gone too; a custom chute is served as usual.
    custom = Chute(username="me", name="custom")
    assert (pm.egress_policy(custom), pm.egress_source(custom)) == (True, "builtin")
    assert [info.name for info in pm.info()] == ["bystander"]


def test_strict_mode_refuses_a_clash_naming_both() -> None:
    with pytest.raises(PluginConflictError) as info:
        manager(("first", echo_plugin()), ("second", echo_plugin()), strict=True)
    assert "'first'" in str(info.value) and "'second'" in str(info.value)
    assert "template 'echo'" in str(info.value)


def test_hooks_are_called_through_pluggy_with_wrappers_and_any_subset_of_arguments() -> None:
    seen = []

    @hookimpl(wrapper=True)
    def register_templates(register):
        seen.append("register_templates")
        return (yield)

    @hookimpl(wrapper=True)
    def on_startup(chute):
        result = yield
        seen.append(("on_startup", chute.name))
        return result

    @hookimpl
    def declare_cords():  # takes none of the hook's arguments
        from chutes_core.cord import Cord

        def stats(self) -> dict:
            return {}

        return [Cord(stats, method="GET")]

    @hookimpl
    def on_startup_impl():
        from chutes_core.cord import LifecycleHook

        return LifecycleHook(lambda self: None, priority=3)

    pm = manager(
        (
            "watcher",
            plugin("watcher", register_templates=register_templates, on_startup=on_startup),
        ),
        ("echo", echo_plugin()),
        ("bare", plugin("bare", declare_cords=declare_cords, on_startup=on_startup_impl)),
    )
    assert seen.count("register_templates") >= 1  # the wrapper saw a registration call
    chute = Chute(username="me", name="x")
    assert [c.name for c in pm.declare_cords(chute)] == ["stats"]
    hooks = pm.startup_hooks(chute)
    assert [(h.priority, h.owner) for h in hooks] == [(3, "plugin bare")]
    assert ("on_startup", "x") in seen  # the wrapper wrapped the call


def test_hook_calls_are_traced_when_asked(monkeypatch, caplog) -> None:
    monkeypatch.setenv("CHUTES_TRACE_HOOKS", "1")
    caplog.set_level(logging.INFO, logger="chutes.plugins.trace")
    pm = PluginManager(entry_points=False, plugins=[("echo", echo_plugin())], strict=False)
    chute = pm.load().templates.get("echo").builder()
    assert pm.egress_policy(chute) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "chutes.plugins.trace"]
    assert any(
        line.startswith("hook egress_policy(chute) on [echo] -> False in ")
        and line.endswith(" ms")
        for line in lines
    ), lines
    assert any(line.startswith("hook register_templates(register) on [echo]") for line in lines)
    caplog.clear()
    monkeypatch.delenv("CHUTES_TRACE_HOOKS")
    PluginManager(entry_points=False, plugins=[("echo", echo_plugin())]).load()
    assert not [r for r in caplog.records if r.name == "chutes.plugins.trace"]


def test_missing_template_names_the_package_to_install() -> None:
    pm = manager()
    with pytest.raises(TemplateNotInstalledError, match="pip install chutes-vllm"):
        pm.templates.get("vllm")
    with pytest.raises(TemplateNotInstalledError, match="pip install chutes-my-engine"):
        pm.templates.get("my_engine")
    # A caller that knows the plugin's name says so.
    with pytest.raises(ModuleNotFoundError, match="pip install chutes-diffusers"):
        pm.templates.get("diffusion", distribution="chutes-diffusers")


def test_startup_hooks_and_declared_cords_are_tagged_with_their_plugin() -> None:
    from chutes_core.cord import Cord, LifecycleHook

    calls = []

    @hookimpl
    def on_startup(chute):
        return [LifecycleHook(lambda self: calls.append("a"), priority=10)]

    @hookimpl
    def declare_cords(chute):
        def stats(self) -> dict:
            return {}

        return [Cord(stats, method="GET")]

    pm = manager(("extras", plugin("extras", on_startup=on_startup, declare_cords=declare_cords)))
    chute = Chute(username="me", name="x")
    hooks = pm.startup_hooks(chute)
    assert [h.priority for h in hooks] == [10]
    assert hooks[0].name.startswith("plugin extras:")
    assert [c.name for c in pm.declare_cords(chute)] == ["stats"]


def test_bad_on_startup_result_names_the_plugin() -> None:
    @hookimpl
    def on_startup(chute):
        return ["not a hook"]

    pm = manager(("odd", plugin("odd", on_startup=on_startup)))
    with pytest.raises(PluginError, match="plugin 'odd'"):
        pm.startup_hooks(Chute(username="me", name="x"))


def test_passthrough_hooks_adjust_forwarded_requests() -> None:
    from chutes_core.passthrough import UpstreamRequest

    # Built in: a chute without an engine forwards requests unchanged.
    untouched = UpstreamRequest(method="GET", path="/models", port=10101)
    manager().passthrough(Chute(username="me", name="x"), None, untouched)
    assert untouched.headers == {} and untouched.path == "/models"

    @hookimpl
    def passthrough(chute, cord, request):
        request.headers["authorization"] = "Bearer secret"
        request.path = "/v1" + request.path

    pm = manager(("auth", plugin("auth", passthrough=passthrough)))
    request = UpstreamRequest(method="POST", path="/models", port=10101)
    pm.passthrough(Chute(username="me", name="x"), None, request)
    assert request.headers == {"authorization": "Bearer secret"}
    assert request.url == "http://127.0.0.1:10101/v1/models"


def test_builders_import_from_chutes_templates_as_the_api_reference_shows(monkeypatch) -> None:
    pm = manager(("echo", echo_plugin()))
    monkeypatch.setattr("chutes_core.plugins.get_plugin_manager", lambda: pm)
    from chutes.templates import build_echo_chute as imported

    assert imported is build_echo_chute
    with pytest.raises(TemplateNotInstalledError, match="pip install chutes-vllm"):
        from chutes.templates import build_vllm_chute  # noqa: F401
    with pytest.raises(ImportError, match="nothing_here"):
        from chutes.templates import nothing_here  # noqa: F401


def test_implementers_lists_installed_plugins_in_call_order_without_the_builtin() -> None:
    # Only the built-in answers passthrough_headers, and nothing answers passthrough.
    assert manager().implementers("passthrough_headers") == []
    assert manager().implementers("passthrough") == []

    @hookimpl
    def first(chute, cord, request):
        pass

    @hookimpl
    def second(chute, cord, request):
        pass

    pm = manager(("a", plugin("a", passthrough=first)), ("b", plugin("b", passthrough=second)))
    # pluggy calls the later-registered plugin first.
    assert pm.implementers("passthrough") == ["b", "a"]


def test_passthrough_headers_merge_with_the_first_answer_winning() -> None:
    from chutes_core.cord import Cord

    def forwarded(self):
        """A passthrough cord."""

    cord = Cord(forwarded, passthrough=True, passthrough_port=10101)
    chute = Chute(username="me", name="x")
    assert manager().passthrough_headers(chute, cord) == {}  # no engine: nothing built in

    @hookimpl
    def low(chute, cord):
        return {"X-Team": "low", "x-only-low": "1"}

    @hookimpl
    def high(cord):  # any subset of the arguments
        return {"x-team": "high"}

    pm = manager(
        ("low", plugin("low", passthrough_headers=low)),
        ("high", plugin("high", passthrough_headers=high)),
    )
    assert pm.passthrough_headers(chute, cord) == {"x-team": "high", "x-only-low": "1"}
