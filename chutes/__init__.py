"""The ``chutes`` import paths the SDK documentation uses.

``chutes.chute``, ``chutes.image`` and ``chutes.chute.template.<name>`` are
thin aliases of :mod:`chutes_core` and of the installed template plugins.
"""

from chutes_core import __version__

__all__ = ["__version__"]
