"""Smoke test for installed wheels, run from outside the source tree.

Usage: python smoke.py name,name,...  (the plugins expected to load)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

expected = sorted(name for name in sys.argv[1].split(",") if name)
here = os.getcwd()

import chutes_core  # noqa: E402

assert not chutes_core.__file__.startswith(here), "imported from the source tree"
if "site-packages" not in chutes_core.__file__:
    sys.exit(f"chutes_core came from {chutes_core.__file__}, not an installed wheel")

listing = subprocess.run(
    [sys.executable, "-m", "chutes_cli", "plugins", "--json"],
    capture_output=True,
    text=True,
    check=True,
)
document = json.loads(listing.stdout)
if document["failures"]:
    sys.exit(f"plugins failed to load: {document['failures']}")
names = sorted(plugin["name"] for plugin in document["plugins"])
if names != expected:
    sys.exit(f"expected plugins {expected}, found {names}")

from chutes_core.plugins import get_plugin_manager  # noqa: E402

for template in get_plugin_manager().templates:
    module = __import__(f"chutes.chute.template.{template.name}", fromlist=["*"])
    builder = getattr(module, template.builder.__name__)
    assert callable(builder)
    print(f"template {template.name}: {builder.__module__}.{builder.__name__}")

help_text = subprocess.run(
    [sys.executable, "-m", "chutes_cli", "--help"], capture_output=True, text=True, check=True
).stdout
assert "run" in help_text and "plugins" in help_text
# Package data: the egress sitecustomize must ship in the runtime wheel.
import chutes_runtime.egress as egress  # noqa: E402

assert os.path.exists(os.path.join(egress.SITE_DIR, "sitecustomize.py")), "sitecustomize missing"
print(f"smoke ok: {len(names)} plugin(s): {', '.join(names)}")
