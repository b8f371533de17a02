"""Input normalisation shared by training and detection (numpy only).

A tomogram's grey values depend on the microscope, the reconstruction and the file format, so the
network sees them after a per-tomogram, robust affine normalisation::

    normalised = (volume − centre) / scale,   then clipped to ± clip

with ``centre`` the median and ``scale`` a robust standard deviation, the inter-percentile range
``(p_high − p_low) / (z(p_high) − z(p_low))`` — for Gaussian noise exactly σ; a few bright
particles or gold beads do not move it. Both statistics come from the sample slab only (``slab_z``
when known: the padding above and below the sample of a SHREC'20 reconstruction holds no
sample) and from a regular sub-sample of at most ``max_samples`` voxels, so they cost well under a
second on a 512 × 512 × 200 tomogram.

A *method* is a JSON-ready dict stored in every checkpoint, e.g. :data:`DEFAULT_NORMALIZATION`::

    {"method": "robust", "low_percentile": 25.0, "high_percentile": 75.0, "clip": 10.0,
     "max_samples": 2000000}

``{"method": "none"}`` leaves values as they are (float32). :func:`normalization_stats` computes
the statistics of a volume, :func:`apply_normalization` applies them to any part of it (a patch
normalised with the tomogram's statistics equals that patch of the normalised tomogram), and
:func:`normalize_volume` does both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_NORMALIZATION",
    "NORMALIZATION_METHODS",
    "NormalizationStats",
    "check_normalization",
    "normalization_stats",
    "apply_normalization",
    "normalize_volume",
]

NORMALIZATION_METHODS: tuple[str, ...] = ("robust", "none")

DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "robust",
    "low_percentile": 25.0,
    "high_percentile": 75.0,
    "clip": 10.0,
    "max_samples": 2_000_000,
}


@dataclass(frozen=True)
class NormalizationStats:
    """``normalised = clip((v − centre) / scale, ±clip)``; ``clip`` None or inf: no clipping."""

    centre: float = 0.0
    scale: float = 1.0
    clip: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"centre": self.centre, "scale": self.scale, "clip": self.clip}


def check_normalization(method: dict[str, Any]) -> dict[str, Any]:
    """A complete copy of a method dict (defaults filled in); ValueError if it is not valid."""
    if not isinstance(method, dict) or "method" not in method:
        raise ValueError(f"a normalisation method is a dict with a 'method' key, got {method!r}")
    name = method["method"]
    if name not in NORMALIZATION_METHODS:
        raise ValueError(f"unknown normalisation method {name!r}; known: "
                         f"{', '.join(NORMALIZATION_METHODS)}")
    if name == "none":
        return {"method": "none"}
    out = {**DEFAULT_NORMALIZATION, **method}
    unknown = set(out) - set(DEFAULT_NORMALIZATION)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} in the robust "
                         f"normalisation; known: {', '.join(DEFAULT_NORMALIZATION)}")
    low, high = float(out["low_percentile"]), float(out["high_percentile"])
    if not 0.0 < low < 50.0 < high < 100.0:
        raise ValueError(f"percentiles must satisfy 0 < low < 50 < high < 100, got {low}, {high}")
    clip = out["clip"]
    if clip is not None and not float(clip) > 0:
        raise ValueError(f"clip must be > 0 or None, got {clip!r}")
    if int(out["max_samples"]) < 1000:
        raise ValueError(f"max_samples must be ≥ 1000, got {out['max_samples']!r}")
    out.update(low_percentile=low, high_percentile=high,
               clip=None if clip is None else float(clip), max_samples=int(out["max_samples"]))
    return out


def _subsample(volume: np.ndarray, max_samples: int) -> np.ndarray:
    """A regular grid sub-sample of at most ~``max_samples`` voxels (reads only those)."""
    n = int(np.prod(volume.shape))
    step = max(1, math.ceil((n / max_samples) ** (1.0 / volume.ndim)))
    return np.asarray(volume[(slice(None, None, step),) * volume.ndim], dtype=np.float64).ravel()


def _lazily_sliced(data: Any) -> Any:
    """``data`` itself when slicing it is lazy (numpy arrays and memmaps, dask arrays), else (a
    zarr array, say) a dask view of it: the statistics slice the slab and take a strided
    sub-sample, which must not read the whole array into memory at once."""
    if isinstance(data, np.ndarray) or type(data).__module__.startswith("dask."):
        return data
    import dask.array as da

    chunks = getattr(data, "chunks", None)
    return da.from_array(data, chunks=chunks if chunks is not None else "auto")


def normalization_stats(volume: np.ndarray, method: dict[str, Any] | None = None, *,
                        slab_z: tuple[int, int] | None = None) -> NormalizationStats:
    """The statistics of ``volume`` (z, y, x) under ``method`` (default
    :data:`DEFAULT_NORMALIZATION`), from the slices ``slab_z = (z0, z1)`` (z1 exclusive) when
    given. A constant volume gets scale 1. Lazy arrays (memmap, dask, zarr) are read only at
    the sub-sample's voxels, chunk by chunk."""
    method = check_normalization(DEFAULT_NORMALIZATION if method is None else method)
    if method["method"] == "none":
        return NormalizationStats()
    volume = _lazily_sliced(volume)
    data = volume if slab_z is None else volume[int(slab_z[0]):int(slab_z[1])]
    if data.size == 0:
        raise ValueError(f"normalisation: empty volume or slab (shape {volume.shape}, slab_z "
                         f"{slab_z})")
    sample = _subsample(data, method["max_samples"])
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise ValueError("normalisation: the volume holds no finite value")
    low, high = method["low_percentile"], method["high_percentile"]
    centre, p_low, p_high = np.percentile(sample, [50.0, low, high])
    normal = NormalDist()
    span = normal.inv_cdf(high / 100.0) - normal.inv_cdf(low / 100.0)
    scale = float(p_high - p_low) / span
    if not (scale > 0 and math.isfinite(scale)):
        std = float(sample.std())
        scale = std if std > 0 else 1.0
    return NormalizationStats(float(centre), scale, method["clip"])


def apply_normalization(array: np.ndarray, stats: NormalizationStats) -> np.ndarray:
    """``clip((array − centre) / scale)`` as a new float32 array."""
    out = np.asarray(array, dtype=np.float32) - np.float32(stats.centre)
    out *= np.float32(1.0 / stats.scale)
    if stats.clip is not None and math.isfinite(stats.clip):
        np.clip(out, -stats.clip, stats.clip, out=out)
    return out


def normalize_volume(volume: np.ndarray, method: dict[str, Any] | None = None, *,
                     slab_z: tuple[int, int] | None = None) -> np.ndarray:
    """``volume`` normalised with its own statistics (:func:`normalization_stats`), float32.

    Args:
        volume: (z, y, x) array (a memory map is read once).
        method: a method dict (default :data:`DEFAULT_NORMALIZATION`).
        slab_z: (z0, z1) slices of the sample to take the statistics from (the whole volume is
            normalised).
    """
    return apply_normalization(volume, normalization_stats(volume, method, slab_z=slab_z))
