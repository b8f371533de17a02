"""Snap a click to the local density centre of a particle ("click roughly, land on the centre").

Annotators click on particles by eye; the click lands a voxel or three off the centre. The snap
moves it to the centre of the density blob it was placed on:

1. read a small window of the tomogram around the click (``2·radius + 3·sigma`` voxels on each
   side, clipped to the volume): only that window is read, so a memory-mapped 512³ tomogram is
   never loaded whole;
2. low-pass it with a Gaussian of ``lowpass_sigma_vox`` (default ``radius / 2``), flipping the
   sign first when particles are dark (``polarity="dark"``, the usual cryo-ET contrast);
3. among the local maxima of the filtered window that lie inside the ball of ``radius_vox``
   around the click (maxima of the whole window, so the flank of a neighbour reaching into the
   ball does not count), take the highest one; if it does not stand out from the
   window's background by ``min_contrast`` robust noise units (median and 1.4826 · MAD of the
   filtered window), the click is kept as it is (nothing to snap to);
4. refine it to sub-voxel precision by mean shift: the centre of mass of the
   background-subtracted filtered density (values below the median count 0) inside a ball of
   ``radius`` around the current estimate, repeated until it moves less than 0.01 voxel;
5. never move farther than ``radius_vox`` from the click (clamped along the shift direction).

``axes`` limits the axes the point may move along: ``(1, 2)`` keeps the clicked slice (z) and
centres the point in y and x only, searching the maxima of that slice.

Coordinates are voxels of the array, (z, y, x), 0-based voxel centres, as floats. Pure
numpy/scipy: no napari, no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "POLARITIES",
    "SnapResult",
    "snap_to_density",
    "snap_point",
    "snap_window_bounds",
    "guess_polarity",
]

POLARITIES: tuple[str, ...] = ("bright", "dark")
"""``bright``: particles are higher than the background (simulated potentials, napari-shrec
reconstructions); ``dark``: particles are lower (the usual contrast of real cryo-ET
tomograms)."""

_REFINE_TOLERANCE_VOX = 0.01
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class SnapResult:
    """The outcome of one snap.

    Attributes:
        point_zyx: the new position, voxels (z, y, x), float64 (the click when not moved).
        moved: whether a density peak was found and the point moved to it.
        shift_vox: distance moved, voxels.
        contrast: height of the chosen peak above the window's median, in robust noise units
            (0 when there was no local maximum inside the ball).
        window: ``((z0, z1), (y0, y1), (x0, x1))``, the half-open voxel ranges read.
    """

    point_zyx: np.ndarray
    moved: bool
    shift_vox: float
    contrast: float
    window: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def _check_inputs(shape: Sequence[int], point: Any, radius_vox: float, polarity: str,
                  axes: Sequence[int]) -> tuple[np.ndarray, float, tuple[int, ...]]:
    if len(shape) != 3:
        raise ValueError(f"snap needs a 3D (z, y, x) volume, got shape {tuple(shape)}")
    p = np.asarray(point, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        raise ValueError(f"point_zyx_vox must be 3 finite numbers (z, y, x), got {point!r}")
    r = float(radius_vox)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"radius_vox must be a positive number of voxels, got {radius_vox!r}")
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    free = tuple(sorted({int(a) for a in axes}))
    if not free or any(a not in (0, 1, 2) for a in free):
        raise ValueError(f"axes must name some of 0 (z), 1 (y), 2 (x), got {tuple(axes)!r}")
    if np.any(p < -0.5) or np.any(p > np.asarray(shape, dtype=float) - 0.5):
        raise ValueError(f"point (z, y, x) = {tuple(round(float(v), 2) for v in p)} lies outside "
                         f"the volume of shape {tuple(int(s) for s in shape)}")
    return p, r, free


def snap_window_bounds(shape: Sequence[int], point_zyx_vox: Any, radius_vox: float,
                       lowpass_sigma_vox: float
                       ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """The half-open voxel ranges ``((z0, z1), (y0, y1), (x0, x1))`` a snap reads: the click
    ± ``ceil(2·radius + 3·sigma) + 1`` voxels, clipped to the volume ``shape`` (z, y, x)."""
    half = int(math.ceil(2.0 * float(radius_vox) + 3.0 * float(lowpass_sigma_vox))) + 1
    centre = np.rint(np.asarray(point_zyx_vox, dtype=np.float64)).astype(int)
    bounds = []
    for c, n in zip(centre, shape, strict=True):
        lo = max(0, int(c) - half)
        hi = min(int(n), int(c) + half + 1)
        bounds.append((lo, max(hi, lo + 1)))
    return tuple(bounds)  # type: ignore[return-value]


def snap_point(
    volume_zyx: Any,
    point_zyx_vox: Any,
    radius_vox: float,
    *,
    lowpass_sigma_vox: float | None = None,
    polarity: str = "bright",
    axes: Sequence[int] = (0, 1, 2),
    min_contrast: float = 3.0,
    max_iterations: int = 50,
) -> SnapResult:
    """Move a point to the local density centre within ``radius_vox`` (see the module notes).

    Args:
        volume_zyx: the tomogram, any array-like indexable with slices (numpy array, memory
            map, dask or zarr array), (z, y, x). Only a window around the point is read.
        point_zyx_vox: the click, voxels (z, y, x) of ``volume_zyx``.
        radius_vox: the particle radius in voxels: the search radius and the farthest the
            point may move.
        lowpass_sigma_vox: Gaussian low-pass sigma in voxels; None: ``radius / 2``; 0: none.
        polarity: "bright" (particles above the background) or "dark" (below it).
        axes: the axes the point may move along (0 = z, 1 = y, 2 = x); ``(1, 2)`` keeps z.
        min_contrast: the peak must exceed the window's median by this many robust noise
            units (1.4826 · MAD of the filtered window), else the point stays put.
        max_iterations: centre-of-mass refinement steps at most.

    Returns:
        A :class:`SnapResult`.

    Raises:
        ValueError: a volume that is not 3D, a point outside it or not 3 finite numbers, a
            radius that is not positive, an unknown polarity or axis.
    """
    from scipy import ndimage

    shape = tuple(int(s) for s in volume_zyx.shape)
    p, r, free = _check_inputs(shape, point_zyx_vox, radius_vox, polarity, axes)
    sigma = r / 2.0 if lowpass_sigma_vox is None else float(lowpass_sigma_vox)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"lowpass_sigma_vox must be >= 0 voxels, got {lowpass_sigma_vox!r}")
    window = snap_window_bounds(shape, p, r, sigma)
    block = np.asarray(volume_zyx[tuple(slice(lo, hi) for lo, hi in window)], dtype=np.float32)
    if polarity == "dark":
        block = -block
    smooth = ndimage.gaussian_filter(block, sigma, mode="nearest") if sigma > 0 else block
    origin = np.asarray([lo for lo, _ in window], dtype=np.float64)
    local = p - origin

    def unchanged(contrast: float = 0.0) -> SnapResult:
        return SnapResult(p.copy(), False, 0.0, float(contrast), window)

    if not np.all(np.isfinite(smooth)):
        return unchanged()
    median = float(np.median(smooth))
    noise = _MAD_TO_SIGMA * float(np.median(np.abs(smooth - median)))
    if noise <= 0:
        noise = float(np.std(smooth))
    if noise <= 0:  # a flat window: nothing to snap to
        return unchanged()

    grids = np.indices(smooth.shape, dtype=np.float64)
    fixed = [a for a in range(3) if a not in free]
    in_plane = np.ones(smooth.shape, dtype=bool)
    for a in fixed:
        in_plane &= np.abs(grids[a] - local[a]) <= 0.5
    dist2 = sum((grids[a] - local[a]) ** 2 for a in free)
    # local maxima of the whole filtered window (a neighbour's flank reaching into the ball is
    # not one), inside the ball
    inside = in_plane & (dist2 <= r * r)
    footprint_size = tuple(3 if a in free else 1 for a in range(3))
    peaks = inside & (smooth >= ndimage.maximum_filter(smooth, size=footprint_size,
                                                       mode="nearest"))
    if not peaks.any():
        return unchanged()
    values = np.where(peaks, smooth, -np.inf)
    best = np.unravel_index(int(np.argmax(values)), smooth.shape)
    contrast = (float(smooth[best]) - median) / noise
    if contrast < float(min_contrast):
        return unchanged(contrast)

    q = np.asarray(best, dtype=np.float64)
    for a in fixed:
        q[a] = local[a]
    weights_all = np.clip(smooth - median, 0.0, None)
    r_ref = max(1.0, r)
    for _ in range(max(0, int(max_iterations))):
        ball = in_plane & (sum((grids[a] - q[a]) ** 2 for a in free) <= r_ref * r_ref)
        w = np.where(ball, weights_all, 0.0)
        total = float(w.sum())
        if total <= 0:
            break
        new = q.copy()
        for a in free:
            new[a] = float((w * grids[a]).sum() / total)
        step = float(np.linalg.norm(new - q))
        q = new
        if step < _REFINE_TOLERANCE_VOX:
            break
    shift = q - local
    dist = float(np.linalg.norm(shift))
    if dist > r:
        q = local + shift * (r / dist)
        dist = r
    return SnapResult(origin + q, dist > 0, dist, contrast, window)


def snap_to_density(
    volume_zyx: Any,
    point_zyx_vox: Any,
    radius_vox: float,
    *,
    lowpass_sigma_vox: float | None = None,
    polarity: str = "bright",
    axes: Sequence[int] = (0, 1, 2),
    min_contrast: float = 3.0,
) -> np.ndarray:
    """The local density centre near a click, voxels (z, y, x), float64: see :func:`snap_point`
    (same arguments) and the module notes. Returns the click itself when there is no density
    peak standing out within ``radius_vox``; never a point farther than ``radius_vox`` away."""
    return snap_point(volume_zyx, point_zyx_vox, radius_vox,
                      lowpass_sigma_vox=lowpass_sigma_vox, polarity=polarity, axes=axes,
                      min_contrast=min_contrast).point_zyx


def guess_polarity(volume_zyx: Any, *, max_slices: int = 16, target_voxels: int = 1 << 18,
                   sigma_vox: float = 1.5) -> str:
    """"bright" or "dark": the sign of the skewness of a lightly low-passed sample of the volume.

    Particles are a minority of the voxels, so they make the tail of the value distribution:
    a positive skew means bright particles (napari-shrec reconstructions and grandmodels), a
    negative one dark particles (real cryo-ET). Only a few evenly spaced z slices, strided in y
    and x, are read (about ``target_voxels`` values), so a memory map is not read whole.
    """
    from scipy import ndimage

    shape = tuple(int(s) for s in volume_zyx.shape)
    if len(shape) != 3:
        raise ValueError(f"guess_polarity needs a 3D (z, y, x) volume, got shape {shape}")
    nz, ny, nx = shape
    zs = np.unique(np.linspace(0, nz - 1, min(nz, max(1, max_slices))).round().astype(int))
    per_slice = max(1, target_voxels // len(zs))
    step = max(1, int(math.ceil(math.sqrt(ny * nx / per_slice))))
    values = []
    for z in zs:
        plane = np.asarray(volume_zyx[int(z), ::step, ::step], dtype=np.float64)
        if sigma_vox > 0:
            plane = ndimage.gaussian_filter(plane, sigma_vox / step, mode="nearest")
        values.append(plane.ravel())
    sample = np.concatenate(values)
    sample = sample[np.isfinite(sample)]
    if sample.size < 3:
        return "bright"
    centred = sample - sample.mean()
    sd = float(np.sqrt(np.mean(centred ** 2)))
    if sd <= 0:
        return "bright"
    skew = float(np.mean(centred ** 3)) / sd ** 3
    return "bright" if skew >= 0 else "dark"
