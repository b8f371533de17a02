"""Where compute runs: "auto" resolves to a CUDA GPU through PyTorch when one is present.

On Linux without an NVIDIA driver (no ``/proc/driver/nvidia/version``) and with PyTorch not yet
imported, "auto" is "cpu" at once: importing torch only to learn that there is no GPU takes
about a second, during which a napari worker thread holds the GIL and the viewer stalls.
"""

from __future__ import annotations

import os
import sys

__all__ = ["resolve_device", "resolve_torch_device"]


def _surely_no_cuda() -> bool:
    """True when there can be no CUDA GPU and torch is not loaded yet (Linux, no driver)."""
    return ("torch" not in sys.modules and sys.platform.startswith("linux")
            and not os.path.exists("/proc/driver/nvidia/version"))


def resolve_device(device: str) -> str:
    """"auto" → "cuda" when PyTorch is installed and sees a CUDA GPU, else "cpu"; any other
    value is returned unchanged."""
    if device != "auto":
        return device
    if _surely_no_cuda():
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_torch_device(device: str) -> str:
    """Like :func:`resolve_device`, but "auto" also tries Apple's MPS: "cuda" when PyTorch sees a
    CUDA GPU, else "mps" when available, else "cpu" (for the neural networks; the simulation
    and reconstruction kernels keep to CUDA or CPU)."""
    if device != "auto":
        return device
    if _surely_no_cuda():  # no MPS on Linux either
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
