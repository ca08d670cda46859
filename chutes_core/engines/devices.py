"""Whether the engine has an accelerator, decided without importing torch."""

from __future__ import annotations

import glob
import os


def gpu_visible() -> bool:
    """Whether a CUDA or ROCm device is visible to this process (torch is not imported).

    ``CUDA_VISIBLE_DEVICES`` set to an empty string or ``-1`` hides every
    device; otherwise the device nodes decide.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")
