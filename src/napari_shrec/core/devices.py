"""Where compute runs: "auto" resolves to a CUDA GPU through PyTorch when one is present."""

from __future__ import annotations

__all__ = ["resolve_device", "resolve_torch_device"]


def resolve_device(device: str) -> str:
    """"auto" → "cuda" when PyTorch is installed and sees a CUDA GPU, else "cpu"; any other
    value is returned unchanged."""
    if device != "auto":
        return device
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
