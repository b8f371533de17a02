"""Where compute runs: "auto" resolves to a CUDA GPU through PyTorch when one is present."""

from __future__ import annotations

__all__ = ["resolve_device"]


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
