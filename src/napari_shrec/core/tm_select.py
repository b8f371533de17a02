"""Template-matching picks: peaks of each class's score map, then a selection over all classes.

Candidates of one class (:func:`find_candidates`): the local maxima of its max-score map
(max-pool non-maximum suppression with a ball of ``nms_fraction`` × the class radius,
:func:`napari_shrec.core.peaks.maxpool_peaks`) among the voxels scoring at least
``median + candidate_sigma · σ`` of the map (σ = 1.4826 · MAD: robust to the particles' own high
scores), the best ``max_candidates`` of them (the paper kept 2000 per class); each with the best
rotation at its voxel.

Selection over the classes (:func:`select_particles`, ``SelectParams.strategy``):

``"thresholded"`` (paper TM-T)
    the top N candidates of each class, classes one after the other from the biggest (by
    molecular weight, else radius) to the smallest. Particles claimed by several classes stay
    (the scorer counts them as multiple hits).
``"filtered"`` (paper TM-F)
    the same walk, but a candidate is skipped when its centre is closer to an already selected
    particle (of any class, its own included) than ``overlap_fraction`` × the sum of the two
    class radii; each class still gets up to N. With ``class_order="score"`` the walk is over
    the candidates of all classes by decreasing score instead (each class capped at N).
``"statistical"``
    no fixed N: a class keeps its candidates scoring at least ``median + k σ`` of its map,
    ``k = Φ⁻¹(1 − false_alarm_rate / n_voxels)`` (Φ the standard normal CDF, n_voxels the
    searched voxels): if the map were Gaussian noise, ``false_alarm_rate`` voxels per class
    map would pass by chance. Overlaps are then filtered as in "filtered" (``expected``, when
    given, still caps a class).

N per class: ``SelectParams.expected`` (one number, or per class), else the SHREC'20 density,
2600 / 12 particles per class in 512 × 512 × 200 nm³ (the paper's N = 217), scaled to the searched
volume.

Radii: :func:`napari_shrec.core.detect.class_radius_nm` (equivalent-sphere radius from the class
table) in voxels.

Output order: the selection order (biggest class first, each by decreasing score; or by score),
which is what the SHREC scorer's first-hit rule sees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .classes import SHREC21_TABLE, ClassTable, normalize_class_name
from .particles import ParticleList

__all__ = [
    "STRATEGIES",
    "CLASS_ORDERS",
    "SHREC20_PARTICLES_PER_NM3",
    "SelectParams",
    "Candidates",
    "find_candidates",
    "robust_stats",
    "statistical_threshold",
    "expected_per_class",
    "select_particles",
]

STRATEGIES: tuple[str, ...] = ("filtered", "thresholded", "statistical")
CLASS_ORDERS: tuple[str, ...] = ("size", "score")
#: SHREC'20 crowding: about 2600 particles in 512 × 512 × 200 nm³
SHREC20_PARTICLES_PER_NM3 = 2600.0 / (512.0 * 512.0 * 200.0)


@dataclass(frozen=True)
class SelectParams:
    """How candidates become picks (module docstring).

    Attributes:
        strategy: "filtered" (TM-F), "thresholded" (TM-T) or "statistical".
        expected: N, particles per class: one integer for all, a {class: N} mapping (classes
            not in it use the density default), or None (SHREC'20 density × searched volume).
        max_candidates: candidates kept per class (paper: 2000).
        candidate_sigma: a candidate scores ≥ median + this × robust σ of its class's map.
        false_alarm_rate: "statistical": voxels per class map expected above the threshold by
            chance (> 0).
        overlap_fraction: "filtered"/"statistical": skip a candidate closer than this × (r_a +
            r_b) to a selected particle.
        nms_fraction: per-class peak suppression radius = this × the class radius.
        class_order: "size" (paper: biggest class first) or "score" (all candidates by score).
        fallback_radius_nm: radius of classes without one in the class table.
    """

    strategy: str = "filtered"
    expected: int | Mapping[str, int] | None = None
    max_candidates: int = 2000
    candidate_sigma: float = 1.0
    false_alarm_rate: float = 1.0
    overlap_fraction: float = 1.0
    nms_fraction: float = 1.0
    class_order: str = "size"
    fallback_radius_nm: float = 5.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.class_order not in CLASS_ORDERS:
            raise ValueError(f"class_order must be one of {CLASS_ORDERS}, got "
                             f"{self.class_order!r}")
        for name, low, strict in (("candidate_sigma", -math.inf, False),
                                  ("false_alarm_rate", 0.0, True),
                                  ("overlap_fraction", 0.0, False),
                                  ("nms_fraction", 0.0, True),
                                  ("fallback_radius_nm", 0.0, True)):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") \
                    from None
            if not math.isfinite(value) or value < low or (strict and value <= low):
                raise ValueError(f"{name} must be {'>' if strict else '≥'} {low}, got {value!r}")
            object.__setattr__(self, name, value)
        if isinstance(self.max_candidates, bool) or not isinstance(
                self.max_candidates, (int, np.integer)) or self.max_candidates < 1:
            raise ValueError(f"max_candidates must be an integer ≥ 1, got "
                             f"{self.max_candidates!r}")
        object.__setattr__(self, "max_candidates", int(self.max_candidates))
        if self.expected is not None:
            if isinstance(self.expected, Mapping):
                clean = {normalize_class_name(k): _count(v, f"expected[{k!r}]")
                         for k, v in self.expected.items()}
                object.__setattr__(self, "expected", MappingProxyType(clean))
            else:
                object.__setattr__(self, "expected", _count(self.expected, "expected"))

    def replace(self, **changes: Any) -> SelectParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if isinstance(self.expected, Mapping):
            out["expected"] = dict(self.expected)
        return out


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer ≥ 0, got {value!r}")
    return int(value)


@dataclass
class Candidates:
    """One class's candidates (positions in voxels of the score map = the tomogram).

    Attributes:
        class_name: the class.
        coords_zyx: (n, 3) float positions (z, y, x), by decreasing score.
        scores: (n,) FLCF scores.
        angles_zxz_deg: (n, 3) best rotation at each candidate.
        radius_vox: the class radius (voxels).
        score_median, score_sigma: robust statistics of the class's map over the searched
            voxels (median, 1.4826 · MAD).
        n_voxels: voxels searched.
        weight_kda: the class's molecular weight when known (orders the classes).
    """

    class_name: str
    coords_zyx: NDArray[np.float64]
    scores: NDArray[np.float64]
    angles_zxz_deg: NDArray[np.float64]
    radius_vox: float
    score_median: float
    score_sigma: float
    n_voxels: int
    weight_kda: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.scores.size)


def robust_stats(values: np.ndarray, max_samples: int = 2_000_000) -> tuple[float, float]:
    """(median, 1.4826 · median absolute deviation) of ``values`` (a regular subsample of at
    most ``max_samples`` values)."""
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return 0.0, 0.0
    step = max(1, flat.size // max_samples)
    sample = np.asarray(flat[::step], dtype=np.float64)
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median)))
    return median, 1.4826 * mad


def statistical_threshold(median: float, sigma: float, n_voxels: int,
                          false_alarm_rate: float) -> float:
    """``median + k σ`` with ``k = Φ⁻¹(1 − false_alarm_rate / n_voxels)``."""
    from scipy.stats import norm

    if n_voxels <= 0:
        return math.inf
    k = float(norm.isf(min(false_alarm_rate / n_voxels, 0.5)))
    return median + k * sigma


def find_candidates(
    scores_zyx: np.ndarray,
    class_name: str,
    radius_vox: float,
    *,
    angle_index: np.ndarray | None = None,
    angles_zxz_deg: np.ndarray | None = None,
    slab_z: tuple[int, int] | None = None,
    params: SelectParams = SelectParams(),
    weight_kda: float | None = None,
) -> Candidates:
    """The candidates of one class from its max-score map (module docstring).

    Args:
        scores_zyx: (Z, Y, X) max-score map (:attr:`MatchResult.scores`).
        class_name: the class.
        radius_vox: its radius (voxels).
        angle_index, angles_zxz_deg: best-rotation map and rotation list (optional).
        slab_z: the searched slices (statistics and peaks only there); default all.
        params: ``max_candidates``, ``candidate_sigma``, ``nms_fraction``.
        weight_kda: the class's weight (for the selection order).
    """
    from .peaks import maxpool_peaks

    scores_zyx = np.asarray(scores_zyx)
    if scores_zyx.ndim != 3:
        raise ValueError(f"a score map must be 3D (z, y, x), got shape {scores_zyx.shape}")
    z0, z1 = (0, scores_zyx.shape[0]) if slab_z is None else (int(slab_z[0]), int(slab_z[1]))
    region = np.ascontiguousarray(scores_zyx[z0:z1], dtype=np.float32)
    median, sigma = robust_stats(region)
    floor = median + params.candidate_sigma * sigma
    coords, values = maxpool_peaks(region, max(params.nms_fraction * radius_vox, 1.0), floor)
    order = np.lexsort((np.arange(values.size), -values))[:params.max_candidates]
    coords = coords[order]
    coords[:, 0] += z0
    values = values[order]
    angles = np.zeros((values.size, 3))
    if angle_index is not None and angles_zxz_deg is not None and values.size:
        idx = np.clip(np.rint(coords).astype(np.int64), 0, np.array(scores_zyx.shape) - 1)
        rows = np.asarray(angle_index)[idx[:, 0], idx[:, 1], idx[:, 2]]
        ok = rows >= 0
        angles[ok] = np.asarray(angles_zxz_deg)[rows[ok]]
    return Candidates(class_name=str(class_name), coords_zyx=coords, scores=values,
                      angles_zxz_deg=angles, radius_vox=float(radius_vox),
                      score_median=median, score_sigma=sigma, n_voxels=int(region.size),
                      weight_kda=weight_kda, metadata={"candidate_floor": floor})


def expected_per_class(n_voxels: int, voxel_size_nm: float) -> int:
    """N from the SHREC'20 density: 2600 / 12 particles per class in 512 × 512 × 200 nm³,
    scaled to ``n_voxels`` voxels of ``voxel_size_nm`` (at least 1)."""
    volume_nm3 = float(n_voxels) * voxel_size_nm ** 3
    return max(1, int(round(SHREC20_PARTICLES_PER_NM3 * volume_nm3 / 12.0)))


def _quota(params: SelectParams, name: str, default: int | None) -> int | None:
    expected = params.expected
    if isinstance(expected, Mapping):
        value = expected.get(normalize_class_name(name))
        return default if value is None else int(value)
    if expected is not None:
        return int(expected)
    return default


def select_particles(
    candidates: Sequence[Candidates],
    params: SelectParams = SelectParams(),
    *,
    voxel_size_nm: float = 1.0,
    class_table: ClassTable | None = None,
) -> ParticleList:
    """Picks over all classes from their candidates (module docstring).

    Args:
        candidates: one :class:`Candidates` per class.
        params: strategy, N, overlap rule.
        voxel_size_nm: written into the particle list; scales the density default of N.
        class_table: for canonical class names (default SHREC'21's, which holds SHREC'20's).

    Returns:
        a :class:`ParticleList` (x, y, z voxels of the tomogram; angles ZXZ degrees of the
        best rotation; score = FLCF), in selection order; ``metadata`` has the strategy, N and
        (statistical) the thresholds per class.
    """
    table = class_table if class_table is not None else SHREC21_TABLE
    groups = list(candidates)
    # biggest first: weight when known for every class, else radius
    if groups and all(c.weight_kda for c in groups):
        groups.sort(key=lambda c: (-float(c.weight_kda or 0.0), c.class_name))
    else:
        groups.sort(key=lambda c: (-c.radius_vox, c.class_name))
    default_n = None
    if params.strategy != "statistical":
        n_vox = max((c.n_voxels for c in groups), default=0)
        default_n = expected_per_class(n_vox, voxel_size_nm)
    quota = {c.class_name: _quota(params, c.class_name, default_n) for c in groups}
    thresholds: dict[str, float] = {}
    pools: list[tuple[Candidates, NDArray[np.int64]]] = []
    for c in groups:
        keep = np.arange(len(c))
        if params.strategy == "statistical":
            t = statistical_threshold(c.score_median, c.score_sigma, c.n_voxels,
                                      params.false_alarm_rate)
            thresholds[c.class_name] = t
            keep = keep[c.scores[keep] >= t]
        pools.append((c, keep))

    chosen: list[tuple[int, int]] = []  # (group, row)
    if params.strategy == "thresholded":
        for g, (c, keep) in enumerate(pools):
            q = quota[c.class_name]
            rows = keep if q is None else keep[:q]
            chosen.extend((g, int(r)) for r in rows)
    else:
        walk: list[tuple[int, int]] = []
        if params.class_order == "size":
            for g, (_c, keep) in enumerate(pools):
                walk.extend((g, int(r)) for r in keep)
        else:
            items = [(float(c.scores[r]), g, int(r)) for g, (c, keep) in enumerate(pools)
                     for r in keep]
            items.sort(key=lambda item: (-item[0], item[1], item[2]))
            walk = [(g, r) for _s, g, r in items]
        chosen = _filter_overlaps(pools, walk, quota, params.overlap_fraction)

    names = [_canonical(pools[g][0].class_name, table) for g, _r in chosen]
    coords_zyx = np.array([pools[g][0].coords_zyx[r] for g, r in chosen]).reshape(-1, 3)
    angles = np.array([pools[g][0].angles_zxz_deg[r] for g, r in chosen]).reshape(-1, 3)
    scores = np.array([pools[g][0].scores[r] for g, r in chosen], dtype=np.float64)
    metadata: dict[str, Any] = {
        "source": "napari-shrec match", "strategy": params.strategy,
        "class_order": params.class_order,
        "expected": {_canonical(k, table): v for k, v in quota.items()},
    }
    if thresholds:
        metadata["thresholds"] = {_canonical(k, table): v for k, v in thresholds.items()}
    return ParticleList.from_arrays(names, coords_zyx[:, ::-1], angles, scores,
                                    voxel_size_nm=voxel_size_nm, metadata=metadata)


def _canonical(name: str, table: ClassTable) -> str:
    return table.canonical_name(name) if name in table else normalize_class_name(name)


def _filter_overlaps(pools: list[tuple[Candidates, NDArray[np.int64]]],
                     walk: list[tuple[int, int]], quota: Mapping[str, int | None],
                     fraction: float) -> list[tuple[int, int]]:
    """Greedy: accept (group, row) in walk order unless its class is full or it lies closer
    than ``fraction`` × (r_a + r_b) to an accepted one."""
    capacity = sum(len(keep) for _c, keep in pools)
    centres = np.zeros((max(capacity, 1), 3))
    radii = np.zeros(max(capacity, 1))
    counts = {c.class_name: 0 for c, _keep in pools}
    chosen: list[tuple[int, int]] = []
    for g, r in walk:
        c = pools[g][0]
        q = quota[c.class_name]
        if q is not None and counts[c.class_name] >= q:
            continue
        p = c.coords_zyx[r]
        k = len(chosen)
        if k and fraction > 0:
            d2 = np.sum((centres[:k] - p) ** 2, axis=1)
            limit = fraction * (radii[:k] + c.radius_vox)
            if np.any(d2 < limit * limit):
                continue
        centres[k] = p
        radii[k] = c.radius_vox
        chosen.append((g, r))
        counts[c.class_name] += 1
    return chosen
