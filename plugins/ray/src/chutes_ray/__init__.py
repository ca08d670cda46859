"""Chutes on Ray Serve: the ``ray`` deploy target (``chutes deploy REF --target ray``)."""
