"""python -m bench overhead|passthrough|embeddings|coldstart|rerank|verify|all"""

from __future__ import annotations

import argparse
import importlib
import time

from bench.common import machine

FIGURES = ("overhead", "passthrough", "embeddings", "coldstart", "rerank", "verify")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("figure", choices=[*FIGURES, "all"])
    figures = FIGURES if (figure := parser.parse_args().figure) == "all" else (figure,)
    print(f"machine: {machine()}")
    for name in figures:
        began = time.perf_counter()
        print(f"\n== {name}")
        importlib.import_module(f"bench.{name}").run()
        print(f"({name} took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
