"""The SGLang plugin's suite: light tests always, parser tests where SGLang imports."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
