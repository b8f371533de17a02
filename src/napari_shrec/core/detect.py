"""Detection: sliding-window inference of a class-probability network over a whole tomogram, then
peaks per class, cross-class de-duplication, a score per particle and per-class thresholds.

Conventions: arrays are indexed ``[z, y, x]``; particle coordinates are voxels of the tomogram,
written x, y, z (:class:`~napari_shrec.core.particles.ParticleList`); radii are nm in the class
table and voxels (``nm / voxel_size_nm``) everywhere else.

Sliding window
--------------
The region that is searched is the whole tomogram, or the sample slab ``slab_z = (z_start,
z_stop)`` (half-open, voxels) when it is known; everything outside is background (probability 1
for channel 0, no detections). Patches of ``predictor.patch_size`` tile the region on a regular grid
with the given ``overlap`` (fraction of the patch on each axis): ``n = ceil((L - P) / step) + 1``
patches per axis spread evenly from 0 to ``L - P``, so the last patch ends at the border and only
an axis shorter than the patch is padded (reflected; voxels beyond the tomogram). Patches read the
tomogram itself around the slab where it exists (context), but only the slab's predictions count.

Every patch's output is multiplied by a smooth window (``"gaussian"``: σ = 1/8 of the patch edge,
as in nnU-Net; ``"cosine"``: a Hann window, sin²(π(i + ½)/n)), both never zero. Windows and the
patch grid are separable, so the summed weight at a voxel is a product of three 1D sums: each
patch's window is divided by it *before* accumulation and the output maps need no second pass
(a constant predictor gives that constant everywhere, to float32 rounding, or to ±a few 1/65535
in fixed point). Maps are accumulated in place, one patch at a time, never holding more than
two batches of patches: by default as 16-bit fixed point (probability × 65535; 2 bytes per voxel
and channel: 13 × 512 × 512 × 200 → 1.4 GB at stride 1, 0.17 GB at stride 2), or float32
(``map_dtype="float32"``, twice that). Measured peak RSS of a whole detection of a 512 × 512 ×
200 tomogram: 1.9–2.2 GB at stride 1, < 0.5 GB at stride 2 (without ``probability_maps``).

Blocks. The maps of a large tomogram do not fit in memory (2 bytes per voxel and channel: 13.6 GiB
for 13 channels over 512 × 1024 × 1024). When the maps and the peak finding's buffers (5 bytes
per voxel and class searched in parallel) would exceed ``max_memory_mb``, the searched region is
cut into 3D blocks of near-equal cores (the split that runs the fewest patches within the
budget; interior boundaries even, so the peak finder's half-resolution smoothing sees the same
2 × 2 × 2 grid), each grown by a halo ≥ what the peaks in its core depend on (maxpool: NMS
radius + 3σ of the smoothing + 4 voxels; components: 3 class radii). For each block, every patch
meeting the grown block runs and is blended into the block's maps (patch windows are normalised
over the whole grid, so the maps in the grown block are exactly those of the whole-tomogram run),
peaks are found, and those in the core (not the halo) are kept; cross-class de-duplication and
sorting run once over all blocks' peaks. Detections are therefore the same as in one piece
(unless a ``components`` component is larger than the halo, or the peak finder picks a different
smoothing path for a block than for the whole map — both rare), while patches meeting two grown
blocks run twice: about 1.9 × the patches for 512 × 1024 × 1024 at 2048 MiB (see
``DetectionResult.metadata``: ``n_blocks``, ``unique_patches``). The tomogram is read one row of
patches (one z position, the block's y and x) at a time, so any array-like that slices lazily
works: a memmap, a zarr or a dask array (OME-Zarr).

Stride. A predictor with ``output_stride`` s returns maps at 1/s resolution where output voxel j
covers input voxels s·j … s·j + s - 1 (its centre, s·j + (s - 1)/2, is where its position maps
to; what 2 × 2 × 2 pooling gives, and what block-averaged targets train). Patches are placed on
multiples of s. Peaks are found on the stride-s maps (s³ fewer voxels) and mapped back to tomogram
voxels; ``probability_maps`` are upsampled to full resolution by trilinear interpolation with that
same alignment.

Batches. A predictor takes one patch. When it also has an optional method
``predict_batch(patches: float32 (B, Z, Y, X)) -> (B, C, Z/s, Y/s, X/s)``, patches go through it
``batch_size`` at a time (a GPU likes batches); otherwise the predictor is called in a loop.
The blending of one batch runs in a background thread while the predictor computes the next.

Peaks and scores: see :mod:`napari_shrec.core.peaks`. The score of a particle is its **peak
probability** (the class probability at the maximum, or the largest one in the component). The
output list is sorted by decreasing score, so for the SHREC scorer the first hit on a particle is
always the most confident prediction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .classes import SHREC21_TABLE, ClassTable, normalize_class_name
from .particles import ParticleList
from .peaks import (
    FIXED_POINT_SCALE,
    MIN_NMS_RADIUS,
    PEAK_METHODS,
    Peaks,
    deduplicate_across_classes,
    extract_peaks,
)
from .progress import CancelToken, ProgressCallback, ProgressReporter
from .nets.normalize import NormalizationStats, normalization_stats
from .rescore import (
    DENSITY_NORMALIZATION,
    CandidateRescorer,
    density_features,
    neighbourhood_features,
)
from .volume import Volume

__all__ = [
    "BLENDS",
    "MAP_DTYPES",
    "PEAK_METHODS",
    "TUNING_OBJECTIVES",
    "TEST_TIME_FLIPS",
    "Predictor",
    "DetectParams",
    "DetectionResult",
    "detect",
    "particles_from_maps",
    "class_radius_nm",
    "mean_class_thresholds",
    "tune_class_thresholds",
    "apply_class_thresholds",
    "memory_budget_mb",
    "window_1d",
    "patch_positions",
]

BLENDS: tuple[str, ...] = ("gaussian", "cosine")
MAP_DTYPES: tuple[str, ...] = ("float16", "float32")
TUNING_OBJECTIVES: tuple[str, ...] = ("localization",)
#: Patch axes (z, y, x) flipped by each test-time flip, in the order they are used: the identity,
#: the 180° rotations about y, x and z, then the mirror images. Every axis flip maps the missing
#: wedge (a wedge of k_x–k_z about the tilt axis y) onto itself.
TEST_TIME_FLIPS: tuple[tuple[int, ...], ...] = ((), (0, 2), (0, 1), (1, 2), (2,), (0,), (1,),
                                                (0, 1, 2))


@runtime_checkable
class Predictor(Protocol):
    """What :func:`detect` runs over the tomogram.

    ``predictor(patch)`` takes a float32 (Z, Y, X) patch of the tomogram, raw (the predictor
    normalises its input itself) and of exactly ``patch_size``, and returns float32 class
    probabilities (C, Z/s, Y/s, X/s) with s = ``output_stride``: channel 0 background, channel k
    the class ``class_names[k - 1]`` given to :func:`detect`; values in [0, 1] summing to 1 over
    the channels (softmax).

    Attributes:
        patch_size: (Z, Y, X) input patch size in voxels, each a multiple of the network's
            2^depth (hence of ``output_stride``).
        output_stride: 1 (full resolution) or 2 (half).

    Optional: ``predict_batch(patches (B, Z, Y, X)) -> (B, C, Z/s, Y/s, X/s)``.
    """

    patch_size: tuple[int, int, int]
    output_stride: int

    def __call__(self, patch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DetectParams:
    """How :func:`detect` runs (the CLI and the Detect widget are built from this).

    Attributes:
        overlap: fraction of the patch shared by neighbouring patches, per axis, in [0, 0.9].
            Default 0.25: a network's predictions degrade only near the patch border (its
            receptive field is cut off) and the Gaussian window already down-weights the border,
            while the cost grows as 1 / (1 - overlap)³: 2.4 × the patch count of no overlap for
            0.25, 8 × for 0.5 — 484 vs 1350 patches of 64³ over 512 × 512 × 200, which decides
            whether detection fits the 5 min CPU budget. Use 0.5 on a GPU.
        blend: window over each patch's output: "gaussian" or "cosine".
        peak_method: "maxpool" (ball NMS) or "components" (connected components); see
            :mod:`napari_shrec.core.peaks`.
        min_score: probability threshold of the voxels that can make a detection (maxpool
            candidates, component voxels), for every class, and the minimum score of a
            detection of a class without its own threshold.
        class_thresholds: {class name: minimum score} (e.g. from :func:`tune_class_thresholds`):
            a detection of that class is kept when its score reaches it; applied after the
            peaks and before cross-class de-duplication, so a threshold below ``min_score`` has
            no effect and one above 1 switches the class off. Tune them on detections made with
            the same ``min_score`` (see :func:`tune_class_thresholds`).
        radius_fraction: maxpool NMS radius = this × the class's equivalent radius
            (:func:`class_radius_nm`). Default 1.5: two particles of one class that do not
            overlap are ≥ 2 radii apart if spherical, closer only when elongated; on the
            benchmark's crowded grandmodel 1.5 halves the duplicates of 1.0 and loses no
            particle (``benchmarks/bench_peaks.py``).
        smooth_fraction: maxpool: the class map is smoothed with a Gaussian of σ = this × the
            class radius before NMS (one maximum per noisy blob; 0: off, the plain max-pool).
            Default 0.75: benchmark duplicates 306 (off), 120 (0.25), 29 (0.5), 10 (0.75), at
            the same recall.
        cross_class_distance_fraction: two detections of different classes closer than this ×
            the smaller class radius are one particle: the higher score stays (0 disables).
            Default 2.0: two spheres of radii r ≤ R that do not overlap are ≥ r + R ≥ 2r
            apart, while one particle split between two similar classes gives detections 1–2
            radii apart (benchmark: 1.0 leaves 14 × the duplicates, 3.0 loses 2 % of the
            particles).
        keep_probability_maps: return ``probability_maps`` (C, Z, Y, X) at full resolution
            (memory: C × Z × Y × X × 2 bytes with float16).
        batch_size: patches per call of ``predict_batch`` (when the predictor has it).
        threads: classes whose peaks are extracted in parallel (0: all cores). The predictor
            manages its own threads (e.g. ``torch.set_num_threads``).
        map_dtype: "float16" (default: maps accumulated as 16-bit fixed point, resolution 1.5e-5,
            returned as float16) or "float32" (twice the memory).
        min_size_fraction: drop specks: a detection needs at least this fraction of its
            class's equivalent-sphere volume above ``min_score`` (components: voxels of the
            component; maxpool: voxels within the class radius of the peak). Default 0.05: on
            the benchmark it removes 94 % of the false positives for 0.4 % of the particles.
        test_time_flips: average the predictor's output over this many flipped copies of each
            patch (1: off, up to 8), flipped back before blending. The flips keep the missing
            wedge where it is (every axis flip does); the order is the identity, then the three
            180° rotations about y, x and z, then the four mirror images. Inference time grows
            by this factor; averaging removes part of the network's noise on the faint (small)
            particles.
        fallback_radius_nm: radius of classes the class table has no volume for (nm).
        max_memory_mb: memory (MiB) that the probability maps and the peak finding may take
            at once. Maps cost 2 bytes per voxel and channel (``float16``; 4 with ``float32``),
            peak finding 5 bytes per voxel and class searched in parallel. When the whole
            searched region fits, it is done in one piece (peak threads are reduced first);
            otherwise in 3D blocks with a halo (see the module notes: same detections, some
            patches run twice). Default 2048: a 512 × 512 × 200 slab with 12 classes is one
            piece; 0: no limit. ``keep_probability_maps`` always uses one piece. A tomogram
            read lazily (memory-mapped MRC, OME-Zarr) of 1 GiB or more gets at most a quarter
            of its own size (:func:`memory_budget_mb`), so detection of a volume larger than
            the RAM holds less than the volume.
    """

    overlap: float = 0.25
    blend: str = "gaussian"
    peak_method: str = "maxpool"
    min_score: float = 0.5
    class_thresholds: Mapping[str, float] | None = None
    radius_fraction: float = 1.5
    smooth_fraction: float = 0.75
    cross_class_distance_fraction: float = 2.0
    keep_probability_maps: bool = False
    batch_size: int = 4
    threads: int = 0
    map_dtype: str = "float16"
    min_size_fraction: float = 0.05
    fallback_radius_nm: float = 5.0
    max_memory_mb: float = 2048.0
    test_time_flips: int = 1

    def __post_init__(self) -> None:
        def number(name: str, low: float, high: float = math.inf) -> None:
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") \
                    from None
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
            object.__setattr__(self, name, value)

        number("overlap", 0.0, 0.9)
        number("min_score", 0.0, 1.0)
        number("radius_fraction", 1e-6)
        number("smooth_fraction", 0.0)
        number("cross_class_distance_fraction", 0.0)
        number("min_size_fraction", 0.0, 1.0)
        number("fallback_radius_nm", 1e-6)
        number("max_memory_mb", 0.0)
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if self.peak_method not in PEAK_METHODS:
            raise ValueError(f"peak_method must be one of {PEAK_METHODS}, got "
                             f"{self.peak_method!r}")
        if self.map_dtype not in MAP_DTYPES:
            raise ValueError(f"map_dtype must be one of {MAP_DTYPES}, got {self.map_dtype!r}")
        for name, low, high in (("batch_size", 1, math.inf), ("threads", 0, math.inf),
                                ("test_time_flips", 1, len(TEST_TIME_FLIPS))):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                    not low <= value <= high:
                limits = f"≥ {low}" if high == math.inf else f"in [{low}, {high}]"
                raise ValueError(f"{name} must be an integer {limits}, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "keep_probability_maps", bool(self.keep_probability_maps))
        if self.class_thresholds is not None:
            clean: dict[str, float] = {}
            for key, value in dict(self.class_thresholds).items():
                t = float(value)
                if not (math.isfinite(t) and t >= 0):
                    raise ValueError(f"class threshold of {key!r} must be ≥ 0, got {value!r}")
                clean[normalize_class_name(key)] = t
            object.__setattr__(self, "class_thresholds", MappingProxyType(clean))

    def __hash__(self) -> int:
        items = self.to_dict()
        thresholds = items.pop("class_thresholds")
        return hash((tuple(items.items()),
                     None if thresholds is None else tuple(sorted(thresholds.items()))))

    def threshold_of(self, class_name: str) -> float:
        """The minimum score of a detection of a class: its own threshold, else ``min_score``."""
        if self.class_thresholds is not None:
            own = self.class_thresholds.get(normalize_class_name(class_name))
            if own is not None:
                return float(own)
        return self.min_score

    def replace(self, **changes: Any) -> DetectParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["class_thresholds"] = (None if self.class_thresholds is None
                                   else dict(self.class_thresholds))
        return out


@dataclass
class DetectionResult:
    """What :func:`detect` found.

    Attributes:
        particles: detections sorted by decreasing score: class_name, x, y, z (tomogram voxels,
            floats), score (peak probability); ``voxel_size_nm`` set, ``metadata`` holds the
            method and the threshold of each class.
        probability_maps: (C, Z, Y, X) float16 (or float32) at full resolution over the whole
            tomogram when ``keep_probability_maps``, else None.
        timings_s: seconds: "inference" (predictor calls), "blending" (accumulation, in a
            background thread overlapping the predictor), "peaks", "deduplication", "maps",
            "total".
        params: the parameters used.
        class_names: channel k = ``class_names[k - 1]``.
        slab_z: the searched z range (start, stop), voxels.
        n_patches: predictor patches run.
        output_stride: the predictor's stride.
        features: (n, F) float32 features of the particles' rows when a rescorer or
            ``feature_radii_vox`` was given, else None: the maps'
            :func:`~napari_shrec.core.rescore.neighbourhood_features`, then the tomogram's
            :func:`~napari_shrec.core.rescore.density_features` when the rescorer or
            ``image_radii_vox`` asks for them.
    """

    particles: ParticleList
    probability_maps: np.ndarray | None
    timings_s: dict[str, float]
    params: DetectParams
    class_names: tuple[str, ...] = ()
    slab_z: tuple[int, int] = (0, 0)
    n_patches: int = 0
    output_stride: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None


# --------------------------------------------------------------------------- geometry helpers
def class_radius_nm(name: str, class_table: ClassTable | None = None,
                    fallback_nm: float = 5.0) -> float:
    """A class's radius in nm: its equivalent-sphere radius (3V/4π)^(1/3) from the class table,
    else its effective radius, else ``fallback_nm`` (classes without shape statistics or not in
    the table)."""
    table = class_table if class_table is not None else SHREC21_TABLE
    if name in table:
        cls = table.by_name(name)
        for r in (cls.equivalent_radius_nm, cls.effective_radius_nm):
            if r is not None and r > 0:
                return float(r)
    return float(fallback_nm)


def window_1d(n: int, blend: str) -> NDArray[np.float64]:
    """The 1D blending window of length ``n`` (max 1, never 0)."""
    i = np.arange(n, dtype=np.float64)
    if blend == "gaussian":
        sigma = max(n / 8.0, 1e-6)
        w = np.exp(-0.5 * ((i - (n - 1) / 2.0) / sigma) ** 2)
    elif blend == "cosine":
        w = np.sin(np.pi * (i + 0.5) / n) ** 2
    else:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    w = w / w.max()
    return np.maximum(w, 1e-6)


def patch_positions(length: int, patch: int, overlap: float, stride: int = 1) -> list[int]:
    """Start positions (voxels) of patches of size ``patch`` covering [0, length), evenly spread
    from 0 to length - patch, each a multiple of ``stride`` (``length`` and ``patch`` must be
    multiples of it); consecutive patches overlap by at least ``overlap`` × patch (rounded) and
    never leave a gap."""
    if length <= patch:
        return [0]
    step = max(stride, int(round(patch * (1.0 - overlap))) // stride * stride)
    n = math.ceil((length - patch) / step) + 1
    raw = np.linspace(0, length - patch, n)
    pos = sorted({int(round(p / stride)) * stride for p in raw})
    pos[-1] = length - patch  # a multiple of stride: both are
    return pos


def _normalised_windows(length_out: int, patch_out: int, positions_out: Sequence[int],
                        blend: str) -> list[NDArray[np.float32]]:
    """Per patch position, the 1D window divided by the summed windows at the voxels it covers."""
    w = window_1d(patch_out, blend)
    total = np.zeros(length_out, dtype=np.float64)
    for p in positions_out:
        total[p:p + patch_out] += w
    return [(w / total[p:p + patch_out]).astype(np.float32) for p in positions_out]


# --------------------------------------------------------------------------- kernels
_ACC: list[Any] = []


def _accumulate_kernel() -> Callable[..., None]:
    """The compiled accumulation ``acc[c, z, y, x] += p · w`` of one patch's probabilities,
    clipped to [0, 1] and NaN-safe. With ``fixed_point`` the accumulator is uint16 holding
    p · 65535 (rounded, saturating), else float32."""
    if _ACC:
        return _ACC[0]
    import numba

    @numba.njit(nogil=True, cache=True)
    def kernel(acc, out, wz, wy, wx, z0, y0, x0, fixed_point):  # pragma: no cover - jit
        n_c, pz, py, px = out.shape
        _, az, ay, ax = acc.shape
        for c in range(n_c):
            for i in range(pz):
                z = z0 + i
                if z < 0 or z >= az:
                    continue
                for j in range(py):
                    y = y0 + j
                    if y < 0 or y >= ay:
                        continue
                    wzy = wz[i] * wy[j]
                    for k in range(px):
                        x = x0 + k
                        if x < 0 or x >= ax:
                            continue
                        p = out[c, i, j, k]
                        if not (p > 0.0):  # also NaN
                            continue
                        if p > 1.0:
                            p = 1.0
                        if fixed_point:
                            v = acc[c, z, y, x] + int(p * wzy * wx[k] * 65535.0 + 0.5)
                            acc[c, z, y, x] = 65535 if v > 65535 else v
                        else:
                            acc[c, z, y, x] += p * wzy * wx[k]

    _ACC.append(kernel)
    return kernel


# --------------------------------------------------------------------------- patches
def _read_patch(volume: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """volume[start : start + size] as float32, reflected where it leaves the volume."""
    lo = [max(0, s) for s in start]
    hi = [min(n, s + p) for s, p, n in zip(start, size, volume.shape)]
    block = np.asarray(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    pad = [(a - s, s + p - b) for s, p, a, b in zip(start, size, lo, hi)]
    if any(before or after for before, after in pad):
        for axis, (before, after) in enumerate(pad):
            if not (before or after):
                continue
            widths = [(0, 0)] * 3
            widths[axis] = (before, after)
            mode = "reflect" if block.shape[axis] > 1 else "edge"
            block = np.pad(block, widths, mode=mode)
    return np.ascontiguousarray(block)


def _run_predictor(predictor: Any, patches: list[np.ndarray], batch: bool,
                   flips: int = 1) -> list[np.ndarray]:
    """Predictor outputs as fresh C-contiguous float32 arrays (copies), averaged over the first
    ``flips`` of :data:`TEST_TIME_FLIPS` (each output flipped back; patch sizes are multiples
    of the output stride, so output voxel j of a flipped patch is voxel n − 1 − j unflipped)."""
    def once(items: list[np.ndarray]) -> list[np.ndarray]:
        if batch and len(items) > 1:
            out = predictor.predict_batch(np.stack(items))
            return [np.array(o, dtype=np.float32, order="C", copy=True) for o in out]
        return [np.array(predictor(p), dtype=np.float32, order="C", copy=True) for p in items]

    outputs = once(patches)
    for axes in TEST_TIME_FLIPS[1:flips]:
        flipped = once([np.ascontiguousarray(np.flip(p, axis=axes)) for p in patches])
        for total, extra in zip(outputs, flipped):
            total += np.flip(extra, axis=tuple(a + 1 for a in axes))
    if flips > 1:
        for total in outputs:
            total /= flips
    return outputs


# --------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class _PeakSettings:
    """Per-class peak-finding parameters of one detection (map voxels unless said)."""

    radii_vox: NDArray[np.float64]  # class radii, tomogram voxels
    thresholds: list[float]
    nms: NDArray[np.float64]
    sigmas: NDArray[np.float64]
    min_voxels: NDArray[np.int64]
    support: NDArray[np.float64]


def _peak_settings(names: Sequence[str], params: DetectParams, voxel_size_nm: float,
                   stride: int, table: ClassTable) -> _PeakSettings:
    radii_vox = np.array([class_radius_nm(n, table, params.fallback_radius_nm) / voxel_size_nm
                          for n in names], dtype=np.float64)
    sphere_vox = 4.0 / 3.0 * np.pi * radii_vox ** 3 / stride ** 3
    return _PeakSettings(
        radii_vox=radii_vox,
        thresholds=[params.threshold_of(n) for n in names],
        nms=radii_vox * params.radius_fraction / stride,
        sigmas=radii_vox * params.smooth_fraction / stride,
        min_voxels=np.maximum(1, np.ceil(params.min_size_fraction * sphere_vox)).astype(int),
        support=radii_vox / stride)


def _peak_halo(settings: _PeakSettings, method: str) -> int:
    """Map voxels beyond a block's core that the peaks inside the core depend on (even).

    maxpool: a core voxel's NMS ball (radius r_nms) holds candidates whose smoothed values
    read the map up to 3σ (+ 4 voxels for the half-resolution smoothing) further; the score and
    support neighbourhoods are smaller. components: 3 class radii (a component larger than
    that may be cut at the block's edge)."""
    if not settings.nms.size:
        return 0
    if method == "components":
        need = 3.0 * settings.support
    else:
        nms = np.maximum(settings.nms, MIN_NMS_RADIUS)
        smooth = np.where(settings.sigmas > 0, np.ceil(3.0 * settings.sigmas) + 4.0, 0.0)
        need = np.maximum(nms + smooth, np.maximum(settings.sigmas, settings.support))
    halo = int(math.ceil(float(need.max())))
    return halo + halo % 2


def _split(length: int, n: int) -> list[int]:
    """Boundaries 0 = b0 < b1 < … = length of ``n`` near-equal parts, interior ones even (so a
    block starts on the same 2 × 2 × 2 grid as the map: the half-resolution smoothing of the
    peak finder gives the same values)."""
    inner = {2 * int(round(k * length / n / 2.0)) for k in range(1, n)}
    return sorted({0, length} | {b for b in inner if 0 < b < length})


#: a tomogram read lazily (memory-mapped MRC, OME-Zarr, dask) of at least this many bytes is
#: "larger than memory": its maps and peak finding get at most LAZY_BUDGET_FRACTION of its size
LAZY_LARGE_VOLUME_BYTES = 2 ** 30
LAZY_BUDGET_FRACTION = 0.25


def memory_budget_mb(max_memory_mb: float, data: Any) -> float:
    """The memory budget (MiB) detection uses for ``data``: ``max_memory_mb``, or, for a
    tomogram read lazily (anything but an in-memory numpy array) of at least 1 GiB, at most a
    quarter of its size, so that detection holds less than the volume itself. 0 stays 0 (no
    limit)."""
    if max_memory_mb <= 0:
        return max_memory_mb
    in_memory = isinstance(data, np.ndarray) and not isinstance(data, np.memmap)
    itemsize = np.dtype(getattr(data, "dtype", np.float32)).itemsize
    volume_bytes = math.prod(int(n) for n in data.shape) * itemsize
    if in_memory or volume_bytes < LAZY_LARGE_VOLUME_BYTES:
        return max_memory_mb
    return min(max_memory_mb, LAZY_BUDGET_FRACTION * volume_bytes / 2.0 ** 20)


#: the most parts an axis is split into (blocks much smaller than their halo run most patches
#: many times over; raise ``max_memory_mb`` instead).
MAX_BLOCKS_PER_AXIS = 64


def _plan_blocks(out_shape: tuple[int, int, int], halo: int, max_voxels: float | None,
                 positions_out: Sequence[Sequence[int]] = ((), (), ()),
                 patch_out: Sequence[int] = (1, 1, 1)) -> list[tuple[tuple[int, int], ...]]:
    """Core boxes ((z0, z1), (y0, y1), (x0, x1)) (map voxels) tiling ``out_shape`` such that
    each core grown by ``halo`` (clipped to the map) holds at most ``max_voxels`` voxels: one
    box when the whole map does (or ``max_voxels`` is None); else the split into n_z × n_y ×
    n_x near-equal parts that runs the fewest patches (those meeting each grown block; given
    by ``positions_out``, the patch starts per axis, and ``patch_out``, in map voxels)."""
    if any(n == 0 for n in out_shape):
        return []
    whole = tuple((0, n) for n in out_shape)
    if max_voxels is None or math.prod(out_shape) <= max_voxels:
        return [whole]
    smallest = math.prod(min(n, 2 + 2 * halo) for n in out_shape)
    if smallest > max_voxels:
        raise ValueError(f"max_memory_mb is too small: a block needs a halo of {halo} map "
                         f"voxels on every side ({smallest} voxels at least, the budget allows "
                         f"{int(max_voxels)}); raise max_memory_mb")
    # per axis and part count n: (largest grown length, patches run summed over the parts);
    # the runs of a split are the product of the axes' sums (blocks are a product grid)
    options: list[list[tuple[int, int, int]]] = []
    for axis, length in enumerate(out_shape):
        starts = np.asarray(positions_out[axis], dtype=np.int64)
        rows = []
        for n in range(1, min(MAX_BLOCKS_PER_AXIS, max(1, length // 2)) + 1):
            bounds = np.asarray(_split(length, n))
            lo = np.maximum(0, bounds[:-1] - halo)
            hi = np.minimum(length, bounds[1:] + halo)
            # patches meeting [lo, hi): start q with lo - patch < q < hi
            runs = int(np.sum(np.searchsorted(starts, hi, side="left")
                              - np.searchsorted(starts, lo - patch_out[axis], side="right"))
                       ) if starts.size else len(lo)
            rows.append((n, int(np.max(hi - lo)), runs))
            if rows[-1][1] <= 2 + 2 * halo:
                break  # more parts cannot make the grown block smaller
        options.append(rows)
    best: tuple[int, tuple[int, int, int]] | None = None
    for nz, gz, rz in options[0]:
        for ny, gy, ry in options[1]:
            if gz * gy * min(g for _, g, _ in options[2]) > max_voxels:
                continue
            for nx, gx, rx in options[2]:
                if gz * gy * gx <= max_voxels:
                    cost = rz * ry * rx
                    if best is None or cost < best[0]:
                        best = (cost, (nz, ny, nx))
                    break  # more x parts only add runs
    if best is None:
        raise ValueError(f"max_memory_mb is too small for blocks with a halo of {halo} map "
                         f"voxels (at most {MAX_BLOCKS_PER_AXIS} blocks per axis); raise it")
    bounds = [_split(n, k) for n, k in zip(out_shape, best[1])]
    return [(bz, by, bx)
            for bz in zip(bounds[0], bounds[0][1:])
            for by in zip(bounds[1], bounds[1][1:])
            for bx in zip(bounds[2], bounds[2][1:])]


def _grow(core: tuple[tuple[int, int], ...], halo: int, out_shape: Sequence[int]
          ) -> tuple[tuple[int, int], ...]:
    return tuple((max(0, lo - halo), min(n, hi + halo)) for (lo, hi), n in zip(core, out_shape))


def _patches_touching(positions_out: Sequence[int], patch_out: int, lo: int, hi: int
                      ) -> list[int]:
    """Indices of the patches whose output [q, q + patch_out) meets [lo, hi)."""
    return [i for i, q in enumerate(positions_out) if q < hi and q + patch_out > lo]


# --------------------------------------------------------------------------- detect
def detect(
    volume_zyx: Any,
    predictor: Predictor,
    params: DetectParams = DetectParams(),
    *,
    class_names: Sequence[str],
    voxel_size_nm: float = 1.0,
    slab_z: tuple[int, int] | None = None,
    class_table: ClassTable | None = None,
    rescorer: CandidateRescorer | None = None,
    feature_radii_vox: Sequence[float] | None = None,
    image_radii_vox: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> DetectionResult:
    """Find the particles of a tomogram with a class-probability predictor.

    Args:
        volume_zyx: the tomogram (z, y, x), any real dtype, or a
            :class:`~napari_shrec.core.volume.Volume` (its data is used). Any array-like with
            ``shape``, ``ndim`` and slicing works, and only the parts detection needs are read,
            one row of patches at a time: a numpy array, a read-only memmap, a zarr or dask
            array (an OME-Zarr tomogram larger than the memory).
        predictor: a :class:`Predictor` (output channels = 1 + len(class_names)).
        params: :class:`DetectParams` (``max_memory_mb`` decides whether the region is done in
            one piece or in blocks).
        class_names: class of each output channel k ≥ 1 (channel k = class_names[k - 1]).
        voxel_size_nm: voxel edge of the tomogram (nm): class radii (nm) → voxels.
        slab_z: (z_start, z_stop), half-open voxel range holding the sample; None = all.
        class_table: where class radii come from (default SHREC'21 table = SHREC'20 + extras).
        rescorer: a :class:`~napari_shrec.core.rescore.CandidateRescorer` of these classes:
            every candidate (peaks above ``min_score``, de-duplicated across classes) gets the
            rescorer's class and score (1 - P(background)), and ``class_thresholds`` then apply
            to that score; the peak value is kept as the ``peak_score`` column.
            A rescorer with image features reads the tomogram around every candidate (the
            whole block's region for a lazy array).
        feature_radii_vox: without a rescorer, compute the candidates' neighbourhood features
            at these radii (tomogram voxels) into ``DetectionResult.features`` (to fit one).
        image_radii_vox: with ``feature_radii_vox``, also the tomogram's density features at
            these radii (tomogram voxels, increasing), after the map features.
        progress: ``progress(done, total, message)``: one step per patch run, per class and
            block.
        cancel: :class:`CancelToken`, checked between patches and classes.

    Returns:
        :class:`DetectionResult`; ``metadata`` holds ``n_blocks``, ``halo`` (map voxels),
        ``unique_patches`` (``n_patches`` counts patches run, some twice with blocks),
        ``peak_threads`` and ``block_shape`` (largest block with its halo, map voxels).

    Raises:
        Cancelled: when ``cancel`` was set.
        ValueError: bad shapes (volume not 3D, predictor output not (C, Z/s, Y/s, X/s) with
            C = 1 + len(class_names), patch size not a multiple of the stride), or a
            ``max_memory_mb`` too small for one block.
    """
    import os

    t_start = time.perf_counter()
    data = volume_zyx.data if isinstance(volume_zyx, Volume) else volume_zyx
    if not hasattr(data, "ndim") or data.ndim != 3:
        raise ValueError(f"the tomogram must be a 3D (z, y, x) array, got shape "
                         f"{getattr(data, 'shape', None)}")
    names = tuple(str(n) for n in class_names)
    if not names:
        raise ValueError("class_names must name at least one class")
    n_channels = len(names) + 1
    stride = int(getattr(predictor, "output_stride", 1))
    patch = tuple(int(p) for p in predictor.patch_size)
    if stride < 1 or len(patch) != 3 or any(p < 1 or p % stride for p in patch):
        raise ValueError(f"patch size {patch} must be 3 positive multiples of the output "
                         f"stride {stride}")
    shape = tuple(int(s) for s in data.shape)
    z0, z1 = (0, shape[0]) if slab_z is None else (int(slab_z[0]), int(slab_z[1]))
    z0, z1 = max(0, z0), min(shape[0], z1)
    z1 = max(z0, z1)
    region = (z1 - z0, shape[1], shape[2])
    out_shape = tuple(math.ceil(r / stride) for r in region)
    grid = tuple(max(p, o * stride) for p, o in zip(patch, out_shape))
    positions = [patch_positions(g, p, params.overlap, stride) for g, p in zip(grid, patch)]
    patch_out = tuple(p // stride for p in patch)
    positions_out = [[q // stride for q in pos] for pos in positions]
    windows = [_normalised_windows(g // stride, po, qs, params.blend)
               for g, po, qs in zip(grid, patch_out, positions_out)]
    table = class_table if class_table is not None else SHREC21_TABLE
    settings = _peak_settings(names, params, float(voxel_size_nm), stride, table)
    radii, image_radii = _feature_radii(names, rescorer, feature_radii_vox, image_radii_vox)
    density_stats = (normalization_stats(data, DENSITY_NORMALIZATION, slab_z=(z0, z1))
                     if image_radii else None)
    fixed = params.map_dtype == "float16"

    # one piece, or blocks (module notes): maps cost map_bytes per voxel, peaks 5 per thread
    wanted_threads = min(len(names), params.threads if params.threads > 0
                         else (os.cpu_count() or 1))
    map_bytes = n_channels * (2 if fixed else 4)
    if image_radii and not isinstance(data, np.ndarray):  # a block's tomogram region is read
        map_bytes += stride ** 3 * np.dtype(getattr(data, "dtype", np.float32)).itemsize
    budget = memory_budget_mb(params.max_memory_mb, data) * 2.0 ** 20
    volume_out = math.prod(out_shape)
    halo = 0
    if budget <= 0 or params.keep_probability_maps or \
            volume_out * (map_bytes + 5) <= budget:
        peak_threads = wanted_threads
        if budget > 0 and volume_out > 0 and not params.keep_probability_maps:
            peak_threads = int(min(wanted_threads,
                                   max(1, (budget / volume_out - map_bytes) // 5)))
        cores = _plan_blocks(out_shape, 0, None)
    else:
        peak_threads = min(wanted_threads, 2)
        halo = _peak_halo(settings, params.peak_method)
        if radii is not None:  # a core candidate's feature balls stay inside its block
            reach = math.ceil(max(radii) / stride)
            if image_radii:
                reach = max(reach, math.ceil(max(image_radii) / stride) + (stride > 1))
            halo = max(halo, reach + reach % 2)
        cores = _plan_blocks(out_shape, halo, budget / (map_bytes + 5 * peak_threads),
                             positions_out, patch_out)
    blocks = []
    for core in cores:
        ext = _grow(core, halo, out_shape)
        touching = [_patches_touching(qs, po, lo, hi)
                    for qs, po, (lo, hi) in zip(positions_out, patch_out, ext)]
        blocks.append((core, ext, touching))
    unique_patches = math.prod(len(p) for p in positions) if region[0] > 0 else 0
    n_patches = sum(math.prod(len(t) for t in touching) for _, _, touching in blocks)
    peak_steps = len(names) + 1

    reporter = ProgressReporter(n_patches + len(blocks) * peak_steps + 1, progress, cancel)
    reporter.start(f"detection: {n_patches} patches"
                   + (f" in {len(blocks)} blocks" if len(blocks) > 1 else ""))
    kernel = _accumulate_kernel()
    batch = params.batch_size > 1 and callable(getattr(predictor, "predict_batch", None))
    timings = {"inference": 0.0, "blending": 0.0, "peaks": 0.0, "deduplication": 0.0,
               "maps": 0.0, "reading": 0.0}
    expected = (n_channels, *patch_out)
    step = params.batch_size if batch else 1
    acc_dtype = np.uint16 if fixed else np.float32
    found: list[Peaks] = []
    found_features: list[np.ndarray] = []
    n_peaks = 0
    acc = np.zeros((n_channels, *out_shape), dtype=acc_dtype) if not blocks else None
    runs_done = 0

    # One background thread blends batch i while the predictor runs batch i + 1 (a GPU
    # predictor waits on the device with the GIL released). Outputs are copied first, so a
    # predictor may reuse its output buffer.
    with ThreadPoolExecutor(1, thread_name_prefix="napari-shrec-blend") as pool:
        for core, ext, touching in blocks:
            acc = None  # the previous block's maps go before the next ones are allocated
            acc = np.zeros((n_channels, *(hi - lo for lo, hi in ext)), dtype=acc_dtype)
            origin = [lo for lo, _ in ext]
            starts = [(a, b, c) for a in touching[0] for b in touching[1] for c in touching[2]]
            span_y = (positions[1][touching[1][0]], positions[1][touching[1][-1]] + patch[1])
            span_x = (positions[2][touching[2][0]], positions[2][touching[2][-1]] + patch[2])
            row: dict[int, np.ndarray] = {}

            def read(a: int, b: int, c: int) -> np.ndarray:
                # one row of patches (all y, x of the block at z position a) is read at once
                if a not in row:
                    row.clear()
                    t = time.perf_counter()
                    row[a] = _read_patch(data, (z0 + positions[0][a], span_y[0], span_x[0]),
                                         (patch[0], span_y[1] - span_y[0],
                                          span_x[1] - span_x[0]))
                    timings["reading"] += time.perf_counter() - t
                y = positions[1][b] - span_y[0]
                x = positions[2][c] - span_x[0]
                return np.ascontiguousarray(row[a][:, y:y + patch[1], x:x + patch[2]])

            def accumulate(target: np.ndarray, at: list[int],
                           chunk: list[tuple[int, int, int]], outputs: list[np.ndarray]) -> None:
                t = time.perf_counter()
                for (a, b, c), out in zip(chunk, outputs):
                    kernel(target, out, windows[0][a], windows[1][b], windows[2][c],
                           positions_out[0][a] - at[0], positions_out[1][b] - at[1],
                           positions_out[2][c] - at[2], fixed)
                timings["blending"] += time.perf_counter() - t

            pending = None
            for first in range(0, len(starts), step):
                chunk = starts[first:first + step]
                reporter.check()
                patches = [read(*s) for s in chunk]
                t0 = time.perf_counter()
                outputs = _run_predictor(predictor, patches, batch, params.test_time_flips)
                timings["inference"] += time.perf_counter() - t0
                for out in outputs:
                    if out.shape != expected:
                        raise ValueError(f"the predictor returned shape {out.shape}, expected "
                                         f"{expected} (C = 1 + {len(names)} classes, patch "
                                         f"{patch} / stride {stride})")
                if pending is not None:
                    pending.result()
                pending = pool.submit(accumulate, acc, origin, chunk, outputs)
                runs_done += len(chunk)
                reporter.advance(f"patch {runs_done}/{n_patches}", steps=len(chunk))
            if pending is not None:
                pending.result()
            row.clear()

            base = reporter.done

            def forward(done: int, _total: int, message: str, base: int = base) -> None:
                if progress is not None:
                    progress(base + done, reporter.total, message)

            t0 = time.perf_counter()
            peaks = extract_peaks(acc, method=params.peak_method, thresholds=params.min_score,
                                  radii=settings.nms, smooth_sigmas=settings.sigmas,
                                  min_voxels=settings.min_voxels, support_radii=settings.support,
                                  threads=peak_threads, progress=forward, cancel=cancel)
            n_peaks += len(peaks)
            peaks = _in_core(peaks, settings, core, origin, rescoring=radii is not None)
            found.append(peaks)
            if radii is not None:
                local = peaks.coords_zyx - np.asarray(origin, dtype=np.float64)
                block_features = neighbourhood_features(acc, local, [r / stride for r in radii])
                if image_radii:
                    assert density_stats is not None
                    block_features = np.hstack([block_features, _block_density_features(
                        data, peaks.coords_zyx, ext, stride, z0, region, image_radii,
                        density_stats)])
                found_features.append(block_features)
            timings["peaks"] += time.perf_counter() - t0
            reporter.done = base + peak_steps - 1
            reporter.advance(f"peaks of block {len(found)}/{len(blocks)}")

    particles, features, dedup_s = _particles_from_peaks(
        Peaks.concat(found), names, params, settings, voxel_size_nm=float(voxel_size_nm),
        stride=stride, z_offset=z0, shape_zyx=region, table=table, n_peaks=n_peaks,
        features=np.concatenate(found_features) if radii is not None else None,
        rescorer=rescorer)
    timings["deduplication"] = dedup_s
    maps = None
    if params.keep_probability_maps:
        t0 = time.perf_counter()
        maps = _full_resolution_maps(acc, shape, (z0, z1), stride, params.map_dtype, cancel)
        timings["maps"] = time.perf_counter() - t0
    reporter.done = reporter.total - 1
    reporter.advance("probability maps" if params.keep_probability_maps else "done")
    timings["total"] = time.perf_counter() - t_start
    block_shape = [max((hi - lo for lo, hi in (ext[a] for _, ext, _ in blocks)), default=0)
                   for a in range(3)]
    info = {"n_blocks": len(blocks), "memory_budget_mb": budget / 2.0 ** 20, "halo": halo,
            "unique_patches": unique_patches, "peak_threads": peak_threads,
            "block_shape": block_shape}
    particles.metadata.update(slab_z=[z0, z1], n_patches=n_patches, output_stride=stride,
                              patch_size=list(patch), test_time_flips=params.test_time_flips,
                              **info)
    return DetectionResult(particles=particles, probability_maps=maps, timings_s=timings,
                           params=params, class_names=names, slab_z=(z0, z1),
                           n_patches=n_patches, output_stride=stride, metadata=info,
                           features=features)


def _block_density_features(data: Any, coords_map: np.ndarray,
                            ext: Sequence[tuple[int, int]], stride: int, z0: int,
                            region: Sequence[int], radii: Sequence[float],
                            stats: NormalizationStats) -> np.ndarray:
    """:func:`~napari_shrec.core.rescore.density_features` of peaks at ``coords_map`` (map
    voxels of the searched region) from the tomogram under the block ``ext`` (map voxels,
    its halo included; clipped to the region: balls are clamped at the region's border, as in
    one piece). A lazy array is read over the block's region, a numpy array or memmap only
    at the balls' voxels."""
    lo = [a * stride for a, _ in ext]
    hi = [min(b * stride, n) for (_, b), n in zip(ext, region)]
    view = data[z0 + lo[0]:z0 + hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if not isinstance(view, np.ndarray):
        view = np.asarray(view)
    local = coords_map * stride + (stride - 1) / 2.0 - np.asarray(lo, dtype=np.float64)
    return density_features(view, local, radii, stats)


def _in_core(peaks: Peaks, settings: _PeakSettings, core: tuple[tuple[int, int], ...],
             origin: Sequence[int], *, rescoring: bool = False) -> Peaks:
    """The peaks of a block (block map voxels) that reach their class threshold and lie in
    its core, moved into the map's frame. With ``rescoring`` every peak the maps gave (all
    reach ``min_score``) stays: the class thresholds apply to the rescored scores."""
    limits = np.asarray(settings.thresholds)[peaks.class_index - 1] if not rescoring \
        else np.zeros(len(peaks))
    keep = peaks.scores >= limits if len(peaks) else np.zeros(0, dtype=bool)
    peaks = peaks.subset(keep)
    coords = peaks.coords_zyx + np.asarray(origin, dtype=np.float64)
    inside = np.ones(len(peaks), dtype=bool)
    for axis, (lo, hi) in enumerate(core):
        inside &= (coords[:, axis] >= lo) & (coords[:, axis] < hi)
    return Peaks(peaks.class_index[inside], coords[inside], peaks.scores[inside])


def particles_from_maps(
    maps: np.ndarray,
    class_names: Sequence[str],
    params: DetectParams = DetectParams(),
    *,
    voxel_size_nm: float = 1.0,
    stride: int = 1,
    z_offset: int = 0,
    shape_zyx: tuple[int, int, int] | None = None,
    class_table: ClassTable | None = None,
    rescorer: CandidateRescorer | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[ParticleList, dict[str, float]]:
    """Peaks, de-duplication and scores from probability maps: the second half of :func:`detect`.

    Args:
        maps: (C, Z', Y', X') maps, channel 0 background, channel k = class_names[k - 1]
            (float32, float16 or uint16 fixed point = probability × 65535), at 1/``stride``
            resolution; map voxel j covers tomogram voxels stride·j … stride·j + stride - 1.
        class_names, params, voxel_size_nm, class_table: as in :func:`detect`.
        stride: output stride of the maps.
        z_offset: tomogram z of the maps' first slice (the slab start), voxels.
        shape_zyx: full-resolution size of the region the maps cover (default: the maps'
            shape × stride); positions are clipped into it.
        rescorer: as in :func:`detect`, but without image features (those need the
            tomogram: use :func:`detect`).

    Returns:
        ``(particles, timings)``: the detections (tomogram voxels x, y, z, sorted by decreasing
        score) and {"peaks": s, "deduplication": s}.
    """
    names = tuple(str(n) for n in class_names)
    if maps.ndim != 4 or maps.shape[0] != len(names) + 1:
        raise ValueError(f"maps must be (1 + {len(names)}, Z, Y, X), got {maps.shape}")
    table = class_table if class_table is not None else SHREC21_TABLE
    settings = _peak_settings(names, params, float(voxel_size_nm), stride, table)
    t0 = time.perf_counter()
    peaks = extract_peaks(maps, method=params.peak_method, thresholds=params.min_score,
                          radii=settings.nms, smooth_sigmas=settings.sigmas,
                          min_voxels=settings.min_voxels, support_radii=settings.support,
                          threads=params.threads, progress=progress, cancel=cancel)
    n_peaks = len(peaks)
    if rescorer is not None and rescorer.uses_image:
        raise ValueError("this rescorer uses the tomogram's density (image_radii_vox "
                         f"{list(rescorer.image_radii_vox)}), which maps alone do not hold: "
                         "run detect() on the tomogram, or pass rescorer=None")
    radii, _ = _feature_radii(names, rescorer, None, None)
    peaks = _in_core(peaks, settings, tuple((0, n) for n in maps.shape[1:]), (0, 0, 0),
                     rescoring=radii is not None)
    features = None if radii is None else \
        neighbourhood_features(maps, peaks.coords_zyx, [r / stride for r in radii])
    t1 = time.perf_counter()
    region = shape_zyx if shape_zyx is not None else tuple(n * stride for n in maps.shape[1:])
    particles, _, dedup_s = _particles_from_peaks(
        peaks, names, params, settings, voxel_size_nm=float(voxel_size_nm), stride=stride,
        z_offset=z_offset, shape_zyx=region, table=table, n_peaks=n_peaks, features=features,
        rescorer=rescorer)
    return particles, {"peaks": t1 - t0, "deduplication": dedup_s}


def _feature_radii(names: Sequence[str], rescorer: CandidateRescorer | None,
                   feature_radii_vox: Sequence[float] | None,
                   image_radii_vox: Sequence[float] | None
                   ) -> tuple[tuple[float, ...] | None, tuple[float, ...]]:
    """The radii (tomogram voxels) of the candidates' map features (None for no features) and
    of their image features (empty for none)."""
    wanted = None if feature_radii_vox is None else tuple(float(r) for r in feature_radii_vox)
    image = () if image_radii_vox is None else tuple(float(r) for r in image_radii_vox)
    if rescorer is not None:
        want = [normalize_class_name(n) for n in names]
        if [normalize_class_name(n) for n in rescorer.class_names] != want:
            raise ValueError(f"the rescorer's classes {list(rescorer.class_names)} differ from "
                             f"the detector's {list(names)}")
        if wanted is not None and wanted != rescorer.radii_vox:
            raise ValueError("feature_radii_vox must be None or the rescorer's radii "
                             f"{rescorer.radii_vox}")
        if image_radii_vox is not None and image != rescorer.image_radii_vox:
            raise ValueError("image_radii_vox must be None or the rescorer's image radii "
                             f"{rescorer.image_radii_vox}")
        return rescorer.radii_vox, rescorer.image_radii_vox
    if wanted is None:
        if image:
            raise ValueError("image_radii_vox needs feature_radii_vox: the image features "
                             "follow the map features")
        return None, ()
    if not wanted or any(not math.isfinite(r) or r < 0 for r in wanted):
        raise ValueError(f"feature_radii_vox must be radii ≥ 0 (voxels), got {wanted}")
    if any(not math.isfinite(r) or r < 0 for r in image) or list(image) != sorted(set(image)):
        raise ValueError(f"image_radii_vox must be increasing radii ≥ 0 (voxels), got {image}")
    return wanted, image


def _particles_from_peaks(peaks: Peaks, names: Sequence[str], params: DetectParams,
                          settings: _PeakSettings, *, voxel_size_nm: float, stride: int,
                          z_offset: int, shape_zyx: Sequence[int], table: ClassTable,
                          n_peaks: int, features: np.ndarray | None = None,
                          rescorer: CandidateRescorer | None = None
                          ) -> tuple[ParticleList, np.ndarray | None, float]:
    """Thresholded peaks (map voxels of the searched region) → the sorted, de-duplicated
    particle list (tomogram voxels), the features of its rows (when ``features`` holds one
    row per peak) and the seconds the de-duplication took. With a ``rescorer`` the survivors
    of the de-duplication take its classes and scores, then the class thresholds apply."""
    t0 = time.perf_counter()
    # a fixed order (class, then z, y, x) whatever the blocks: ties are resolved the same way
    order = np.lexsort((peaks.coords_zyx[:, 2], peaks.coords_zyx[:, 1], peaks.coords_zyx[:, 0],
                        peaks.class_index))
    peaks = peaks.subset(order)
    if features is not None:
        features = features[order]
    # map voxel j → centre of the tomogram voxels it covers
    coords_zyx = peaks.coords_zyx * stride + (stride - 1) / 2.0
    region = np.asarray(shape_zyx, dtype=np.float64)
    coords_zyx = np.clip(coords_zyx, 0.0, np.maximum(region - 1.0, 0.0))
    coords_zyx[:, 0] += z_offset
    keep = deduplicate_across_classes(coords_zyx, peaks.scores, peaks.class_index - 1,
                                      settings.radii_vox, params.cross_class_distance_fraction)
    coords_zyx = coords_zyx[keep]
    scores = peaks.scores[keep]
    peak_scores = scores
    labels = peaks.class_index[keep] - 1
    if features is not None:
        features = features[keep]
    thresholds = list(settings.thresholds)
    if rescorer is not None and features is not None:
        labels, scores = rescorer.rescore(features)
        thresholds = [params.threshold_of(n) for n in names]
        passed = scores >= np.asarray(thresholds)[labels]
        coords_zyx, scores, labels = coords_zyx[passed], scores[passed], labels[passed]
        peak_scores, features = peak_scores[passed], features[passed]
    order = np.lexsort((labels, -scores))
    coords_zyx, scores, labels = coords_zyx[order], scores[order], labels[order]
    out_names = [table.canonical_name(n) if n in table else normalize_class_name(n)
                 for n in names]
    rescored = rescorer is not None and features is not None
    particles = ParticleList.from_arrays(
        [out_names[i] for i in labels], coords_zyx[:, ::-1], scores=scores,
        extra={"peak_score": peak_scores[order]} if rescored else None,
        voxel_size_nm=voxel_size_nm,
        metadata={"source": "napari-shrec detect", "peak_method": params.peak_method,
                  "min_score": params.min_score,
                  "thresholds": dict(zip(out_names, thresholds)),
                  "rescored": rescored,
                  "n_peaks": int(n_peaks), "n_before_deduplication": int(len(peaks))})
    return particles, None if features is None else features[order], time.perf_counter() - t0


# --------------------------------------------------------------------------- maps
def _upsample_axis(a: np.ndarray, axis: int, stride: int, n_out: int) -> np.ndarray:
    """Linear interpolation along ``axis``: output voxel i sits at input coordinate
    (i - (stride - 1)/2) / stride (clamped at the ends)."""
    n_in = a.shape[axis]
    u = (np.arange(n_out) - (stride - 1) / 2.0) / stride
    u = np.clip(u, 0.0, n_in - 1)
    i0 = np.minimum(np.floor(u).astype(np.int64), max(n_in - 2, 0))
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (u - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = n_out
    f = f.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - f) + np.take(a, i1, axis=axis) * f


def _full_resolution_maps(acc: np.ndarray, shape: tuple[int, int, int], slab: tuple[int, int],
                          stride: int, dtype: str, cancel: CancelToken | None) -> np.ndarray:
    """(C, Z, Y, X) maps over the whole tomogram: the slab upsampled, background elsewhere."""
    z0, z1 = slab
    out = np.zeros((acc.shape[0], *shape), dtype=np.dtype(dtype))
    out[0] = 1
    out[0, z0:z1] = 0
    region = (z1 - z0, shape[1], shape[2])
    for c in range(acc.shape[0]):
        if cancel is not None:
            cancel.raise_if_cancelled()
        m = acc[c].astype(np.float32)
        if acc.dtype == np.uint16:
            m *= np.float32(1.0 / FIXED_POINT_SCALE)
        if stride > 1 and region[0] > 0:
            for axis in range(3):
                m = _upsample_axis(m, axis, stride, region[axis])
        out[c, z0:z1] = m[:region[0], :region[1], :region[2]]
    return out


# --------------------------------------------------------------------------- thresholds
def apply_class_thresholds(particles: ParticleList, thresholds: Mapping[str, float],
                           default: float = 0.0) -> ParticleList:
    """The detections whose score reaches their class's threshold (``default`` for classes
    not in ``thresholds``)."""
    if not len(particles):
        return particles.copy()
    lookup = {normalize_class_name(k): float(v) for k, v in thresholds.items()}
    names = [normalize_class_name(n) for n in particles.class_names]
    limit = np.array([lookup.get(n, default) for n in names])
    return particles.subset(particles.scores() >= limit)


def mean_class_thresholds(per_volume: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """{class: mean threshold} over several volumes' tuned thresholds (a class counts only
    the volumes that tuned it), classes in name order."""
    names = sorted({k for t in per_volume for k in t})
    return {k: float(np.mean([t[k] for t in per_volume if k in t])) for k in names}


def tune_class_thresholds(
    candidates: DetectionResult | ParticleList,
    gt_particles: ParticleList,
    occupancy_mask: np.ndarray | Volume,
    class_names: Sequence[str] | None = None,
    *,
    objective: str = "localization",
    score_params: Any = None,
    class_table: ClassTable | None = None,
    floor: float | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, float]:
    """Per-class thresholds that maximise each class's F1 on validation data.

    Run :func:`detect` on a validation tomogram with ``class_thresholds=None`` and the
    ``min_score`` you will detect with (thresholds can only be raised above it: lower
    ``min_score`` for both runs, e.g. 0.3, to let a class go below 0.5), pass the result here,
    and use the returned dict as ``DetectParams.class_thresholds``: detection with them keeps
    exactly the candidates whose score reaches their class's threshold (up to cross-class
    de-duplication, below).

    Every candidate is scored once with the project's scorer
    (:func:`~napari_shrec.core.score.score_submission`, ``ScoreParams(mode="native")`` unless
    given), candidates sorted by decreasing score. For each class c the objective is the scorer's
    ``per_class_localization_F1[c]``: the lines labelled c against the particles of class c
    (precision counts every c-labelled line — on background, on another class's particle, or a
    second hit — recall the class-c particles hit by a c-labelled line). It depends on class c's
    lines only, so every class is tuned exactly and independently, over every distinct candidate
    score. (The confusion-matrix ``per_class_F1`` is not used: it ignores lines on background, so
    it would always favour the lowest threshold.)

    Caveat: de-duplication across classes ran on the candidates; with a class's threshold raised,
    a detection of another class that one of its removed detections had suppressed comes back.
    The effect is second order.

    Args:
        candidates: a :class:`DetectionResult` or its particle list (low threshold).
        gt_particles: ground truth, row i = occupancy id i + 1.
        occupancy_mask: (z, y, x) ground-truth occupancy mask in the candidates' frame.
        class_names: classes to tune (default: every class among candidates and ground truth).
        objective: "localization" (above).
        score_params: :class:`~napari_shrec.core.score.ScoreParams` (default native mode).
        class_table: scorer's class table (default from the labels).
        floor: lowest threshold returned (default: the candidates' ``min_score`` for a
            :class:`DetectionResult`, else the lowest candidate score).
        progress, cancel: as elsewhere.

    Returns:
        {class name: threshold}: the midpoint between the lowest kept score and the next lower
        candidate score (``floor`` when every candidate is kept); just above the highest
        candidate score when the class has no ground-truth particle (switches it off); classes
        with neither candidates nor particles are left out.
    """
    from .score import ScoreParams, score_submission

    if objective not in TUNING_OBJECTIVES:
        raise ValueError(f"objective must be one of {TUNING_OBJECTIVES}, got {objective!r}")
    preds = candidates.particles if isinstance(candidates, DetectionResult) else candidates
    sp = score_params if score_params is not None else ScoreParams(mode="native")
    order = np.lexsort((np.arange(len(preds)), -np.nan_to_num(preds.scores(), nan=-np.inf))) \
        if len(preds) else np.zeros(0, dtype=np.int64)
    preds = preds.subset(order)
    result = score_submission(gt_particles, occupancy_mask, preds, sp, class_table=class_table,
                              submission_name="threshold candidates", progress=progress,
                              cancel=cancel)
    table = result.class_table
    pred_names = np.array([table.canonical_name(n) if n in table else normalize_class_name(n)
                           for n in preds.class_names], dtype=object)
    gt_names = np.array([table.canonical_name(n) for n in gt_particles.class_names],
                        dtype=object) if len(gt_particles) else np.zeros(0, dtype=object)
    scored = set(result.scored_classes)
    if class_names is None:
        wanted = sorted(set(pred_names.tolist()) | set(gt_names.tolist()))
    else:
        wanted = [table.canonical_name(n) if n in table else normalize_class_name(n)
                  for n in class_names]
    scores_all = np.nan_to_num(preds.scores(), nan=0.0)
    if floor is not None:
        lowest = float(floor)
    elif isinstance(candidates, DetectionResult):
        lowest = float(candidates.params.min_score)
    else:
        lowest = float(scores_all.min()) if scores_all.size else 0.0
    hit = result.hit_particle
    out: dict[str, float] = {}
    for name in wanted:
        if cancel is not None:
            cancel.raise_if_cancelled()
        sel = np.flatnonzero(pred_names == name)
        n_gt = int(np.count_nonzero(gt_names == name)) if name in scored else 0
        if sel.size == 0:
            if n_gt:
                out[name] = lowest
            continue
        s = scores_all[sel]  # decreasing
        if n_gt == 0:
            out[name] = float(np.nextafter(s.max(), np.inf))
            continue
        h = hit[sel]
        own = np.zeros(h.size, dtype=bool)
        valid = h > 0
        own[valid] = gt_names[h[valid] - 1] == name
        # distinct own-class particles among the first k lines
        first = np.zeros(h.size, dtype=bool)
        if own.any():
            _, first_pos = np.unique(h[own], return_index=True)
            first[np.flatnonzero(own)[first_pos]] = True
        tp = np.cumsum(first)
        rr = np.arange(1, h.size + 1)
        f1 = 2.0 * tp / (rr + n_gt)
        # only cut at the end of a run of equal scores
        ends = np.append(s[1:] != s[:-1], True)
        f1 = np.where(ends, f1, -1.0)
        k = int(np.argmax(f1))
        threshold = 0.5 * (s[k] + s[k + 1]) if k + 1 < s.size else lowest
        out[name] = float(max(threshold, lowest))
    return out
