"""A volume: a (z, y, x) array with its voxel size in nm and its origin in nm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Volume"]


@dataclass
class Volume:
    """A 3D volume (or a stack of 2D images, e.g. a tilt series) with physical scale.

    Attributes:
        data: array of shape (z, y, x) — x is the fastest MRC axis. May be a read-only
            ``numpy.memmap`` when read from disk.
        voxel_size_nm: voxel edge lengths (z, y, x) in nm.
        origin_nm: position of voxel (0, 0, 0) in nm, (z, y, x); MRC header origin.
        metadata: free provenance (source path, header fields, …).
    """

    data: np.ndarray
    voxel_size_nm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_nm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(
                f"a Volume needs a 3D (z, y, x) array, got shape {tuple(self.data.shape)}"
            )
        vs = tuple(float(v) for v in np.broadcast_to(np.asarray(self.voxel_size_nm), (3,)))
        if any(not np.isfinite(v) or v <= 0 for v in vs):
            raise ValueError(f"voxel_size_nm must be positive and finite, got {vs}")
        self.voxel_size_nm = vs  # type: ignore[assignment]
        self.origin_nm = tuple(  # type: ignore[assignment]
            float(v) for v in np.broadcast_to(np.asarray(self.origin_nm), (3,))
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def isotropic_voxel_size_nm(self) -> float:
        """The voxel size when all three axes agree (within 1e-6 relative); else ValueError."""
        vz, vy, vx = self.voxel_size_nm
        if not (np.isclose(vz, vy, rtol=1e-6) and np.isclose(vz, vx, rtol=1e-6)):
            raise ValueError(f"voxel size is anisotropic: (z, y, x) = {self.voxel_size_nm} nm")
        return vx

    @property
    def extent_nm(self) -> tuple[float, float, float]:
        """Physical size (z, y, x) in nm."""
        return tuple(n * v for n, v in zip(self.shape, self.voxel_size_nm))  # type: ignore[return-value]
