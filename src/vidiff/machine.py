"""Where a measurement ran: the block every benchmark and evaluation report carries."""

from __future__ import annotations

import os
import platform

import numpy as np
import torch


def machine_info(device: str | torch.device = "cpu", **extra) -> dict:
    """Platform, processor, Python / torch / numpy versions, CPU count, intra-op threads, the load
    average at the time (machines are shared) and the device (a CUDA device by its name); `extra`
    entries (e.g. library versions) are added as given.

        report = {"machine": machine_info(args.device, diffusers=diffusers.__version__), ...}
    """
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    return {
        "platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__, "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": name, **extra,
    }
