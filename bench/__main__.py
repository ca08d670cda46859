"""python -m bench overhead|passthrough|embeddings|coldstart|rerank|verify|hostcost|llm|all [figure options]"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time

from bench.common import machine

FIGURES = ("overhead", "passthrough", "embeddings", "coldstart", "rerank", "verify", "hostcost")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figure", choices=[*FIGURES, "llm", "all"])
    known, rest = parser.parse_known_args()
    # ``all`` leaves out llm: it needs vLLM's CPU build (nox -s bench_llm).
    figures = FIGURES if (figure := known.figure) == "all" else (figure,)
    # Stopped with SIGTERM, still stop every server started (their blocks' exits run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"machine: {machine()}")
    for name in figures:
        began = time.perf_counter()
        print(f"\n== {name}")
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "main"):  # a figure with options of its own
            module.main(rest)
        elif rest:
            parser.error(f"{name} takes no options: {' '.join(rest)}")
        else:
            module.run()
        print(f"({name} took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
