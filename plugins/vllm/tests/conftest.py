"""The vLLM plugin's suite: light tests always; the real engine where vLLM is installed."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
