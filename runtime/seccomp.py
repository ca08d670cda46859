"""The seccomp layer: from the lock on, the kernel refuses ``AF_PACKET`` and raw sockets.

Loaded into every thread of a serving host (and so into every process it
starts afterwards) through libseccomp's Python binding (``seccomp``, from
libseccomp, or ``pyseccomp``, the same API over ctypes: ``pip install
'chutes[seccomp]'``). A filter cannot see where a ``connect()`` goes, so it
does not replace the namespace; it closes the packet-level way around the audit
hook where the namespace is off. Setting the filter also sets
``no_new_privs``: set-uid programs started after the lock do not gain privileges.
"""

from __future__ import annotations

import errno
import socket
from typing import Any


def _binding() -> Any:
    try:
        import seccomp  # type: ignore[import-not-found]  # libseccomp's own

        return seccomp
    except ImportError:
        import pyseccomp  # type: ignore[import-not-found,unused-ignore]

        return pyseccomp


def install() -> str | None:
    """Load the filter; ``None`` when loaded, else why it is not."""
    try:
        sc = _binding()
    except (ImportError, OSError) as exc:  # no binding, or no libseccomp.so
        return f"no libseccomp binding ({type(exc).__name__}: {exc})"
    try:
        refuse = sc.ERRNO(errno.EPERM)
        rules = sc.SyscallFilter(defaction=sc.ALLOW)
        rules.set_attr(sc.Attr.CTL_TSYNC, 1)
        packet = getattr(socket, "AF_PACKET", None)
        if packet is not None:
            rules.add_rule(refuse, "socket", sc.Arg(0, sc.EQ, packet))
        rules.add_rule(refuse, "socket", sc.Arg(1, sc.MASKED_EQ, 0xF, socket.SOCK_RAW))
        rules.load()
    except (OSError, RuntimeError, ValueError) as exc:
        return f"libseccomp refused the filter ({type(exc).__name__}: {exc})"
    return None
