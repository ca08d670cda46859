"""``chute.runtime.address``: hooks can tell users where to send requests."""

from __future__ import annotations

from chutes_core import Chute
from chutes_testing import ChuteClient

APP = """
import logging
from chutes_core import Chute

chute = Chute(username="me", name="addressed")


@chute.on_startup()
def say_where(self):
    logging.getLogger("chutes.test").info("send requests to %s", self.runtime.address)
"""


def test_startup_hooks_see_the_address_chutes_run_listens_on(run_chute, tmp_path) -> None:
    (tmp_path / "addressed.py").write_text(APP)
    served = run_chute("addressed:chute", cwd=tmp_path)
    assert f"send requests to {served.url}\n" in served.log


async def test_in_process_there_is_no_address() -> None:
    chute = Chute(username="me", name="in-process")
    seen: list[object] = []

    @chute.on_startup()
    def record(self: Chute) -> None:
        assert self.runtime is not None
        seen.append(self.runtime.address)

    async with ChuteClient(chute):
        pass
    assert seen == [None]
