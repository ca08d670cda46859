"""Egress lock for Python processes started by a chutes host.

The host puts this directory on ``PYTHONPATH`` and sets
``CHUTES_EGRESS_OPEN_FILE`` for its children. From the moment that file is
gone, this process refuses new connections and datagrams to anything but
loopback (and Unix sockets). The host removes the file when its own startup
has finished, so a child started during startup (an engine) may still fetch
what it needs until then; a renamed or deleted file locks, it never unlocks.

Being first on the path, this module hides any other ``sitecustomize`` the
environment has; that one is run next, as if this one were not there.
"""

import os
import sys

if os.environ.get("CHUTES_EGRESS_OPEN_FILE"):
    from chutes_runtime.egress import install_child_lock

    install_child_lock(os.environ["CHUTES_EGRESS_OPEN_FILE"])


def _run_hidden_sitecustomize() -> None:
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    entries = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    after = entries[entries.index(here) + 1 :] if here in entries else []
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", after)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


_run_hidden_sitecustomize()
