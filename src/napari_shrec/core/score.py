"""The SHREC'20 / SHREC'21 evaluator: localization and classification scores of a particle list.

A prediction *hits* the ground-truth particle whose id is under it in the occupancy mask, after the
mask was dilated once with the 6-connected cross (there is no distance threshold). Everything else
(RR, TP, FP, FN, MH, RO, AD, recall, precision, F1, the confusion matrix and the per-class F1
scores) follows from the list of hits, exactly as the organizers' released scripts compute it; see
``docs/scoring.md`` for every rule and where this implementation differs from the scripts (only
where they crash or are ambiguous).

Conventions:

- Particle coordinates are voxels, in file order (x, y, z); arrays are indexed ``[z, y, x]``.
- Particle id = 1-based row of the ground-truth list: occupancy-mask value ``k`` is GT row
  ``k - 1``; 0 is background.
- The dilated mask is never built: its value at a voxel is the maximum of the occupancy mask at the
  voxel and its six face neighbours inside the volume (0 outside the mask, e.g. in the SHREC'20
  padding), so only ``7 × n_predictions`` voxels of the mask are read. This works on a read-only
  ``numpy.memmap`` without loading the file.

Modes (:class:`ScoreParams`):

``native``
    ground truth and predictions share the tomogram frame of the occupancy mask (any size).
``shrec2020``
    the mask is the 200-slice grandmodel; it is padded (virtually) with ``z_offset`` = 156 empty
    slices above and below, 156 is added to every ground-truth z, and if ANY rounded predicted z is
    < 156 or > 356 then 156 is added to EVERY predicted z.
``shrec2021``
    no padding, no shift; 4V94 and vesicle particles are not scored (4V94 leaves N_gt, vesicles stay
    in N_gt: the released script's quirk), a first hit labelled with an unscored class counts as
    missed, fiducials are a scored class, labels compare case-insensitively.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .classes import (
    SHREC20_TABLE,
    SHREC21_TABLE,
    SIZE_GROUPS,
    ClassTable,
    ParticleClass,
    normalize_class_name,
)
from .particles import ParticleList
from .progress import CancelToken, ProgressCallback, ProgressReporter
from .volume import Volume

__all__ = [
    "MISSED",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "SCORE_MODES",
    "UNKNOWN",
    "ScoreMode",
    "ScoreParams",
    "ScoreResult",
    "UnknownClassLabelsError",
    "default_class_table",
    "dilated_values_at",
    "score_submission",
    "score_submissions",
]

ScoreMode = Literal["native", "shrec2020", "shrec2021"]
SCORE_MODES: tuple[str, ...] = ("native", "shrec2020", "shrec2021")

#: Per-prediction outcomes (``ScoreResult.outcome``):
#: ``TP`` first hit on a scored particle, label = true class;
#: ``misclassified`` first hit on a scored particle, other label;
#: ``duplicate`` a later hit on an already hit particle;
#: ``FP`` on background (occupancy 0 after dilation);
#: ``ignored`` on a particle that is not scored (SHREC'21: 4V94, vesicle) — counts neither way.
OUTCOMES: tuple[str, ...] = ("TP", "misclassified", "duplicate", "FP", "ignored")

MISSED = "missed"  # confusion-matrix column of particles without a (usable) first hit
UNKNOWN = "unknown"  # confusion-matrix column of first hits with labels not in the class table
SCHEMA_VERSION = "napari-shrec.score/1"

# SHREC'21: vesicles are not scored but, unlike 4V94, stay in N_gt (released script, spec §4).
SHREC21_NGT_KEEPS: tuple[str, ...] = ("vesicle",)

# The voxel and its six face neighbours: the 3D cross (scipy generate_binary_structure(3, 1)).
_CROSS_OFFSETS_ZYX: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (-1, 0, 0),
    (1, 0, 0),
    (0, -1, 0),
    (0, 1, 0),
    (0, 0, -1),
    (0, 0, 1),
)


# --------------------------------------------------------------------------- parameters, errors
@dataclass(frozen=True)
class ScoreParams:
    """Parameters of one scoring run (the CLI and the widget are built from this).

    Attributes:
        mode: "native", "shrec2020" or "shrec2021" (module docstring).
        count_unknown_as_misclassified: a label that is not in the class table normally raises
            :class:`UnknownClassLabelsError`; True counts such a first hit as a misclassification
            (confusion column "unknown") and such a line on background as an FP.
        z_offset: shrec2020 only: slices of padding above (and below) the 200-slice grandmodel
            mask, added to every ground-truth z (voxels; the released data: 156).
        auto_z_shift: shrec2020 only: apply the organizers' heuristic (add ``z_offset`` to every
            predicted z when any rounded z is < z_offset or > z_offset + mask depth). False takes
            predictions as they are (in the padded, 512-slice reconstruction frame).
    """

    mode: ScoreMode = "native"
    count_unknown_as_misclassified: bool = False
    z_offset: int = 156
    auto_z_shift: bool = True

    def __post_init__(self) -> None:
        if self.mode not in SCORE_MODES:
            raise ValueError(f"mode must be one of {SCORE_MODES}, got {self.mode!r}")
        if int(self.z_offset) != self.z_offset or self.z_offset < 0:
            raise ValueError(f"z_offset must be a non-negative integer, got {self.z_offset!r}")


class UnknownClassLabelsError(ValueError):
    """Class labels that are not in the class table.

    Attributes:
        labels: {label as written: [1-based line numbers (or row numbers)]}.
        source: the file (or "ground truth" / "submission") the labels come from.
        known: the known class names.
    """

    def __init__(self, labels: dict[str, list[int]], source: str, known: Sequence[str],
                 *, line_kind: str = "line", hint: str = "") -> None:
        self.labels = {k: list(v) for k, v in labels.items()}
        self.source = source
        self.known = tuple(known)
        parts = []
        for label, lines in self.labels.items():
            shown = ", ".join(str(n) for n in lines[:10])
            more = f" and {len(lines) - 10} more" if len(lines) > 10 else ""
            kind = line_kind if len(lines) == 1 else line_kind + "s"
            parts.append(f"{label!r} ({kind} {shown}{more})")
        n = len(self.labels)
        message = (f"{source}: {n} unknown class label{'s' if n != 1 else ''}: "
                   f"{'; '.join(parts)}. Known classes: {', '.join(self.known)}.")
        if hint:
            message += " " + hint
        super().__init__(message)


# --------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class ScoreResult:
    """Every number of one scored submission, plus per-prediction outcomes.

    Localization (paper Table 3): ``RR`` lines submitted; ``TP`` scored particles with ≥ 1 hit;
    ``FP`` lines on background; ``FN`` scored particles without a hit; ``MH`` particles with more
    than one hit; ``RO`` lines with a coordinate clipped into the volume; ``AD`` mean distance
    (voxels) from each found particle's centre to its FIRST hit (NaN when TP = 0); ``recall`` =
    TP / N_gt; ``precision`` = TP / RR; ``miss_rate`` = 1 − recall; ``F1`` harmonic mean (0 when
    recall + precision = 0). ``N_gt`` is the particle count recall divides by.

    Classification (Tables 4, 6): ``confusion`` (rows = true scored classes ordered by molecular
    weight, columns = the same classes, then "missed", then "unknown" when present);
    ``per_class`` (a DataFrame indexed by class: N_gt, TP, FP, FN, precision, recall, F1 and the
    per-class localization RR/TP/precision/recall/F1, weight and size group); ``per_class_F1``
    (NaN for a class absent from both sides); ``mean_class_F1`` (headline: mean over the protein
    classes present); ``F1_macro_with_background`` (the script's "F1 Macro": mean over the classes
    present plus the "missed" pseudo-class, F1 0); ``size_group_F1``.

    Per prediction (arrays aligned with the submission rows): ``hit_particle`` (1-based GT id or
    0), ``outcome`` (one of :data:`OUTCOMES`), ``clipped`` (counted in RO), ``distance`` (voxels
    to the hit particle's centre, NaN on background), ``lookup_xyz`` (the voxel looked up, in the
    scoring frame), ``predicted_class`` (canonical label, or the label as written if unknown).
    """

    submission: str
    params: ScoreParams
    class_table: ClassTable
    scored_classes: tuple[str, ...]
    # localization
    N_gt: int
    RR: int
    TP: int
    FP: int
    FN: int
    MH: int
    RO: int
    AD: float
    recall: float
    precision: float
    miss_rate: float
    F1: float
    n_duplicates: int
    n_ignored: int
    z_shift: int
    # classification
    confusion: pd.DataFrame
    per_class: pd.DataFrame
    per_class_F1: dict[str, float]
    per_class_localization_F1: dict[str, float]
    mean_class_F1: float
    F1_macro_with_background: float
    size_group_F1: dict[str, float]
    # per prediction
    hit_particle: NDArray[np.int64]
    outcome: NDArray[np.str_]
    clipped: NDArray[np.bool_]
    distance: NDArray[np.float64]
    lookup_xyz: NDArray[np.int64]
    predicted_class: NDArray[np.str_]
    # per ground-truth particle
    missed_indices: NDArray[np.int64]
    excluded_indices: NDArray[np.int64]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def missed_ids(self) -> NDArray[np.int64]:
        """1-based ids (occupancy-mask values) of the scored GT particles without any hit."""
        return self.missed_indices + 1

    def outcome_counts(self) -> dict[str, int]:
        """{outcome: number of predictions} for every outcome in :data:`OUTCOMES`."""
        return {name: int(np.count_nonzero(self.outcome == name)) for name in OUTCOMES}

    def to_dict(self, *, include_predictions: bool = False) -> dict[str, Any]:
        """The JSON object of this result (schema in ``docs/scoring.md``; NaN → None).

        Args:
            include_predictions: also add ``"predictions"``: per-prediction lists
                ``hit_particle``, ``outcome``, ``clipped``, ``distance``.
        """
        per_class: dict[str, dict[str, Any]] = {}
        for name, row in self.per_class.iterrows():
            per_class[str(name)] = {key: _json_value(row[key]) for key in self.per_class.columns}
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "submission": self.submission,
            "mode": self.params.mode,
            "params": {
                "mode": self.params.mode,
                "count_unknown_as_misclassified": self.params.count_unknown_as_misclassified,
                "z_offset": int(self.params.z_offset),
                "auto_z_shift": self.params.auto_z_shift,
            },
            "N_gt": self.N_gt,
            "RR": self.RR,
            "TP": self.TP,
            "FP": self.FP,
            "FN": self.FN,
            "MH": self.MH,
            "RO": self.RO,
            "AD": _json_value(self.AD),
            "recall": _json_value(self.recall),
            "precision": _json_value(self.precision),
            "miss_rate": _json_value(self.miss_rate),
            "F1": _json_value(self.F1),
            "duplicates": self.n_duplicates,
            "ignored": self.n_ignored,
            "z_shift": self.z_shift,
            "classes": list(self.scored_classes),
            "per_class_F1": {k: _json_value(v) for k, v in self.per_class_F1.items()},
            "mean_class_F1": _json_value(self.mean_class_F1),
            "F1_macro_with_background": _json_value(self.F1_macro_with_background),
            "size_group_F1": {k: _json_value(v) for k, v in self.size_group_F1.items()},
            "per_class_localization_F1": {
                k: _json_value(v) for k, v in self.per_class_localization_F1.items()
            },
            "per_class": per_class,
            "confusion": {
                "rows": [str(r) for r in self.confusion.index],
                "columns": [str(c) for c in self.confusion.columns],
                "matrix": self.confusion.to_numpy(dtype=np.int64).tolist(),
            },
            "outcomes": self.outcome_counts(),
            "missed_ids": self.missed_ids.tolist(),
            "warnings": list(self.warnings),
        }
        if include_predictions:
            out["predictions"] = {
                "hit_particle": self.hit_particle.tolist(),
                "outcome": [str(o) for o in self.outcome],
                "clipped": self.clipped.tolist(),
                "distance": [_json_value(d) for d in self.distance],
            }
        return out


def _json_value(value: Any) -> Any:
    """Plain Python value for JSON: numpy scalars unwrapped, NaN/inf → None."""
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (int, str)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


# --------------------------------------------------------------------------- the lookup
def dilated_values_at(mask: np.ndarray, zyx: NDArray[np.integer], *, z_offset: int = 0
                      ) -> np.ndarray:
    """Values of the cross-dilated occupancy mask at integer voxels, without dilating the volume.

    The dilated mask is ``scipy.ndimage.grey_dilation(mask, footprint=cross)``: each voxel takes
    the maximum over itself and its 6 face neighbours that lie inside the mask (for non-negative
    masks this is the same for every boundary mode — the organizers' skimage ``dilation`` uses
    ``mode="reflect"``, which mirrors the voxel itself). It is defined on the mask's grid only:
    the mask (D, H, W), indexed [z, y, x], sits at z ∈ [z_offset, z_offset + D) of the scoring
    frame, and every position outside it — the SHREC'20 padding, or outside the volume — is 0,
    exactly what the organizers get by padding the *dilated* mask.

    Args:
        mask: (D, H, W) array of non-negative values; a read-only ``numpy.memmap`` is fine (at
            most ``7 × n`` voxels are read).
        zyx: (n, 3) integer voxel positions (z, y, x) in the scoring frame.
        z_offset: z of the mask's first slice in the scoring frame (voxels).

    Returns:
        (n,) array of the mask's dtype.
    """
    if mask.ndim != 3:
        raise ValueError(f"occupancy mask must be 3D (z, y, x), got shape {mask.shape}")
    pos = np.asarray(zyx, dtype=np.int64).reshape(-1, 3)
    n = pos.shape[0]
    if n == 0:
        return np.zeros(0, dtype=mask.dtype)
    depth, height, width = mask.shape
    offsets = np.asarray(_CROSS_OFFSETS_ZYX, dtype=np.int64)  # (7, 3)
    centre = pos - np.array([int(z_offset), 0, 0])
    centre_inside = ((centre >= 0) & (centre < np.array([depth, height, width]))).all(axis=1)
    z = centre[:, 0, None] + offsets[None, :, 0]  # (n, 7)
    y = centre[:, 1, None] + offsets[None, :, 1]
    x = centre[:, 2, None] + offsets[None, :, 2]
    inside = (centre_inside[:, None] & (z >= 0) & (z < depth) & (y >= 0) & (y < height)
              & (x >= 0) & (x < width))
    values = np.zeros((n, len(_CROSS_OFFSETS_ZYX)), dtype=mask.dtype)
    flat_values = values.reshape(-1)
    take = np.flatnonzero(inside.reshape(-1))
    if take.size:
        z, y, x = z.reshape(-1)[take], y.reshape(-1)[take], x.reshape(-1)[take]
        # read in file order: with a memmap, neighbouring reads share pages and disk blocks
        order = np.argsort((z * height + y) * width + x, kind="stable")
        with _random_access(mask):
            flat_values[take[order]] = mask[z[order], y[order], x[order]]
    return values.max(axis=1)


@contextmanager
def _random_access(array: np.ndarray) -> Iterator[None]:
    """While reading a few scattered voxels of a ``numpy.memmap``, tell the kernel not to read
    ahead (``MADV_RANDOM``): otherwise every page fault pulls in its neighbourhood and a lookup
    of 2800 × 7 voxels reads the whole 200 MB SHREC mask from disk. Restores ``MADV_NORMAL``.
    Does nothing for in-memory arrays or where ``madvise`` is unavailable (Windows)."""
    mm = getattr(array, "_mmap", None) if isinstance(array, np.memmap) else None
    advise = getattr(mm, "madvise", None)
    random_flag = getattr(mmap, "MADV_RANDOM", None)
    advised = False
    if advise is not None and random_flag is not None:
        try:
            advise(random_flag)
            advised = True
        except (OSError, ValueError):  # closed or unsupported mapping
            advised = False
    try:
        yield
    finally:
        if advised:
            try:
                advise(mmap.MADV_NORMAL)
            except (OSError, ValueError):
                pass


# --------------------------------------------------------------------------- class handling
def default_class_table(mode: str, labels: Sequence[str] = ()) -> ClassTable:
    """The class table used when none is given.

    shrec2021 → SHREC21_TABLE; shrec2020 → SHREC20_TABLE; native → SHREC20_TABLE unless one of
    ``labels`` (ground truth and submission) is only in SHREC21_TABLE.
    """
    if mode == "shrec2021":
        return SHREC21_TABLE
    if mode == "shrec2020":
        return SHREC20_TABLE
    extra = {normalize_class_name(x) for x in labels} - {c.name for c in SHREC20_TABLE}
    if extra and any(x in SHREC21_TABLE for x in extra):
        return SHREC21_TABLE
    return SHREC20_TABLE


def _scored_classes(table: ClassTable, mode: str) -> tuple[ParticleClass, ...]:
    """Classes scored in this mode, ordered by molecular weight (unknown weights last)."""
    ordered = table.by_weight()
    if mode == "shrec2021":
        return tuple(c for c in ordered if c.scored)
    return ordered


def _canonical_labels(labels: NDArray[np.str_], table: ClassTable
                      ) -> tuple[NDArray[np.object_], NDArray[np.bool_]]:
    """(canonical names with unknown labels kept as written, known flags), one per label."""
    lookup: dict[str, str | None] = {}
    names = np.empty(len(labels), dtype=object)
    known = np.zeros(len(labels), dtype=bool)
    for i, label in enumerate(labels):
        raw = str(label)
        if raw not in lookup:
            lookup[raw] = table.canonical_name(raw) if raw in table else None
        canon = lookup[raw]
        known[i] = canon is not None
        names[i] = canon if canon is not None else raw
    return names, known


def _unknown_labels(labels: NDArray[np.str_], known: NDArray[np.bool_],
                    particles: ParticleList) -> tuple[dict[str, list[int]], str]:
    """{label: [line numbers]} of the unknown labels, and "line" or "row"."""
    line_numbers = particles.metadata.get("line_numbers")
    use_lines = line_numbers is not None and len(line_numbers) == len(labels)
    out: dict[str, list[int]] = {}
    for i in np.flatnonzero(~known):
        number = int(line_numbers[i]) if use_lines else int(i) + 1
        out.setdefault(str(labels[i]), []).append(number)
    return out, ("line" if use_lines else "row")


def _source_name(particles: ParticleList, fallback: str) -> str:
    source = particles.metadata.get("source")
    return str(source) if source else fallback


# --------------------------------------------------------------------------- small maths
def _ratio(num: float, den: float) -> float:
    """num / den, 0.0 when den == 0 (the convention for every ratio here, except AD)."""
    return float(num) / float(den) if den else 0.0


def _harmonic(a: float, b: float) -> float:
    """2ab / (a + b), 0.0 when a + b == 0."""
    return 2.0 * a * b / (a + b) if (a + b) > 0 else 0.0


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(sum(finite) / len(finite)) if finite else float("nan")


# --------------------------------------------------------------------------- scoring
def score_submission(
    gt_particles: ParticleList,
    occupancy_mask: np.ndarray | Volume,
    predictions: ParticleList,
    params: ScoreParams = ScoreParams(),
    *,
    class_table: ClassTable | None = None,
    submission_name: str = "submission",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> ScoreResult:
    """Score a submission against ground truth, the SHREC way.

    Args:
        gt_particles: ground-truth particles, row i = particle id i + 1 (the occupancy-mask value).
            Coordinates in voxels (x, y, z) of the mask's frame (SHREC'20: z in 0…199).
        occupancy_mask: (z, y, x) array or :class:`Volume` of particle ids (0 = background);
            may be a read-only memmap — only ``7 × len(predictions)`` voxels are read.
        predictions: the submission (x, y, z in voxels; class labels case-insensitive).
            ``metadata["line_numbers"]`` (aligned with rows) is used in error messages.
        params: :class:`ScoreParams`.
        class_table: classes to score (default: :func:`default_class_table`).
        submission_name: name reported in tables and JSON.
        progress: ``progress(done, total, message)`` callback.
        cancel: :class:`CancelToken`; raises :class:`~napari_shrec.core.progress.Cancelled`.

    Returns:
        A :class:`ScoreResult`.

    Raises:
        UnknownClassLabelsError: a label (ground truth or submission) not in the class table
            (submission labels only unless ``params.count_unknown_as_misclassified``).
        ValueError: the mask is not 3D, holds an id larger than the number of GT particles, or a
            predicted coordinate is NaN.
    """
    reporter = ProgressReporter(total=5, progress=progress, cancel=cancel)
    reporter.start("checking class labels")
    mask = occupancy_mask.data if isinstance(occupancy_mask, Volume) else occupancy_mask
    if not hasattr(mask, "ndim") or mask.ndim != 3:
        shape = getattr(mask, "shape", None)
        raise ValueError(f"occupancy mask must be a 3D (z, y, x) array, got shape {shape}")
    mode = params.mode
    n_gt = len(gt_particles)
    n_pred = len(predictions)
    gt_labels = gt_particles.class_names if n_gt else np.zeros(0, dtype=str)
    pred_labels = predictions.class_names if n_pred else np.zeros(0, dtype=str)
    table = class_table if class_table is not None else default_class_table(
        mode, list(gt_labels) + list(pred_labels))

    # ---- labels
    gt_names, gt_known = _canonical_labels(gt_labels, table)
    if not gt_known.all():
        unknown, kind = _unknown_labels(gt_labels, gt_known, gt_particles)
        raise UnknownClassLabelsError(unknown, _source_name(gt_particles, "ground truth"),
                                      table.names, line_kind=kind)
    pred_names, pred_known = _canonical_labels(pred_labels, table)
    if not pred_known.all() and not params.count_unknown_as_misclassified:
        unknown, kind = _unknown_labels(pred_labels, pred_known, predictions)
        raise UnknownClassLabelsError(
            unknown, _source_name(predictions, submission_name), table.names, line_kind=kind,
            hint="To count them as misclassifications, pass count_unknown_as_misclassified=True "
                 "(CLI: --unknown-as-misclassified).")
    scored = _scored_classes(table, mode)
    scored_names = tuple(c.name for c in scored)
    scored_set = set(scored_names)
    reporter.advance("looking up predictions in the occupancy mask")

    # ---- coordinates → scoring frame, rounding, clipping, lookup
    warnings: list[str] = []
    coords = predictions.coords_xyz() if n_pred else np.zeros((0, 3))
    bad = np.isnan(coords).any(axis=1)
    if bad.any():
        lines = predictions.metadata.get("line_numbers")
        where = [int(lines[i]) if lines is not None and len(lines) == n_pred else int(i) + 1
                 for i in np.flatnonzero(bad)[:10]]
        raise ValueError(f"{_source_name(predictions, submission_name)}: NaN coordinate on "
                         f"line(s) {', '.join(map(str, where))}")
    rounded = np.rint(coords)  # round half to even, like Python's round()
    depth, height, width = mask.shape
    mask_z0 = 0
    gt_dz = 0.0
    z_shift = 0
    frame_depth = depth
    if mode == "shrec2020":
        pad = int(params.z_offset)
        mask_z0 = pad
        gt_dz = float(pad)
        frame_depth = depth + 2 * pad
        if params.auto_z_shift and n_pred:
            zmin, zmax = float(rounded[:, 2].min()), float(rounded[:, 2].max())
            if zmin < pad or zmax > pad + depth:
                z_shift = pad
                warnings.append(
                    f"predicted z spans {zmin:g}…{zmax:g}, outside {pad}…{pad + depth}: the "
                    f"submission looks like it is in the 0…{depth - 1} grandmodel frame; added "
                    f"{pad} to every predicted z (organizers' heuristic)")
        rounded[:, 2] += z_shift
    upper = np.array([width - 1, height - 1, frame_depth - 1], dtype=np.float64)
    clipped_xyz = np.clip(rounded, 0.0, upper)
    clipped = np.any(clipped_xyz != rounded, axis=1)
    lookup_xyz = clipped_xyz.astype(np.int64)
    values = dilated_values_at(mask, lookup_xyz[:, ::-1], z_offset=mask_z0)
    hit = values.astype(np.int64)  # int() of the (float) mask value, as the script does
    if n_pred and (hit.min() < 0 or hit.max() > n_gt):
        i = int(np.argmax((hit < 0) | (hit > n_gt)))
        raise ValueError(
            f"occupancy mask value {hit[i]} at (x, y, z) = {tuple(lookup_xyz[i].tolist())} is not "
            f"a particle id of the ground truth (1…{n_gt}); do the mask and the particle list "
            "belong together?")
    reporter.advance("localization")

    # ---- localization
    gt_xyz = gt_particles.coords_xyz() if n_gt else np.zeros((0, 3))
    gt_xyz = gt_xyz + np.array([0.0, 0.0, gt_dz])
    gt_scored = np.array([name in scored_set for name in gt_names], dtype=bool)
    gt_reduces_ngt = np.ones(n_gt, dtype=bool)
    if mode == "shrec2021":
        keeps = set(SHREC21_NGT_KEEPS)
        gt_reduces_ngt = np.array([name in scored_set or name in keeps for name in gt_names],
                                  dtype=bool)
    N_gt = int(np.count_nonzero(gt_reduces_ngt))
    excluded_indices = np.flatnonzero(~gt_scored).astype(np.int64)

    on_bg = hit == 0
    gt_row = hit - 1
    on_particle = ~on_bg
    on_scored = np.zeros(n_pred, dtype=bool)
    on_scored[on_particle] = gt_scored[gt_row[on_particle]]
    on_excluded = on_particle & ~on_scored

    distance = np.full(n_pred, np.nan)
    if on_particle.any():
        d = lookup_xyz[on_particle].astype(np.float64) - gt_xyz[gt_row[on_particle]]
        distance[on_particle] = np.sqrt(np.sum(d * d, axis=1))

    hits_scored = hit[on_scored]
    counts = np.bincount(hits_scored, minlength=n_gt + 1)[1:] if n_gt else np.zeros(0, np.int64)
    found = counts > 0
    TP = int(np.count_nonzero(found & gt_scored))
    FN = int(np.count_nonzero(~found & gt_scored))
    MH = int(np.count_nonzero(counts > 1))
    FP = int(np.count_nonzero(on_bg))
    RO = int(np.count_nonzero(clipped))
    RR = int(n_pred)
    n_ignored = int(np.count_nonzero(on_excluded))
    n_duplicates = int(hits_scored.size - TP)
    # first hit of every found particle: index into the predictions, in file order
    scored_idx = np.flatnonzero(on_scored)
    first_of = np.full(n_gt, -1, dtype=np.int64)
    if scored_idx.size:
        ids, first_pos = np.unique(hits_scored, return_index=True)
        first_of[ids - 1] = scored_idx[first_pos]
    first_idx = first_of[first_of >= 0]
    AD = float(np.mean(distance[first_idx])) if first_idx.size else float("nan")
    recall = _ratio(TP, N_gt)
    precision = _ratio(TP, RR)
    miss_rate = 1.0 - recall
    F1 = _harmonic(recall, precision)
    missed_indices = np.flatnonzero(~found & gt_scored).astype(np.int64)
    if mode == "native" and RR and RO > 0.1 * RR:
        warnings.append(f"{RO} of {RR} predictions lie outside the volume {mask.shape} (z, y, x); "
                        "is the submission in another frame (e.g. --mode shrec2020)?")
    reporter.advance("classification")

    # ---- outcomes and confusion matrix
    is_first = np.zeros(n_pred, dtype=bool)
    is_first[first_idx] = True
    outcome = np.full(n_pred, "FP", dtype="<U13")
    outcome[on_excluded] = "ignored"
    outcome[on_scored & ~is_first] = "duplicate"
    right = np.zeros(n_pred, dtype=bool)
    if first_idx.size:
        right[first_idx] = pred_names[first_idx] == gt_names[gt_row[first_idx]]
    outcome[is_first & right] = "TP"
    outcome[is_first & ~right] = "misclassified"

    row_of = {name: i for i, name in enumerate(scored_names)}
    columns = list(scored_names) + [MISSED]
    has_unknown_first = bool(first_idx.size) and not bool(pred_known[first_idx].all())
    if has_unknown_first:
        columns.append(UNKNOWN)
    col_of = {name: i for i, name in enumerate(columns)}
    cm = np.zeros((len(scored_names), len(columns)), dtype=np.int64)
    for g in np.flatnonzero(gt_scored):
        p = first_of[g]
        if p < 0:
            col = col_of[MISSED]
        elif not pred_known[p]:
            col = col_of[UNKNOWN]
        elif pred_names[p] not in scored_set:
            col = col_of[MISSED]  # SHREC'21: a first hit labelled 4V94 (or vesicle) = missed
        else:
            col = col_of[pred_names[p]]
        cm[row_of[gt_names[g]], col] += 1
    confusion = pd.DataFrame(cm, index=pd.Index(scored_names, name="true"),
                             columns=pd.Index(columns, name="predicted"))
    reporter.advance("per-class scores")

    # ---- per-class scores
    records = []
    pred_names_arr = np.asarray(pred_names, dtype=object)
    for k, cls in enumerate(scored):
        tp = int(cm[k, k])
        fn = int(cm[k].sum() - tp)
        fp = int(cm[:, k].sum() - tp)
        f1 = 2.0 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
        # per-class localization: lines labelled `cls` against particles of class `cls`
        labelled = pred_names_arr == cls.name
        loc_rr = int(np.count_nonzero(labelled))
        of_class = gt_scored & (gt_names == cls.name)
        n_c = int(np.count_nonzero(of_class))
        sel = labelled & on_scored
        hit_rows = np.unique(gt_row[sel])
        loc_tp = int(np.count_nonzero(of_class[hit_rows])) if hit_rows.size else 0
        loc_recall = _ratio(loc_tp, n_c)
        loc_precision = _ratio(loc_tp, loc_rr)
        loc_f1 = _harmonic(loc_recall, loc_precision) if (n_c or loc_rr) else float("nan")
        records.append({
            "class": cls.name,
            "N_gt": int(cm[k].sum()),
            "TP": tp,
            "FP": fp,
            "FN": fn,
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "F1": f1,
            "loc_RR": loc_rr,
            "loc_TP": loc_tp,
            "loc_precision": loc_precision,
            "loc_recall": loc_recall,
            "loc_F1": loc_f1,
            "weight_kda": float("nan") if cls.weight_kda is None else float(cls.weight_kda),
            "size_group": cls.size_group if cls.size_group is not None else "",
        })
    per_class = pd.DataFrame.from_records(
        records,
        columns=["class", "N_gt", "TP", "FP", "FN", "precision", "recall", "F1", "loc_RR",
                 "loc_TP", "loc_precision", "loc_recall", "loc_F1", "weight_kda", "size_group"],
    ).set_index("class")
    per_class_F1 = {name: float(per_class.at[name, "F1"]) for name in scored_names}
    per_class_loc_F1 = {name: float(per_class.at[name, "loc_F1"]) for name in scored_names}
    proteins = [c.name for c in scored if c.size_group is not None]
    mean_class_F1 = _nanmean([per_class_F1[n] for n in proteins])
    size_group_F1 = {
        g: _nanmean([per_class_F1[c.name] for c in scored if c.size_group == g])
        for g in SIZE_GROUPS
    }
    present = [v for v in per_class_F1.values() if not math.isnan(v)]
    pseudo = [name for name in (MISSED, UNKNOWN) if name in col_of and cm[:, col_of[name]].sum()]
    n_macro = len(present) + len(pseudo)
    F1_macro = float(sum(present) / n_macro) if n_macro else float("nan")
    reporter.advance("done")

    return ScoreResult(
        submission=str(submission_name),
        params=params,
        class_table=table,
        scored_classes=scored_names,
        N_gt=N_gt,
        RR=RR,
        TP=TP,
        FP=FP,
        FN=FN,
        MH=MH,
        RO=RO,
        AD=AD,
        recall=recall,
        precision=precision,
        miss_rate=miss_rate,
        F1=F1,
        n_duplicates=n_duplicates,
        n_ignored=n_ignored,
        z_shift=z_shift,
        confusion=confusion,
        per_class=per_class,
        per_class_F1=per_class_F1,
        per_class_localization_F1=per_class_loc_F1,
        mean_class_F1=mean_class_F1,
        F1_macro_with_background=F1_macro,
        size_group_F1=size_group_F1,
        hit_particle=hit,
        outcome=outcome,
        clipped=clipped,
        distance=distance,
        lookup_xyz=lookup_xyz,
        predicted_class=np.asarray([str(n) for n in pred_names], dtype=str),
        missed_indices=missed_indices,
        excluded_indices=excluded_indices,
        warnings=tuple(warnings),
    )


def score_submissions(
    gt_particles: ParticleList,
    occupancy_mask: np.ndarray | Volume,
    submissions: Sequence[tuple[str, ParticleList]],
    params: ScoreParams = ScoreParams(),
    *,
    class_table: ClassTable | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> list[ScoreResult]:
    """Score several submissions against the same ground truth (one progress bar for all).

    Args:
        submissions: ``(name, predictions)`` pairs, scored in order.
        Other arguments as :func:`score_submission`.

    Returns:
        One :class:`ScoreResult` per submission, in order.
    """
    steps_each = 5
    total = steps_each * len(submissions)
    reporter = ProgressReporter(total=total, progress=progress, cancel=cancel)
    reporter.start(f"scoring {len(submissions)} submission(s)")
    results: list[ScoreResult] = []
    for index, (name, predictions) in enumerate(submissions):
        offset = index * steps_each

        def forward(done: int, _total: int, message: str, _offset: int = offset,
                    _name: str = name) -> None:
            if progress is not None:
                progress(_offset + done, total, f"{_name}: {message}")

        results.append(score_submission(gt_particles, occupancy_mask, predictions, params,
                                        class_table=class_table, submission_name=name,
                                        progress=forward, cancel=cancel))
    return results
