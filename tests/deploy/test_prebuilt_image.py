"""A chute that names a prebuilt image has nothing to build: `chutes build` says so."""

from __future__ import annotations

import pytest

from chutes_cli.image_build import plan_build
from chutes_core.errors import ChutesError
from chutes_core.plugins import get_plugin_manager


def test_a_prebuilt_image_reference_is_refused_by_the_build(tmp_path, monkeypatch) -> None:
    (tmp_path / "prebuilt.py").write_text(
        "from chutes.chute import Chute\n"
        "chute = Chute(username='me', name='app', image='org/prebuilt:1')\n"
    )
    monkeypatch.chdir(tmp_path)
    from chutes_core.refs import load_ref

    assert get_plugin_manager().build_image(load_ref("prebuilt:chute")) == "org/prebuilt:1"
    with pytest.raises(ChutesError, match="names a prebuilt image"):
        plan_build("prebuilt:chute")
