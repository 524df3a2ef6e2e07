"""What the benchmark scripts record about the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The CUDA device torch would train on (`trainer.device: auto`), or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name(),
            "python": platform.python_version()}
