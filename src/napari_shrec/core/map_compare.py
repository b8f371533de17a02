"""Compare density maps: Gaussian low-pass to a resolution and normalized cross-correlation at the
best translation (FFT-based, zero-padded so nothing wraps)."""

from __future__ import annotations

import math

import numpy as np

from .potential import MOLMAP_SIGMA_PER_RESOLUTION

__all__ = ["lowpass_to_resolution", "best_translation_ncc"]


def lowpass_to_resolution(volume: np.ndarray, resolution_nm: float,
                          voxel_size_nm: float) -> np.ndarray:
    """Gaussian low-pass with σ = 0.225 · resolution (molmap convention), in real space."""
    from scipy import ndimage

    sigma_vox = MOLMAP_SIGMA_PER_RESOLUTION * resolution_nm / voxel_size_nm
    return ndimage.gaussian_filter(np.asarray(volume, dtype=np.float64), sigma_vox,
                                   mode="constant")


def best_translation_ncc(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Largest normalized cross-correlation of two maps over all integer translations.

    Both maps are mean-subtracted over their own boxes and zero-padded to a common box of the
    summed size. Returns ``(ncc, shift)`` where ``shift`` (z, y, x, in voxels) moves ``b`` onto
    ``a``; ncc is 1 for identical maps.
    """
    from scipy import fft

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    shape = tuple(sa + sb for sa, sb in zip(a.shape, b.shape))
    pa = np.zeros(shape)
    pb = np.zeros(shape)
    pa[tuple(slice(0, s) for s in a.shape)] = a - a.mean()
    pb[tuple(slice(0, s) for s in b.shape)] = b - b.mean()
    norm = math.sqrt(float((pa ** 2).sum()) * float((pb ** 2).sum()))
    if norm == 0:
        return 0.0, (0,) * a.ndim
    correlation = fft.irfftn(fft.rfftn(pa) * np.conj(fft.rfftn(pb)), s=shape)
    index = np.unravel_index(int(np.argmax(correlation)), shape)
    shift = tuple(int(i) if i <= s // 2 else int(i - s) for i, s in zip(index, shape))
    return float(correlation[index] / norm), shift
