"""The grandmodel: a crowded sample of rotated particle potentials, with its exact ground truth.

This is step one of the SHREC'20 simulation protocol (spec §2): between 2400 and 2800 particles of
12 classes, in near-equal numbers, at random positions and orientations in a 512 × 512 × 200 voxel
volume (x, y, z) at 1 nm, never overlapping (voxel-exact) but free to touch.

Conventions
-----------
Arrays are indexed ``[z, y, x]`` (x is the fastest axis, z is the beam direction at zero tilt);
particle coordinates are integer voxels written x, y, z as in
:class:`~napari_shrec.core.particles.ParticleList`. Potentials are in volts.

*Centre.* Every structure map is a cube of odd edge ``n`` whose voxel ``n // 2`` (on each axis) is
the particle's centre. A particle at integer coordinate (x, y, z) has that centre voxel at array
index ``[z, y, x]``; the rotation is about that voxel.

*Rotation.* A particle's orientation is the active rotation ``R`` of its ZXZ Euler angles
(:mod:`napari_shrec.core.rotations`): the rotated map at position ``r`` (x, y, z, relative to the
box) equals the reference map at ``R⁻¹ (r − c) + c``. It is interpolated with pre-filtered cubic
B-splines (``scipy.ndimage`` order 3, mode "constant", as SHREC did); the spline coefficients of
each class are computed once and shared by all its particles, which gives bit-for-bit the values of
``affine_transform(map, …, order=3, prefilter=True, mode="constant")``. The output box is large
enough for every voxel of the reference map with ``|V| ≥ support_threshold_v / 4`` (plus the
two-voxel reach of the cubic spline), whatever the rotation.

*Footprint.* After rotation, values below ``support_threshold_v`` are set to 0 (SHREC zeroed values
below 0.001 of its molmap units, ≈ 0.03 V). A particle's footprint is the set of voxels where its
rotated potential is ≥ the threshold, **plus its centre voxel** even where the potential there is
lower: hollow assemblies (Rubisco, p97, the proteasome and chaperonin barrels, the channelled
surrogates) would otherwise have background under their own coordinate, and a pick at the true
centre would miss. The centre voxel added this way carries the particle's ids in the masks but no
potential. The footprint is what the class and occupancy masks hold, what the overlap test checks
and where the potential is written; outside every footprint the grandmodel is exactly 0.

*Placement.* Particles are placed largest footprint first (better packing; ties keep the drawn
order). Each gets up to ``max_tries`` uniformly random integer centres: in z the whole footprint
must lie inside the volume; in x and y only the centre must (the field of view is a window into a
larger sample, so footprints are cropped at the x and y edges). A candidate fits when none of its
(in-volume) footprint voxels is occupied already — touching is allowed. A particle that does not fit
in ``max_tries`` tries is skipped and listed in the report. Rows of the particle list are in
placement order; the occupancy mask holds the 1-based row.

*Bounding-box masks.* ``class_bbox`` and ``occupancy_bbox`` fill each placed particle's footprint
bounding box (cropped to the volume) with its class id / row id, in placement order: where boxes
overlap, **the later particle (higher row id) overwrites the earlier one**.

*Noise.* ``potential`` (SHREC's ``grandmodel.mrc``) is ``potential_noisefree`` plus Gaussian noise
of σ = ``structural_noise_v`` on its non-zero voxels (SHREC: σ = 0.04 molmap units ≈ 1.21 V).

*Orientation samplers.* ``"uniform"`` (default) draws rotations uniformly from SO(3) (Haar
measure). ``"shrec2020"`` reproduces the released simulator: ZXZ angles drawn uniformly in their
ranges, phi, psi ∈ [0°, 360°) and theta ∈ [0°, 180°); since theta is uniform rather than
cos(theta), views along the beam are over-represented. Opt-in, for compatibility only.

*Determinism.* All random numbers come from one ``numpy.random.default_rng(seed)`` stream, drawn
in a fixed order (count, class remainder, class order, orientations, positions, noise); rotations
are pure per-particle functions, so the thread count does not change any output.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .classes import SHREC21_TABLE, normalize_class_name
from .particles import ParticleList
from .progress import CancelToken, ProgressCallback, ProgressReporter
from .rotations import matrix_to_zxz, random_rotations, zxz_to_matrix
from .structures import StructureMap

__all__ = [
    "ORIENTATION_SAMPLERS",
    "GrandmodelParams",
    "GrandmodelReport",
    "Grandmodel",
    "Footprint",
    "build_grandmodel",
    "sample_orientations",
    "rotate_potential",
    "rotated_footprint",
]

ORIENTATION_SAMPLERS: tuple[str, ...] = ("uniform", "shrec2020")
_ROTATION_CHUNK = 128  # particles rotated per chunk (bounds the transient full-box memory)
_TRY_BLOCK = 32  # candidate positions drawn at once (fixed, so the random stream is reproducible)
_PLACEMENT_REPORT_EVERY = 100


def _int_tuple(value: Any, length: int, name: str) -> tuple[int, ...]:
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of {length} integers, got {value!r}") from None
    if len(items) != length:
        raise ValueError(f"{name} must have {length} values, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, bool) or not float(item).is_integer():
            raise ValueError(f"{name} must hold integers, got {value!r}")
        out.append(int(item))
    return tuple(out)


@dataclass(frozen=True)
class GrandmodelParams:
    """How to build a grandmodel (defaults: SHREC'20).

    Attributes:
        shape_zyx: volume shape (z, y, x) in voxels; SHREC'20: 200 × 512 × 512.
        voxel_size_nm: voxel edge (nm); every structure map must have this voxel size.
        n_particles: inclusive range (low, high) of the particle count, drawn uniformly
            (an int n means exactly n).
        classes: class names to use (None: every map given to :func:`build_grandmodel`), in
            near-equal numbers: n // k each, the remainder to randomly chosen classes.
        orientation_sampler: "uniform" (uniform SO(3)) or "shrec2020" (the released
            simulator's non-uniform ZXZ sampling; compatibility only). See the module docstring.
        max_tries: random positions tried per particle before it is reported as not fitting.
        support_threshold_v: rotated values below this (V) are set to 0; the footprint is where
            the rotated potential is ≥ it (plus the centre voxel).
        structural_noise_v: σ (V) of the Gaussian noise added to the non-zero voxels of the
            noisy ``potential``; 0 disables.
        seed: seed of the one random stream (non-negative integer).
        threads: worker threads for the rotations (0: ``os.cpu_count()``).
    """

    shape_zyx: tuple[int, int, int] = (200, 512, 512)
    voxel_size_nm: float = 1.0
    n_particles: tuple[int, int] = (2400, 2800)
    classes: tuple[str, ...] | None = None
    orientation_sampler: str = "uniform"
    max_tries: int = 5000
    support_threshold_v: float = 0.03
    structural_noise_v: float = 1.21
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        shape = _int_tuple(self.shape_zyx, 3, "shape_zyx")
        if min(shape) < 1:
            raise ValueError(f"shape_zyx must be positive, got {self.shape_zyx!r}")
        object.__setattr__(self, "shape_zyx", shape)
        try:
            voxel = float(self.voxel_size_nm)
        except (TypeError, ValueError):
            raise ValueError(f"voxel_size_nm must be a number, got {self.voxel_size_nm!r}") \
                from None
        if not (voxel > 0 and math.isfinite(voxel)):
            raise ValueError(f"voxel_size_nm must be > 0, got {self.voxel_size_nm!r}")
        object.__setattr__(self, "voxel_size_nm", voxel)
        counts = self.n_particles
        if isinstance(counts, (int, np.integer)) and not isinstance(counts, bool):
            counts = (int(counts), int(counts))
        low, high = _int_tuple(counts, 2, "n_particles")
        if low < 0 or high < low:
            raise ValueError(f"n_particles must be a range (low, high) with 0 ≤ low ≤ high, "
                             f"got {self.n_particles!r}")
        object.__setattr__(self, "n_particles", (low, high))
        if self.classes is not None:
            if isinstance(self.classes, str):
                raise ValueError(f"classes must be a sequence of class names, got "
                                 f"{self.classes!r}")
            names = tuple(normalize_class_name(str(c)) for c in self.classes)
            if not names:
                raise ValueError("classes must name at least one class (or be None)")
            if len(set(names)) != len(names):
                raise ValueError(f"classes must not repeat a class, got {self.classes!r}")
            object.__setattr__(self, "classes", names)
        if self.orientation_sampler not in ORIENTATION_SAMPLERS:
            raise ValueError(f"orientation_sampler must be one of {ORIENTATION_SAMPLERS}, got "
                             f"{self.orientation_sampler!r}")
        for name in ("max_tries", "seed", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be ≥ 1, got {self.max_tries}")
        if self.seed < 0:
            raise ValueError(f"seed must be ≥ 0, got {self.seed}")
        if self.threads < 0:
            raise ValueError(f"threads must be ≥ 0 (0: all cores), got {self.threads}")
        for name, strictly in (("support_threshold_v", True), ("structural_noise_v", False)):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") \
                    from None
            ok = math.isfinite(value) and (value > 0 if strictly else value >= 0)
            if not ok:
                raise ValueError(f"{name} must be {'> 0' if strictly else '≥ 0'}, got "
                                 f"{getattr(self, name)!r}")
            object.__setattr__(self, name, value)

    @property
    def n_threads(self) -> int:
        """The worker count actually used."""
        return self.threads if self.threads > 0 else (os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["shape_zyx"] = list(self.shape_zyx)
        out["n_particles"] = list(self.n_particles)
        out["classes"] = None if self.classes is None else list(self.classes)
        return out


@dataclass
class GrandmodelReport:
    """What :func:`build_grandmodel` did.

    Attributes:
        n_requested: the drawn particle count.
        n_placed: particles placed (rows of the particle list).
        per_class: ``{class: {"requested": int, "placed": int}}`` in class order.
        not_fitted: one dict per skipped particle, in placement-attempt order: ``class_name``,
            ``footprint_voxels``, ``tries`` (0 when its footprint is taller than the volume),
            ``phi``, ``theta``, ``psi``.
        total_tries: candidate positions tested, over all particles.
        seed, orientation_sampler: as in the params.
        n_threads: rotation workers used.
        n_centre_below_threshold: placed particles whose centre voxel was added to the footprint
            because the rotated potential there is below the threshold (hollow centres).
        timings_s: seconds per stage: "rotations", "placement", "masks_and_noise", "total".
    """

    n_requested: int
    n_placed: int
    per_class: dict[str, dict[str, int]]
    not_fitted: list[dict[str, Any]]
    total_tries: int
    seed: int
    orientation_sampler: str
    n_threads: int
    n_centre_below_threshold: int
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def n_not_fitted(self) -> int:
        return len(self.not_fitted)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Grandmodel:
    """A grandmodel and its ground truth; every volume is (z, y, x), ``params.shape_zyx``.

    Attributes:
        potential_noisefree: float32, V (SHREC ``grandmodel_noisefree.mrc``).
        potential: float32, V, with structural noise on the particle voxels (``grandmodel.mrc``).
        class_mask: uint8, class id (:data:`~napari_shrec.core.classes.SHREC21_TABLE`) on each
            footprint voxel, 0 background.
        occupancy_mask: int32, 1-based row of ``particles`` on each footprint voxel, 0 background.
        class_bbox: uint8, each particle's footprint bounding box filled with its class id (later
            rows overwrite earlier ones where boxes overlap).
        occupancy_bbox: int32, the same with the row id.
        particles: placed particles in placement order: integer centres (x, y, z voxels) and the
            ZXZ angles (degrees) of the rotation applied; ``voxel_size_nm`` set.
        report: counts, the particles that did not fit, tries, timings.
        params: the parameters used.
    """

    potential_noisefree: np.ndarray
    potential: np.ndarray
    class_mask: np.ndarray
    occupancy_mask: np.ndarray
    class_bbox: np.ndarray
    occupancy_bbox: np.ndarray
    particles: ParticleList
    report: GrandmodelReport
    params: GrandmodelParams

    @property
    def voxel_size_nm(self) -> float:
        return self.params.voxel_size_nm

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return self.params.shape_zyx


@dataclass(frozen=True)
class Footprint:
    """A rotated particle, cropped to its footprint's bounding box.

    Attributes:
        offset_zyx: index of the box's first voxel relative to the particle's centre voxel
            (z, y, x; ≤ 0).
        mask: bool (z, y, x) box, True on the footprint voxels.
        values: float32 potential (V) on the footprint voxels, in C order of ``mask``'s True
            entries (0 on a centre voxel added below the threshold).
        centre_below_threshold: the centre voxel was added to the footprint.
    """

    offset_zyx: tuple[int, int, int]
    mask: np.ndarray
    values: np.ndarray
    centre_below_threshold: bool

    @property
    def n_voxels(self) -> int:
        return int(self.values.size)


# ----------------------------------------------------------------------------- orientations

def sample_orientations(n: int, sampler: str, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` ZXZ Euler angle triples (phi, theta, psi) in degrees, shape (n, 3).

    ``"uniform"``: uniform on SO(3) (:func:`~napari_shrec.core.rotations.random_rotations`),
    expressed as ZXZ angles. ``"shrec2020"``: phi, psi uniform in [0, 360), theta uniform in
    [0, 180) — the released SHREC simulator's (non-uniform) sampling.
    """
    if sampler not in ORIENTATION_SAMPLERS:
        raise ValueError(f"orientation_sampler must be one of {ORIENTATION_SAMPLERS}, got "
                         f"{sampler!r}")
    if n <= 0:
        return np.zeros((0, 3))
    if sampler == "uniform":
        return matrix_to_zxz(random_rotations(n, rng))
    return rng.random((n, 3)) * np.array([360.0, 180.0, 360.0])


# ----------------------------------------------------------------------------- rotation

def _support_radius(potential: np.ndarray, threshold_v: float) -> float:
    """Largest distance (voxels) from the centre of a voxel with |V| ≥ threshold / 4."""
    n = potential.shape[0]
    c = n // 2
    relevant = np.abs(potential) >= 0.25 * threshold_v
    if not relevant.any():
        return 0.0
    zz, yy, xx = np.nonzero(relevant)
    return float(np.sqrt(((zz - c) ** 2 + (yy - c) ** 2 + (xx - c) ** 2).max()))


def _output_edge(potential: np.ndarray, threshold_v: float) -> int:
    """Odd edge of a box that holds the rotated support in any orientation (≥ 3)."""
    radius = _support_radius(potential, threshold_v) + 2.0  # cubic B-spline reach
    n = potential.shape[0]
    corner = (n // 2) * math.sqrt(3.0) + 2.0
    return 2 * int(math.ceil(min(radius, corner))) + 1


def _affine(rotation_xyz: np.ndarray, centre_in: int, centre_out: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """``affine_transform`` matrix and offset (array z, y, x order) of the active rotation."""
    rot = np.asarray(rotation_xyz, dtype=np.float64).reshape(3, 3)
    # out[o] = in[M o + offset] with M = R⁻¹ in (z, y, x) order: reverse both axes of Rᵀ
    matrix = np.ascontiguousarray(rot.T[::-1, ::-1])
    offset = np.full(3, float(centre_in)) - matrix @ np.full(3, float(centre_out))
    return matrix, offset


def _spline_coefficients(potential: np.ndarray) -> np.ndarray:
    from scipy.ndimage import spline_filter

    return spline_filter(np.asarray(potential), order=3, output=np.float64, mode="constant")


def _check_map_array(potential: np.ndarray, name: str) -> None:
    if potential.ndim != 3 or len(set(potential.shape)) != 1 or potential.shape[0] % 2 != 1:
        raise ValueError(f"structure map {name!r} must be a cube of odd edge, got shape "
                         f"{potential.shape}")


def _rotate(coefficients: np.ndarray, rotation_xyz: np.ndarray, output_edge: int) -> np.ndarray:
    """Rotate spline coefficients (cube of odd edge n) into a float32 cube of odd edge m."""
    from scipy.ndimage import affine_transform

    n, m = coefficients.shape[0], int(output_edge)
    matrix, offset = _affine(rotation_xyz, n // 2, m // 2)
    return affine_transform(coefficients, matrix, offset=offset, output_shape=(m, m, m),
                            output=np.float32, order=3, mode="constant", prefilter=False)


def rotate_potential(potential: np.ndarray, rotation_xyz: np.ndarray, *,
                     output_edge: int | None = None) -> np.ndarray:
    """A map rotated about its centre voxel by an active rotation (pre-filtered cubic B-spline).

    Args:
        potential: (z, y, x) cube of odd edge ``n``, centre at ``n // 2`` (V).
        rotation_xyz: (3, 3) active rotation acting on (x, y, z) column vectors
            (:func:`~napari_shrec.core.rotations.zxz_to_matrix`).
        output_edge: odd edge ``m`` of the output cube (default ``n``); its centre is ``m // 2``.

    Returns:
        float32 (m, m, m) (z, y, x): ``out(r) = in(R⁻¹ (r − c_out) + c_in)`` with r in (x, y, z),
        equal to ``scipy.ndimage.affine_transform(..., order=3, prefilter=True,
        mode="constant")``; no thresholding.
    """
    potential = np.asarray(potential)
    _check_map_array(potential, "potential")
    m = potential.shape[0] if output_edge is None else int(output_edge)
    if m < 1 or m % 2 != 1:
        raise ValueError(f"output_edge must be odd and ≥ 1, got {output_edge!r}")
    return _rotate(_spline_coefficients(potential), rotation_xyz, m)


def rotated_footprint(potential: np.ndarray, rotation_xyz: np.ndarray,
                      threshold_v: float) -> Footprint:
    """Rotate a map (:func:`rotate_potential`, in a box that holds any orientation), zero values
    below ``threshold_v`` (V) and crop it to its footprint (voxels ≥ threshold, plus the centre
    voxel). This is exactly what :func:`build_grandmodel` places for a particle."""
    potential = np.asarray(potential)
    _check_map_array(potential, "potential")
    return _footprint(_spline_coefficients(potential), rotation_xyz, threshold_v,
                      _output_edge(potential, threshold_v))


def _footprint(coefficients: np.ndarray, rotation_xyz: np.ndarray, threshold_v: float,
               edge: int) -> Footprint:
    rotated = _rotate(coefficients, rotation_xyz, edge)
    mask = rotated >= threshold_v
    c = edge // 2
    below = not bool(mask[c, c, c])
    mask[c, c, c] = True
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub_mask = np.ascontiguousarray(mask[box])
    values = rotated[box][sub_mask]
    if below:
        values[values < threshold_v] = 0.0  # only the added centre voxel can be below
    return Footprint((lo[0] - c, lo[1] - c, lo[2] - c), sub_mask,
                     np.ascontiguousarray(values, dtype=np.float32), below)


# ----------------------------------------------------------------------------- the build

def _resolve_classes(structure_maps: Mapping[str, StructureMap], params: GrandmodelParams
                     ) -> list[tuple[str, StructureMap, int]]:
    if not structure_maps:
        raise ValueError("structure_maps is empty: give at least one StructureMap")
    by_name = {normalize_class_name(k): v for k, v in structure_maps.items()}
    names = list(params.classes) if params.classes is not None else list(by_name)
    chosen = []
    for name in names:
        if name not in by_name:
            raise ValueError(f"classes: no structure map for class {name!r} (maps given: "
                             f"{', '.join(by_name)})")
        smap = by_name[name]
        if not math.isclose(float(smap.voxel_size_nm), params.voxel_size_nm, rel_tol=1e-6):
            raise ValueError(f"structure map of class {name!r} has voxel size "
                             f"{smap.voxel_size_nm} nm, but voxel_size_nm is "
                             f"{params.voxel_size_nm} nm")
        _check_map_array(np.asarray(smap.potential), name)
        if name not in SHREC21_TABLE:
            raise ValueError(f"class {name!r} has no id in the class table (SHREC21_TABLE), so "
                             f"it cannot go into a class mask")
        class_id = SHREC21_TABLE.by_name(name).id
        chosen.append((name, smap, class_id))
    return chosen


def build_grandmodel(
    structure_maps: Mapping[str, StructureMap],
    params: GrandmodelParams = GrandmodelParams(),
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> Grandmodel:
    """Build a grandmodel: rotate, place and rasterise particles (see the module docstring).

    Args:
        structure_maps: class name → :class:`~napari_shrec.core.structures.StructureMap`
            (e.g. :meth:`StructureLibrary.build`); each at ``params.voxel_size_nm``.
        params: see :class:`GrandmodelParams`.
        progress: ``(done, total, message)`` callback, called per chunk of rotations and per
            ~100 placements.
        cancel: checked at the same steps; :class:`~napari_shrec.core.progress.Cancelled` is
            raised and nothing is returned.

    Returns:
        a :class:`Grandmodel`; the same ``structure_maps`` and ``params`` (whatever
        ``params.threads``) give byte-identical arrays and particle list.
    """
    t_start = time.perf_counter()
    chosen = _resolve_classes(structure_maps, params)
    k = len(chosen)
    rng = np.random.default_rng(params.seed)
    low, high = params.n_particles
    n = int(rng.integers(low, high + 1))

    # classes in near-equal numbers: n // k each, the remainder to randomly chosen classes
    counts = np.full(k, n // k, dtype=np.int64)
    remainder = n - int(counts.sum())
    if remainder:
        counts[rng.choice(k, size=remainder, replace=False)] += 1
    class_index = rng.permutation(np.repeat(np.arange(k), counts))
    angles = sample_orientations(n, params.orientation_sampler, rng)
    matrices = zxz_to_matrix(angles) if n else np.zeros((0, 3, 3))

    n_chunks = -(-n // _ROTATION_CHUNK)
    n_place_steps = -(-n // _PLACEMENT_REPORT_EVERY)
    reporter = ProgressReporter(n_chunks + n_place_steps + 1, progress, cancel)
    reporter.start("grandmodel: rotating particles")

    # --- rotations (threaded, chunked; each result depends only on its own inputs)
    threshold = params.support_threshold_v
    coefficients = [_spline_coefficients(np.asarray(smap.potential, dtype=np.float32))
                    for _, smap, _ in chosen]
    edges = [_output_edge(np.asarray(smap.potential), threshold) for _, smap, _ in chosen]

    def rotate_one(i: int) -> Footprint:
        c = int(class_index[i])
        return _footprint(coefficients[c], matrices[i], threshold, edges[c])

    footprints: list[Footprint] = []
    with ThreadPoolExecutor(max_workers=params.n_threads) as pool:
        for chunk_start in range(0, n, _ROTATION_CHUNK):
            chunk = range(chunk_start, min(n, chunk_start + _ROTATION_CHUNK))
            footprints.extend(pool.map(rotate_one, chunk))
            reporter.advance(f"rotated {len(footprints)} of {n} particles")
    t_rotated = time.perf_counter()

    # --- placement, largest footprint first
    shape = params.shape_zyx
    potential = np.zeros(shape, dtype=np.float32)
    class_mask = np.zeros(shape, dtype=np.uint8)
    occupancy = np.zeros(shape, dtype=np.int32)
    sizes = np.array([fp.n_voxels for fp in footprints], dtype=np.int64)
    order = np.argsort(-sizes, kind="stable")
    placed_index: list[int] = []
    placed_centres: list[tuple[int, int, int]] = []  # (z, y, x)
    placed_boxes: list[tuple[slice, slice, slice]] = []
    not_fitted: list[dict[str, Any]] = []
    total_tries = 0
    n_centre_below = 0
    for step, i in enumerate(order.tolist(), start=1):
        fp = footprints[i]
        c = int(class_index[i])
        centre, tries = _find_position(fp, class_mask, shape, params.max_tries, rng)
        total_tries += tries
        if centre is None:
            not_fitted.append({"class_name": chosen[c][0], "footprint_voxels": fp.n_voxels,
                               "tries": tries, "phi": float(angles[i, 0]),
                               "theta": float(angles[i, 1]), "psi": float(angles[i, 2])})
        else:
            row = len(placed_index) + 1
            box, sub = _window(fp, centre, shape)
            mask = fp.mask if sub is None else fp.mask[sub]
            values = fp.values if sub is None else _cropped_values(fp, sub)
            occupancy[box][mask] = row
            class_mask[box][mask] = chosen[c][2]
            potential[box][mask] = values
            placed_index.append(i)
            placed_centres.append(centre)
            placed_boxes.append(box)
            n_centre_below += fp.centre_below_threshold
        if step % _PLACEMENT_REPORT_EVERY == 0 or step == n:
            reporter.advance(f"placed {len(placed_index)} of {step} particles tried")
    t_placed = time.perf_counter()

    # --- bounding-box masks (later rows overwrite earlier ones) and the noisy potential
    class_bbox = np.zeros(shape, dtype=np.uint8)
    occupancy_bbox = np.zeros(shape, dtype=np.int32)
    for row, (i, box) in enumerate(zip(placed_index, placed_boxes), start=1):
        class_bbox[box] = chosen[int(class_index[i])][2]
        occupancy_bbox[box] = row
    noisy = potential.copy()
    if params.structural_noise_v > 0:
        where = np.flatnonzero(potential)
        noise = rng.standard_normal(where.size, dtype=np.float32)
        noise *= np.float32(params.structural_noise_v)
        noisy.ravel()[where] += noise
        del where, noise
    reporter.advance("masks and noise")
    t_done = time.perf_counter()

    names = [chosen[int(class_index[i])][0] for i in placed_index]
    centres_xyz = np.array([(x, y, z) for z, y, x in placed_centres], dtype=np.float64)
    particles = ParticleList.from_arrays(
        names, centres_xyz.reshape(-1, 3), angles[placed_index].reshape(-1, 3),
        voxel_size_nm=params.voxel_size_nm,
        metadata={"source": "napari_shrec.core.grandmodel", "seed": params.seed,
                  "orientation_sampler": params.orientation_sampler})
    placed_counts = np.bincount(class_index[placed_index], minlength=k) if placed_index \
        else np.zeros(k, dtype=np.int64)
    report = GrandmodelReport(
        n_requested=n, n_placed=len(placed_index),
        per_class={name: {"requested": int(counts[j]), "placed": int(placed_counts[j])}
                   for j, (name, _, _) in enumerate(chosen)},
        not_fitted=not_fitted, total_tries=total_tries, seed=params.seed,
        orientation_sampler=params.orientation_sampler, n_threads=params.n_threads,
        n_centre_below_threshold=n_centre_below,
        timings_s={"rotations": t_rotated - t_start, "placement": t_placed - t_rotated,
                   "masks_and_noise": t_done - t_placed, "total": t_done - t_start})
    return Grandmodel(potential_noisefree=potential, potential=noisy, class_mask=class_mask,
                      occupancy_mask=occupancy, class_bbox=class_bbox,
                      occupancy_bbox=occupancy_bbox, particles=particles, report=report,
                      params=params)


def _window(fp: Footprint, centre_zyx: Sequence[int], shape: Sequence[int]
            ) -> tuple[tuple[slice, slice, slice], tuple[slice, slice, slice] | None]:
    """The volume slices of a footprint box at ``centre_zyx`` (cropped to the volume) and, when
    cropped, the matching slices of the footprint box (else None)."""
    box, sub, cropped = [], [], False
    for axis in range(3):
        start = int(centre_zyx[axis]) + fp.offset_zyx[axis]
        stop = start + fp.mask.shape[axis]
        a, b = max(start, 0), min(stop, int(shape[axis]))
        cropped |= (a != start) or (b != stop)
        box.append(slice(a, b))
        sub.append(slice(a - start, b - start))
    return tuple(box), (tuple(sub) if cropped else None)  # type: ignore[return-value]


def _cropped_values(fp: Footprint, sub: tuple[slice, slice, slice]) -> np.ndarray:
    full = np.zeros(fp.mask.shape, dtype=np.float32)
    full[fp.mask] = fp.values
    return full[sub][fp.mask[sub]]


def _find_position(fp: Footprint, occupied: np.ndarray, shape: Sequence[int], max_tries: int,
                   rng: np.random.Generator) -> tuple[tuple[int, int, int] | None, int]:
    """A free integer centre (z, y, x) for a footprint and the number of tries, or (None, tries).

    ``occupied`` is non-zero on taken voxels. In z the whole footprint must lie inside the
    volume; in y and x only the centre (the footprint is cropped at the edges)."""
    nz, ny, nx = (int(s) for s in shape)
    oz, oy, ox = fp.offset_zyx
    dz, dy, dx = fp.mask.shape
    z_low, z_high = -oz, nz - oz - dz  # inclusive range of the centre's z
    if z_high < z_low:
        return None, 0
    mask = fp.mask
    tries = 0
    while tries < max_tries:
        block = min(_TRY_BLOCK, max_tries - tries)
        candidates = rng.integers((z_low, 0, 0), (z_high + 1, ny, nx), size=(block, 3))
        for cz, cy, cx in candidates.tolist():
            tries += 1
            z0, y0, x0 = cz + oz, cy + oy, cx + ox
            y1, x1 = y0 + dy, x0 + dx
            if y0 >= 0 and x0 >= 0 and y1 <= ny and x1 <= nx:
                if not occupied[z0:z0 + dz, y0:y1, x0:x1][mask].any():
                    return (cz, cy, cx), tries
            else:
                box, sub = _window(fp, (cz, cy, cx), shape)
                if not occupied[box][mask[sub]].any():
                    return (cz, cy, cx), tries
    return None, tries
