"""What a running host lets plugins and hooks control.

The runtime sets ``chute.runtime`` to an object with these methods while it
serves the chute; outside a host it is ``None``. Engine drivers use it to
report that the engine died: the host turns unready, drains, and exits with
the given code. Hooks read ``address`` to tell users where to send requests.
"""

from __future__ import annotations

from typing import Protocol


class HostControl(Protocol):
    #: Where the host listens (``http://127.0.0.1:8000``), or ``None`` when it
    #: listens on no socket (the in-process test client).
    address: str | None

    def set_unready(self, reason: str) -> None:
        """Answer readiness probes with "not ready" from now on, with ``reason``."""

    def clear_unready(self, reason: str) -> None:
        """Ready again, if ``reason`` (given to :meth:`set_unready`) is still why it is not."""

    def request_exit(self, code: int, reason: str) -> None:
        """Stop serving (gracefully: in-flight requests finish) and exit with ``code``."""
