"""Particle peaks from per-class probability maps: max-pool NMS or connected components.

The maps are one array ``maps`` of shape (C, Z, Y, X) (array order z, y, x): channel 0 is the
background, channel ``k`` ≥ 1 the probability of class ``k`` (the caller keeps the list of class
names, channel k = ``class_names[k - 1]``). Positions returned here are in **voxels of the map**
(z, y, x order, floats); :mod:`napari_shrec.core.detect` turns them into tomogram voxels (x, y, z)
when the map has an output stride or covers only a slab.

Map encodings (all monotonic, so every comparison is done on the stored values):

- ``float32`` / ``float64``: probabilities as they are;
- ``float16``: compared through their bit patterns (for non-negative half floats the ``uint16``
  bit pattern orders exactly like the value), so nothing is converted;
- ``uint16``: **fixed point**, probability = value / 65535 (:data:`FIXED_POINT_SCALE`); what
  :func:`~napari_shrec.core.detect.detect` accumulates by default (2 bytes per voxel and class,
  resolution 1.5e-5).

Methods (``PEAK_METHODS``):

``"maxpool"``
    max-pool non-maximum suppression with a ball of the class's NMS radius. Candidates are the
    voxels whose probability is ≥ the class threshold; a candidate is a peak when its value is
    ≥ that of every candidate in the ball around it — without smoothing exactly
    ``scipy.ndimage.maximum_filter(p, footprint=ball) == p`` where values are distinct. The value
    compared is optionally the probability smoothed with a Gaussian (σ a fraction of the class
    radius): a trained network's blobs are saturated and noisy inside, with one local maximum
    per noise bump (on the benchmark's maps plain max-pool reports 10–30 × the duplicates),
    the smoothed blob has one, near its centre. The smoothing is only evaluated at
    the candidates (directly, or at half resolution for wide σ), never over the whole map. Ties
    are broken by the voxel's flat index (the lower index wins), so two peaks are never closer
    than the radius, and a plateau of equal values gives ONE peak at the plateau's centroid.
    Peaks with fewer candidates than a minimum within the class radius (specks) are dropped.
    Only candidates are visited (a compiled kernel with early exit), so the cost is proportional
    to the above-threshold volume, not to the ball size times the map size (a
    ``maximum_filter`` with a 900-voxel ball over 512 × 512 × 200 voxels takes minutes per
    class).
``"components"``
    connected components (6-connected) of the voxels where the class is the arg-max over all
    channels (background included) and its probability ≥ the class threshold; the position is
    the probability-weighted centroid of the component, components smaller than a minimum
    voxel count are dropped. Touching particles of one class whose blobs merge give one
    detection (a limitation the benchmark measures).

The **score** of a detection is its peak probability, in [0, 1]: the (unsmoothed) probability
at the maximum, or with smoothing the largest one within σ of it (``maxpool``), or the largest
one inside the component (``components``); always ≥ the threshold the voxels passed.

:func:`deduplicate_across_classes` then resolves detections of *different* classes that lie closer
than a distance (a fraction of the smaller class radius): the higher score stays.

Mean shift over all voxels (DeepFinder's clustering, its slow step) is deliberately not offered.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .progress import CancelToken, ProgressCallback, ProgressReporter

__all__ = [
    "FIXED_POINT_SCALE",
    "PEAK_METHODS",
    "MIN_NMS_RADIUS",
    "Peaks",
    "ball_offsets",
    "maxpool_peaks",
    "component_peaks",
    "class_label_map",
    "extract_peaks",
    "deduplicate_across_classes",
    "encode_threshold",
    "decode_values",
]

PEAK_METHODS: tuple[str, ...] = ("maxpool", "components")
FIXED_POINT_SCALE = 65535
#: smallest NMS radius used (map voxels): the whole 3 × 3 × 3 neighbourhood.
MIN_NMS_RADIUS = math.sqrt(3.0)


@dataclass
class Peaks:
    """Detections in map coordinates.

    Attributes:
        class_index: (n,) int64 channel of each detection (1-based; channel k = class k - 1 of
            the caller's class list).
        coords_zyx: (n, 3) float64 positions (z, y, x) in map voxels.
        scores: (n,) float64 peak probabilities in [0, 1].
    """

    class_index: NDArray[np.int64]
    coords_zyx: NDArray[np.float64]
    scores: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.scores.size)

    @classmethod
    def empty(cls) -> Peaks:
        return cls(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0))

    @classmethod
    def concat(cls, items: Sequence[Peaks]) -> Peaks:
        if not items:
            return cls.empty()
        return cls(np.concatenate([p.class_index for p in items]).astype(np.int64),
                   np.concatenate([p.coords_zyx for p in items]).reshape(-1, 3),
                   np.concatenate([p.scores for p in items]).astype(np.float64))

    def subset(self, selection: NDArray[Any]) -> Peaks:
        return Peaks(self.class_index[selection], self.coords_zyx[selection],
                     self.scores[selection])


# --------------------------------------------------------------------------- encodings
def _kernel_view(array: np.ndarray) -> np.ndarray:
    """The array the kernels compare: float16 as its uint16 bits, others unchanged."""
    if array.dtype == np.float16:
        return array.view(np.uint16)
    if array.dtype in (np.uint16, np.float32, np.float64):
        return array
    raise TypeError(f"probability maps must be float32, float64, float16 or uint16 (fixed point "
                    f"/ {FIXED_POINT_SCALE}), got {array.dtype}")


def encode_threshold(threshold: float, dtype: np.dtype) -> int | float | None:
    """The stored value ``e`` with ``stored >= e`` ⇔ ``probability >= threshold`` for maps of
    ``dtype`` (in the kernel's view: uint16 bits for float16); None when nothing can pass."""
    t = float(threshold)
    dtype = np.dtype(dtype)
    if dtype == np.uint16:
        if t <= 0:
            return 0
        e = math.ceil(t * FIXED_POINT_SCALE - 1e-9)
        return None if e > FIXED_POINT_SCALE else int(e)
    if dtype == np.float16:
        if t <= 0:
            return 0
        f = np.float16(t)
        if not np.isfinite(f):
            return None
        if float(f) < t:
            f = np.nextafter(f, np.float16(np.inf))
        return int(np.asarray(f, dtype=np.float16).view(np.uint16))
    if dtype == np.float32:
        f = np.float32(t)
        if float(f) < t:
            f = np.nextafter(f, np.float32(np.inf))
        return float(f)
    return t


def decode_values(values: np.ndarray, dtype: np.dtype) -> NDArray[np.float64]:
    """Probabilities (float64) of stored values (kernel view) of maps of ``dtype``."""
    dtype = np.dtype(dtype)
    values = np.asarray(values)
    if dtype == np.uint16:
        return values.astype(np.float64) / FIXED_POINT_SCALE
    if dtype == np.float16:
        return values.astype(np.uint16).view(np.float16).astype(np.float64)
    return values.astype(np.float64)


# --------------------------------------------------------------------------- geometry
def ball_offsets(radius: float) -> NDArray[np.int64]:
    """(m, 3) integer offsets (dz, dy, dx) with 0 < |offset| ≤ ``radius`` (voxels), nearest first
    (then in flat-index order), so a kernel meets a larger neighbour early and stops."""
    r = float(radius)
    r_int = int(math.floor(r + 1e-9))
    grid = np.arange(-r_int, r_int + 1)
    dz, dy, dx = np.meshgrid(grid, grid, grid, indexing="ij")
    d2 = (dz * dz + dy * dy + dx * dx).ravel()
    keep = (d2 <= r * r + 1e-9) & (d2 > 0)
    offsets = np.stack([dz.ravel(), dy.ravel(), dx.ravel()], axis=1)[keep]
    order = np.lexsort((offsets[:, 2], offsets[:, 1], offsets[:, 0], d2[keep]))
    return np.ascontiguousarray(offsets[order], dtype=np.int64)


# --------------------------------------------------------------------------- compiled kernels
_KERNELS: dict[str, Any] = {}
_KERNEL_LOCK = threading.Lock()


def _kernels() -> dict[str, Any]:
    """Compile (once, cached on disk) the numba kernels."""
    if _KERNELS:
        return _KERNELS
    with _KERNEL_LOCK:
        if _KERNELS:
            return _KERNELS
        import numba

        @numba.njit(nogil=True, cache=True)
        def ball_peaks(cmp, raw, shape, cand, offsets, enc, n_nms, n_score,
                       n_support):  # pragma: no cover - jit
            # cmp: values compared (smoothed map, or the raw map itself); raw: the class map;
            # only voxels with raw >= enc (candidates) take part. offsets are sorted by
            # distance: the first n_nms form the NMS ball, the first n_score the score
            # neighbourhood (best = largest raw value), the first n_support the support
            # neighbourhood (support = candidates counted, the voxel itself included).
            nz, ny, nx = shape[0], shape[1], shape[2]
            plane = ny * nx
            n = cand.size
            m = offsets.shape[0]
            is_peak = np.zeros(n, np.bool_)
            tied = np.zeros(n, np.bool_)
            best = np.zeros(n, raw.dtype)
            support = np.zeros(n, np.int64)
            for i in range(n):
                idx = cand[i]
                z = idx // plane
                rest = idx - z * plane
                y = rest // nx
                x = rest - y * nx
                v = cmp[idx]
                top = raw[idx]
                count = 1
                peak = True
                tie = False
                for k in range(m):
                    zz = z + offsets[k, 0]
                    yy = y + offsets[k, 1]
                    xx = x + offsets[k, 2]
                    if zz < 0 or zz >= nz or yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                        continue
                    j = (zz * ny + yy) * nx + xx
                    r = raw[j]
                    if r < enc:
                        continue
                    if k < n_nms:
                        w = cmp[j]
                        if w > v:
                            peak = False
                            break
                        if w == v:
                            if j < idx:
                                peak = False
                                break
                            tie = True
                    if k < n_score and r > top:
                        top = r
                    if k < n_support:
                        count += 1
                is_peak[i] = peak
                tied[i] = tie
                best[i] = top
                support[i] = count
            return is_peak, tied, best, support

        @numba.njit(nogil=True, cache=True)
        def plateau_centroids(flat, raw, enc, shape, seeds):  # pragma: no cover - jit
            # Flood-fill (26-connected) the equal-valued candidate region of each seed; a seed
            # whose region was filled by an earlier seed is merged (keep = False).
            nz, ny, nx = shape[0], shape[1], shape[2]
            plane = ny * nx
            visited = np.zeros(flat.size, np.bool_)
            n = seeds.size
            keep = np.zeros(n, np.bool_)
            centroid = np.zeros((n, 3))
            stack = np.empty(1024, np.int64)
            for i in range(n):
                s = seeds[i]
                if visited[s]:
                    continue
                keep[i] = True
                v = flat[s]
                visited[s] = True
                top = 0
                stack[0] = s
                top = 1
                cz = 0.0
                cy = 0.0
                cx = 0.0
                count = 0
                while top > 0:
                    top -= 1
                    idx = stack[top]
                    z = idx // plane
                    rest = idx - z * plane
                    y = rest // nx
                    x = rest - y * nx
                    cz += z
                    cy += y
                    cx += x
                    count += 1
                    for dz in range(-1, 2):
                        zz = z + dz
                        if zz < 0 or zz >= nz:
                            continue
                        for dy in range(-1, 2):
                            yy = y + dy
                            if yy < 0 or yy >= ny:
                                continue
                            for dx in range(-1, 2):
                                xx = x + dx
                                if xx < 0 or xx >= nx:
                                    continue
                                j = (zz * ny + yy) * nx + xx
                                if visited[j] or flat[j] != v or raw[j] < enc:
                                    continue
                                visited[j] = True
                                if top == stack.size:
                                    grown = np.empty(stack.size * 2, np.int64)
                                    grown[:top] = stack[:top]
                                    stack = grown
                                stack[top] = j
                                top += 1
                centroid[i, 0] = cz / count
                centroid[i, 1] = cy / count
                centroid[i, 2] = cx / count
            return keep, centroid

        @numba.njit(nogil=True, cache=True)
        def argmax_labels(flat, thresholds):  # pragma: no cover - jit
            # flat: (C, N); label = arg-max channel (lowest wins ties) when it is a class
            # channel at or above its threshold, else 0.
            n_channels = flat.shape[0]
            n = flat.shape[1]
            out = np.zeros(n, np.uint8)
            for i in range(n):
                best = 0
                best_value = flat[0, i]
                for c in range(1, n_channels):
                    v = flat[c, i]
                    if v > best_value:
                        best = c
                        best_value = v
                if best > 0 and best_value >= thresholds[best]:
                    out[i] = best
            return out

        @numba.njit(nogil=True, cache=True)
        def block_mean2(vol):  # pragma: no cover - jit
            # 2 × 2 × 2 block means (float32); edge blocks average their in-volume voxels
            nz, ny, nx = vol.shape
            mz, my, mx = (nz + 1) // 2, (ny + 1) // 2, (nx + 1) // 2
            out = np.zeros((mz, my, mx), np.float32)
            count = np.zeros((mz, my, mx), np.float32)
            for z in range(nz):
                for y in range(ny):
                    for x in range(nx):
                        out[z // 2, y // 2, x // 2] += vol[z, y, x]
                        count[z // 2, y // 2, x // 2] += 1.0
            for z in range(mz):
                for y in range(my):
                    for x in range(mx):
                        out[z, y, x] /= count[z, y, x]
            return out

        @numba.njit(nogil=True, cache=True)
        def upsample2_at(low, shape, cand, out):  # pragma: no cover - jit
            # out[cand] = trilinear value of the half-resolution map `low` at each candidate
            # (full-resolution voxel v sits at low-resolution coordinate (v - 0.5) / 2)
            ny, nx = shape[1], shape[2]
            plane = ny * nx
            mz, my, mx = low.shape
            for i in range(cand.size):
                idx = cand[i]
                z = idx // plane
                rest = idx - z * plane
                y = rest // nx
                x = rest - y * nx
                uz = min(max((z - 0.5) / 2.0, 0.0), mz - 1.0)
                uy = min(max((y - 0.5) / 2.0, 0.0), my - 1.0)
                ux = min(max((x - 0.5) / 2.0, 0.0), mx - 1.0)
                z0 = min(int(uz), max(mz - 2, 0))
                y0 = min(int(uy), max(my - 2, 0))
                x0 = min(int(ux), max(mx - 2, 0))
                z1 = min(z0 + 1, mz - 1)
                y1 = min(y0 + 1, my - 1)
                x1 = min(x0 + 1, mx - 1)
                fz = uz - z0
                fy = uy - y0
                fx = ux - x0
                c00 = low[z0, y0, x0] * (1 - fx) + low[z0, y0, x1] * fx
                c01 = low[z0, y1, x0] * (1 - fx) + low[z0, y1, x1] * fx
                c10 = low[z1, y0, x0] * (1 - fx) + low[z1, y0, x1] * fx
                c11 = low[z1, y1, x0] * (1 - fx) + low[z1, y1, x1] * fx
                c0 = c00 * (1 - fy) + c01 * fy
                c1 = c10 * (1 - fy) + c11 * fy
                out[idx] = c0 * (1 - fz) + c1 * fz

        @numba.njit(nogil=True, cache=True)
        def gauss_at(flat, shape, cand, g, out):  # pragma: no cover - jit
            # out[cand] = Gaussian-weighted sum (separable weights g, centred, "nearest"
            # borders) around each candidate, computed directly (cheap for few candidates)
            nz, ny, nx = shape[0], shape[1], shape[2]
            plane = ny * nx
            h = g.size // 2
            for i in range(cand.size):
                idx = cand[i]
                z = idx // plane
                rest = idx - z * plane
                y = rest // nx
                x = rest - y * nx
                total = 0.0
                for a in range(g.size):
                    zz = min(max(z + a - h, 0), nz - 1)
                    sy = 0.0
                    for b in range(g.size):
                        yy = min(max(y + b - h, 0), ny - 1)
                        base = (zz * ny + yy) * nx
                        sx = 0.0
                        for c in range(g.size):
                            xx = min(max(x + c - h, 0), nx - 1)
                            sx += g[c] * flat[base + xx]
                        sy += g[b] * sx
                    total += g[a] * sy
                out[idx] = total

        _KERNELS.update(ball_peaks=ball_peaks, plateau_centroids=plateau_centroids,
                        argmax_labels=argmax_labels, block_mean2=block_mean2,
                        upsample2_at=upsample2_at, gauss_at=gauss_at)
    return _KERNELS


def _unravel(flat_index: NDArray[np.int64], shape: tuple[int, ...]) -> NDArray[np.float64]:
    return np.stack(np.unravel_index(flat_index, shape), axis=1).astype(np.float64)


# --------------------------------------------------------------------------- max-pool NMS
def maxpool_peaks(prob: np.ndarray, radius: float, threshold: float, *,
                  smooth_sigma: float = 0.0, score_radius: float | None = None,
                  min_support: int = 1, support_radius: float | None = None
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Local maxima of one class map within a ball (max-pool non-maximum suppression).

    Candidates are the voxels with probability ≥ ``threshold``. A candidate is a peak when its
    value is ≥ that of every candidate within ``radius`` (ties: lower flat index wins). The value
    compared is the probability itself, or with ``smooth_sigma`` > 0 the probability smoothed
    with a Gaussian of that σ: a saturated or noisy blob interior then has one maximum, near the
    blob's centre, instead of one per noise bump.

    Args:
        prob: (Z, Y, X) map of one class (float32/float64, float16 or uint16 fixed point).
        radius: NMS radius in map voxels (raised to :data:`MIN_NMS_RADIUS`).
        threshold: minimum probability of a candidate.
        smooth_sigma: σ of the Gaussian smoothing of the compared values (map voxels); 0: none.
        score_radius: the score is the largest probability within this distance of the peak
            (map voxels; default ``smooth_sigma``: the peak's own probability without smoothing,
            the best one of its smoothing neighbourhood with).
        min_support: a peak needs at least this many candidates (itself included) within
            ``support_radius`` (default ``radius``): drops specks, like the components'
            minimum size.

    Returns:
        ``(coords_zyx, scores)``: (n, 3) positions in map voxels (plateaus → their centroid) and
        (n,) scores; no two peaks lie within ``radius`` of each other.
    """
    prob = np.ascontiguousarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"a class map must be 3D (z, y, x), got shape {prob.shape}")
    view = _kernel_view(prob)
    enc = encode_threshold(threshold, prob.dtype)
    if enc is None or view.size == 0:
        return np.zeros((0, 3)), np.zeros(0)
    flat = view.reshape(-1)
    cand = np.flatnonzero(flat >= enc).astype(np.int64)
    if cand.size == 0:
        return np.zeros((0, 3)), np.zeros(0)
    kernels = _kernels()
    if smooth_sigma > 0:
        cmp = _smoothed(prob, float(smooth_sigma), cand, kernels)
    else:
        cmp = flat
    enc_value = np.asarray(enc, dtype=flat.dtype)[()]
    nms_r = max(float(radius), MIN_NMS_RADIUS)
    score_r = float(smooth_sigma if score_radius is None else score_radius)
    support_r = float(radius if support_radius is None else support_radius)
    if min_support <= 1:
        support_r = 0.0
    offsets = ball_offsets(max(nms_r, score_r, support_r))
    d2 = np.sum(offsets * offsets, axis=1)

    def within(r: float) -> int:
        return int(np.searchsorted(d2, r * r + 1e-9, side="right"))

    shape = np.asarray(view.shape, dtype=np.int64)
    is_peak, tied, best, support = kernels["ball_peaks"](
        cmp, flat, shape, cand, offsets, enc_value, within(nms_r), within(score_r),
        within(support_r))
    is_peak &= support >= min_support
    peaks = cand[is_peak]
    tied = tied[is_peak]
    coords = _unravel(peaks, view.shape)
    scores = decode_values(best[is_peak], prob.dtype)
    if tied.any():
        keep, centroid = kernels["plateau_centroids"](cmp, flat, enc_value, shape, peaks[tied])
        tied_rows = np.flatnonzero(tied)
        coords[tied_rows] = centroid
        drop = tied_rows[~keep]
        if drop.size:
            mask = np.ones(peaks.size, dtype=bool)
            mask[drop] = False
            coords, scores = coords[mask], scores[mask]
    return coords, scores


#: from this σ (map voxels) on, the smoothing may run at half resolution (8× fewer voxels).
HALF_RESOLUTION_SIGMA = 2.0
#: smoothing directly at the candidates when candidates × kernel voxels stays below this.
DIRECT_SMOOTHING_BUDGET = 2e8


def _smoothed(prob: np.ndarray, sigma: float, cand: NDArray[np.int64],
              kernels: dict[str, Any]) -> NDArray[np.float32]:
    """The class map smoothed with a Gaussian of σ ``sigma`` (flat float32, any monotonic
    scale), at the candidates (the only values the NMS reads; elsewhere 0 or anything).

    A full-resolution Gaussian costs 3 passes over the whole map (1–2 s per class at
    512 × 512 × 200), so: with few candidates (candidates × kernel voxels below
    :data:`DIRECT_SMOOTHING_BUDGET`) the weighted sums are computed at the candidates directly;
    else, from :data:`HALF_RESOLUTION_SIGMA` on, the map is block-averaged 2 × 2 × 2, smoothed
    with the remaining σ at half resolution and interpolated back (trilinear) at the candidates
    (8× less work); else the whole map is smoothed."""
    from scipy import ndimage

    source = prob if prob.dtype != np.float16 else prob.astype(np.float32)
    half = int(math.ceil(3.0 * sigma))
    if cand.size * (2 * half + 1) ** 3 <= DIRECT_SMOOTHING_BUDGET:
        g = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
        g = (g / g.sum()).astype(np.float64)
        out = np.zeros(prob.size, dtype=np.float32)
        kernels["gauss_at"](source.reshape(-1), np.asarray(prob.shape, dtype=np.int64), cand,
                            g, out)
        return out
    if sigma < HALF_RESOLUTION_SIGMA or min(prob.shape) < 4:
        return ndimage.gaussian_filter(source, sigma, truncate=3.0, output=np.float32,
                                       mode="nearest").reshape(-1)
    low = kernels["block_mean2"](source)
    # block averaging already smooths (σ² ≈ (2² − 1)/12 per axis in full-resolution voxels)
    residual = math.sqrt(max(sigma * sigma - 0.25, 0.0)) / 2.0
    low = ndimage.gaussian_filter(low, residual, truncate=3.0, mode="nearest")
    out = np.zeros(prob.size, dtype=np.float32)
    kernels["upsample2_at"](low, np.asarray(prob.shape, dtype=np.int64), cand, out)
    return out


# --------------------------------------------------------------------------- components
def class_label_map(maps: np.ndarray, thresholds: Sequence[float]) -> NDArray[np.uint8]:
    """(Z, Y, X) uint8: the arg-max channel where it is a class at or above its threshold, else 0.

    Args:
        maps: (C, Z, Y, X) probability maps (channel 0 background), C ≤ 256.
        thresholds: (C - 1) thresholds, one per class channel.
    """
    maps = np.ascontiguousarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"maps must be 4D (C, Z, Y, X), got shape {maps.shape}")
    n_channels = maps.shape[0]
    if n_channels > 256:
        raise ValueError("at most 255 classes")
    if len(thresholds) != n_channels - 1:
        raise ValueError(f"need {n_channels - 1} thresholds, got {len(thresholds)}")
    view = _kernel_view(maps)
    big = np.iinfo(np.int64).max if view.dtype.kind in "ui" else np.inf
    encoded = [big]
    for t in thresholds:
        e = encode_threshold(t, maps.dtype)
        encoded.append(big if e is None else e)
    enc = np.asarray(encoded, dtype=np.int64 if view.dtype.kind in "ui" else np.float64)
    flat = view.reshape(n_channels, -1)
    labels = _kernels()["argmax_labels"](flat, enc)
    return labels.reshape(maps.shape[1:])


def component_peaks(prob: np.ndarray, region: np.ndarray, *, min_voxels: int = 1
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """One detection per 6-connected component of ``region``.

    Args:
        prob: (Z, Y, X) map of the class (any encoding of this module).
        region: (Z, Y, X) bool, the voxels that belong to the class (arg-max and threshold).
        min_voxels: smaller components are dropped.

    Returns:
        ``(coords_zyx, scores)``: probability-weighted centroids (map voxels) and the largest
        probability of each component.
    """
    from scipy import ndimage

    if prob.shape != region.shape:
        raise ValueError(f"map {prob.shape} and region {region.shape} differ")
    labels, n = ndimage.label(region, structure=ndimage.generate_binary_structure(3, 1),
                              output=np.int32)
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0)
    flat_labels = labels.reshape(-1)
    idx = np.flatnonzero(flat_labels)
    lab = flat_labels[idx].astype(np.int64)
    del labels, flat_labels
    view = _kernel_view(np.ascontiguousarray(prob)).reshape(-1)
    p = decode_values(view[idx], prob.dtype)
    zyx = _unravel(idx, prob.shape)
    size = np.bincount(lab, minlength=n + 1)
    w = np.bincount(lab, weights=p, minlength=n + 1)
    peak = np.zeros(n + 1)
    np.maximum.at(peak, lab, p)
    centroid = np.stack([np.bincount(lab, weights=p * zyx[:, a], minlength=n + 1)
                         for a in range(3)], axis=1)
    uniform = np.stack([np.bincount(lab, weights=zyx[:, a], minlength=n + 1)
                        for a in range(3)], axis=1)
    keep = size >= max(1, int(min_voxels))
    keep[0] = False
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = np.where((w > 0)[:, None], centroid / w[:, None],
                       uniform / np.maximum(size, 1)[:, None])
    return pos[keep], peak[keep]


# --------------------------------------------------------------------------- all classes
def extract_peaks(
    maps: np.ndarray,
    *,
    method: str = "maxpool",
    thresholds: Sequence[float] | float = 0.5,
    radii: Sequence[float] | float = 3.0,
    smooth_sigmas: Sequence[float] | float = 0.0,
    min_voxels: Sequence[int] | int = 1,
    support_radii: Sequence[float] | float | None = None,
    threads: int = 0,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Peaks:
    """Detections of every class channel of ``maps`` (no cross-class de-duplication).

    Args:
        maps: (C, Z, Y, X) probability maps, channel 0 background (float32/64, float16, or
            uint16 fixed point = probability × 65535). Must be non-negative.
        method: "maxpool" or "components" (module docstring).
        thresholds: minimum peak probability, one per class channel (C - 1) or one for all.
        radii: maxpool NMS radius per class channel, in map voxels (one or C - 1 values).
        smooth_sigmas: maxpool: σ (map voxels) of the Gaussian smoothing before NMS, per class
            channel; 0: none.
        min_voxels: smallest detection kept, per class channel (map voxels): components:
            voxels of the component; maxpool: candidates within ``support_radii`` of the peak.
        support_radii: maxpool: radius (map voxels) in which ``min_voxels`` are counted, per
            class channel (default: ``radii``).
        threads: classes processed in parallel (0: ``os.cpu_count()``); the maxpool kernel
            releases the GIL.
        progress: ``progress(done, total, message)``, one step per class.
        cancel: checked between classes.

    Returns:
        :class:`Peaks` in map coordinates, grouped by class channel.
    """
    if method not in PEAK_METHODS:
        raise ValueError(f"peak method must be one of {PEAK_METHODS}, got {method!r}")
    if maps.ndim != 4:
        raise ValueError(f"maps must be 4D (C, Z, Y, X), got shape {maps.shape}")
    n_classes = maps.shape[0] - 1
    thr = _per_class(thresholds, n_classes, "thresholds", float)
    rad = _per_class(radii, n_classes, "radii", float)
    sig = _per_class(smooth_sigmas, n_classes, "smooth_sigmas", float)
    mins = _per_class(min_voxels, n_classes, "min_voxels", int)
    sup = _per_class(rad if support_radii is None else support_radii, n_classes,
                     "support_radii", float)
    reporter = ProgressReporter(n_classes + (1 if method == "components" else 0), progress,
                                cancel)
    reporter.start(f"peaks ({method})")
    if n_classes <= 0 or maps[0].size == 0:
        return Peaks.empty()
    labels = None
    if method == "components":
        labels = class_label_map(maps, thr)
        reporter.advance("arg-max labels")

    def one(k: int) -> Peaks:
        reporter.check()
        channel = k + 1
        if method == "maxpool":
            coords, scores = maxpool_peaks(maps[channel], rad[k], thr[k],
                                           smooth_sigma=sig[k], min_support=mins[k],
                                           support_radius=sup[k])
        else:
            coords, scores = component_peaks(maps[channel], labels == channel,
                                             min_voxels=mins[k])
        return Peaks(np.full(scores.size, channel, dtype=np.int64), coords, scores)

    n_workers = min(n_classes, threads if threads > 0 else (os.cpu_count() or 1))
    results: list[Peaks] = []
    if n_workers <= 1:
        for k in range(n_classes):
            results.append(one(k))
            reporter.advance(f"class {k + 1}/{n_classes}")
    else:
        with ThreadPoolExecutor(n_workers) as pool:
            for k, res in enumerate(pool.map(one, range(n_classes))):
                results.append(res)
                reporter.advance(f"class {k + 1}/{n_classes}")
    return Peaks.concat(results)


def _per_class(value: Any, n: int, name: str, kind: Callable[[Any], Any]) -> list[Any]:
    if np.ndim(value) == 0:
        return [kind(value)] * n
    values = [kind(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{name}: need one value per class ({n}), got {len(values)}")
    return values


# --------------------------------------------------------------------------- cross-class
def deduplicate_across_classes(
    coords: NDArray[np.floating],
    scores: NDArray[np.floating],
    class_index: NDArray[np.integer],
    radii: NDArray[np.floating] | Sequence[float],
    fraction: float,
) -> NDArray[np.bool_]:
    """Which detections survive cross-class de-duplication.

    Two detections of *different* classes a and b conflict when their distance is below
    ``fraction × min(radius_a, radius_b)``; going through the detections by decreasing score
    (ties: input order), a detection is kept unless it conflicts with one kept already, so of
    each conflicting pair the higher score stays. Same-class pairs are never touched (that is
    the per-class NMS's job).

    Args:
        coords: (n, 3) positions, any consistent axis order and unit (voxels).
        scores: (n,) scores.
        class_index: (n,) class of each detection (index into ``radii``).
        radii: radius per class index, same unit as ``coords``.
        fraction: distance fraction of the smaller radius (0 disables).

    Returns:
        (n,) bool mask of the detections kept.
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    n = coords.shape[0]
    keep = np.ones(n, dtype=bool)
    radii = np.asarray(radii, dtype=np.float64)
    if n < 2 or fraction <= 0:
        return keep
    cls = np.asarray(class_index, dtype=np.int64)
    r = radii[cls]
    pairs = cKDTree(coords).query_pairs(float(fraction * radii[np.unique(cls)].max()),
                                        output_type="ndarray")
    if pairs.size == 0:
        return keep
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.linalg.norm(coords[i] - coords[j], axis=1)
    conflict = (cls[i] != cls[j]) & (d < fraction * np.minimum(r[i], r[j]))
    i, j = i[conflict], j[conflict]
    if i.size == 0:
        return keep
    order = np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    # orient each pair (winner, loser) by rank, then sweep the winners in rank order
    swap = rank[i] > rank[j]
    hi = np.where(swap, j, i)
    lo = np.where(swap, i, j)
    by_winner = np.argsort(rank[hi], kind="stable")
    hi, lo = hi[by_winner], lo[by_winner]
    starts = np.searchsorted(rank[hi], np.arange(n), side="left")
    ends = np.searchsorted(rank[hi], np.arange(n), side="right")
    for position in range(n):
        a, b = starts[position], ends[position]
        if a == b:
            continue
        winner = order[position]
        if keep[winner]:
            keep[lo[a:b]] = False
    return keep
