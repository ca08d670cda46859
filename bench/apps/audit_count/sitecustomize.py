"""Counts the audit events of this process (PEP 578) into $AUDIT_COUNT_DIR/<pid>.json, each second.

For ``python -m bench llm --egress-layers``: how many events the egress lock's hook
would see per token in an engine's processes.
"""

import collections
import json
import os
import sys
import threading
import time

_counts: collections.Counter = collections.Counter()


def _hook(event, args, _c=_counts):
    _c[event] += 1


def _dump(path=os.path.join(os.environ.get("AUDIT_COUNT_DIR", "/tmp"), f"{os.getpid()}.json")):
    while True:
        time.sleep(0.5)
        try:
            with open(path + ".tmp", "w") as out:
                json.dump({"events": sum(_counts.values()), "by_event": dict(_counts)}, out)
            os.replace(path + ".tmp", path)
        except OSError:
            pass


sys.addaudithook(_hook)
threading.Thread(target=_dump, daemon=True).start()
