"""``chutes run``: serve a chute with the runtime host.

This module imports no CLI framework: ``chutes run`` starts every container,
so :func:`main` parses it with argparse. The typer command in
:mod:`chutes_cli.commands` takes the same options (a test keeps them in
step) and serves ``chutes run --help``.
"""

from __future__ import annotations

import argparse

REF_HELP = "The chute: module:attr, path/to/file.py:attr or pkg.module:attr."
HOST_HELP = "Address to bind."
PORT_HELP = "Port to bind."
DEV_HELP = "Serve cords at their public paths only (local development)."
NO_AUTH_HELP = (
    "Serve without authentication on an address beyond loopback (production mode refuses "
    "otherwise unless CHUTES_API_KEYS or CHUTES_SIGNATURE_KEYS is set)."
)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def serve(ref: str, host: str, port: int, dev: bool, no_auth: bool = False) -> int:
    from chutes_runtime.server import serve_ref

    return int(serve_ref(ref, host=host, port=port, dev=dev, no_auth=no_auth))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chutes run")
    parser.add_argument("ref", help=REF_HELP)
    parser.add_argument("--host", default=DEFAULT_HOST, help=HOST_HELP)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=PORT_HELP)
    parser.add_argument("--dev", action="store_true", help=DEV_HELP)
    parser.add_argument("--no-auth", action="store_true", help=NO_AUTH_HELP)
    return parser


def main(args: list[str]) -> int:
    options = parser().parse_args(args)
    return serve(options.ref, options.host, options.port, options.dev, options.no_auth)
