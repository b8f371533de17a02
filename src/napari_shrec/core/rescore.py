"""Second-stage candidate rescoring: a particle's class and score from its neighbourhood.

The detector's peaks take the class of the map whose peak is highest and the peak value as the
score. For the small proteins the per-voxel maps are noisy and several classes share a
particle's probability mass, so the class at the single peak voxel is often wrong. A
:class:`CandidateRescorer` looks at every candidate's neighbourhood instead:

* map features: the mean of each probability channel (background included) over balls of a
  few radii around the candidate, as log-probabilities (``C × len(radii_vox)`` numbers);
* image features (optional, ``image_radii_vox``): the tomogram's mean density over balls of a
  few radii, normalised by the tomogram's median and robust σ
  (:data:`DENSITY_NORMALIZATION`), and the differences between consecutive radii — a cue to
  the particle's size and mass that the maps have lost (``2 × len(image_radii_vox) − 1``).

The features, standardised with their mean and σ over the fitting candidates, feed a
multinomial logistic regression fitted on the validation tomogram's candidates against what
they hit in the ground truth ("background" when nothing). The rescored class is the most
probable protein class, the score ``1 - P(background)``: the chance that the candidate is a
particle at all.

With the shipped network, fitted on the validation tomogram and applied to the test tomogram,
the map features raised localization F1 from 0.947 to 0.964 and mean class F1 from 0.729 to
0.743 (fitted the other way round the gain was similar); the image features and a second
validation tomogram raised the class F1 to 0.757 (on a second test tomogram from 0.743 to
0.749; ``docs/results.md``).

Map features are computed from the probability maps at the candidate's map voxel (maps at the
model's output stride; radii are given in tomogram voxels and divided by the stride); image
features from the tomogram at the candidate's tomogram voxel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .classes import normalize_class_name
from .nets.normalize import NormalizationStats
from .particles import ParticleList
from .peaks import FIXED_POINT_SCALE, ball_offsets

#: radii (tomogram voxels) of the balls whose mean probabilities are the map features
DEFAULT_RADII_VOX: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
#: radii (tomogram voxels) of the balls whose mean densities are the image features
DEFAULT_IMAGE_RADII_VOX: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
#: the tomogram normalisation of the image features (:mod:`napari_shrec.core.nets.normalize`):
#: median and robust σ of the sample slab, no clipping
DENSITY_NORMALIZATION: dict[str, Any] = {"method": "robust", "clip": None}
#: label of a candidate that hits no particle
BACKGROUND = "background"
#: log-probabilities are clipped at this floor
LOG_FLOOR = 1e-4
#: fewest validation candidates of a class that hit one of its particles to fit the rescorer
MIN_EXAMPLES_PER_CLASS = 3


def _ball_means(arrays: Sequence[np.ndarray], points: NDArray[np.int64], radius: float,
                out: NDArray[Any], *, chunk: int = 2048) -> None:
    """``out[i, c]`` = mean of ``arrays[c]`` (3D, all of one shape) over the ball of ``radius``
    (voxels; below 1: the voxel alone) around ``points[i]``; ball voxels outside the arrays are
    clamped onto their border."""
    shape = np.asarray(arrays[0].shape, dtype=np.int64)
    offsets = ball_offsets(float(radius)) if radius >= 1 else np.zeros((1, 3), np.int64)
    for first in range(0, len(points), chunk):
        at = points[first:first + chunk, None, :] + offsets[None, :, :]
        np.clip(at, 0, shape - 1, out=at)
        for c, array in enumerate(arrays):
            values = array[at[..., 0], at[..., 1], at[..., 2]]
            out[first:first + chunk, c] = values.astype(np.float64).mean(axis=1)


def _rounded_points(coords_zyx: NDArray[Any]) -> NDArray[np.int64]:
    return np.rint(np.asarray(coords_zyx, dtype=np.float64).reshape(-1, 3)).astype(np.int64)


def neighbourhood_features(maps: np.ndarray, coords_zyx: NDArray[Any],
                           radii: Sequence[float], *, chunk: int = 2048) -> NDArray[np.float32]:
    """Log mean probability of every channel over balls around each position.

    Args:
        maps: (C, Z, Y, X) probability maps: float32/float16, or uint16 fixed point
            (probability × 65535, as :func:`~napari_shrec.core.detect.detect` accumulates them).
        coords_zyx: (n, 3) positions in map voxels (z, y, x); rounded to the nearest voxel.
        radii: ball radii in map voxels (a radius below 1 is the voxel alone).
        chunk: positions gathered at once (memory: chunk × ball voxels × 24 bytes).

    Returns:
        (n, C × len(radii)) float32: for radius r_j and channel c, column j·C + c holds
        log(max(mean, 1e-4)); ball voxels outside the map are clamped onto its border.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (C, Z, Y, X), got shape {maps.shape}")
    points = _rounded_points(coords_zyx)
    n_channels = maps.shape[0]
    out = np.zeros((len(points), n_channels * len(radii)), dtype=np.float32)
    scale = np.float32(1.0 / FIXED_POINT_SCALE) if maps.dtype == np.uint16 else np.float32(1.0)
    for j, radius in enumerate(radii):
        _ball_means(list(maps), points, radius,
                    out[:, j * n_channels:(j + 1) * n_channels], chunk=chunk)
    out *= scale
    np.log(np.maximum(out, LOG_FLOOR), out=out)
    return out


def n_density_features(radii: Sequence[float]) -> int:
    """How many columns :func:`density_features` gives for ``radii``."""
    return 2 * len(radii) - 1 if len(radii) else 0


def density_features(volume_zyx: np.ndarray, coords_zyx: NDArray[Any], radii: Sequence[float],
                     stats: NormalizationStats, *, chunk: int = 2048) -> NDArray[np.float32]:
    """The tomogram's normalised mean density over balls around each position.

    Args:
        volume_zyx: the tomogram, or the part of it the positions refer to (z, y, x), raw
            values; a numpy array or memmap (only the balls' voxels are read).
        coords_zyx: (n, 3) positions in voxels of ``volume_zyx``; rounded to the nearest voxel.
        radii: ball radii in voxels, increasing (a radius below 1 is the voxel alone).
        stats: the tomogram's :data:`DENSITY_NORMALIZATION` statistics
            (:func:`~napari_shrec.core.nets.normalize.normalization_stats` over its sample slab):
            a mean density m becomes ``(m − centre) / scale``.

    Returns:
        (n, 2 × len(radii) − 1) float32: columns 0 … R−1 the normalised ball means, then
        R … 2R−2 the differences between consecutive radii (mean at r_{j+1} − mean at r_j);
        ball voxels outside ``volume_zyx`` are clamped onto its border.
    """
    if volume_zyx.ndim != 3:
        raise ValueError(f"the tomogram must be (z, y, x), got shape {volume_zyx.shape}")
    points = _rounded_points(coords_zyx)
    means = np.zeros((len(points), len(radii)), dtype=np.float64)
    for j, radius in enumerate(radii):
        _ball_means([volume_zyx], points, radius, means[:, j:j + 1], chunk=chunk)
    means = (means - stats.centre) / stats.scale
    return np.concatenate([means, np.diff(means, axis=1)], axis=1).astype(np.float32)


@dataclass(frozen=True)
class CandidateRescorer:
    """A fitted multinomial logistic regression over a candidate's features: the
    :func:`neighbourhood_features` of the maps at ``radii_vox``, then (when
    ``image_radii_vox`` is not empty) the :func:`density_features` of the tomogram.

    Attributes:
        class_names: the model's classes (channel k ≥ 1 = ``class_names[k - 1]``).
        radii_vox: map-feature ball radii in tomogram voxels.
        coef: (1 + K, F) weights of the standardised features; row 0 background, row k class
            ``class_names[k - 1]``; F = (1 + K) × len(radii_vox) + the image features.
        intercept: (1 + K,) biases, same rows.
        regularization: inverse L2 strength it was fitted with (scikit-learn's ``C``).
        fitted_on: what it was fitted on (paths, counts), for provenance.
        image_radii_vox: image-feature ball radii in tomogram voxels (empty: none).
        feature_mean, feature_scale: (F,) standardisation, ``(x − mean) / scale``, applied
            before ``coef`` (default 0 and 1: none).
    """

    class_names: tuple[str, ...]
    radii_vox: tuple[float, ...]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]
    regularization: float = 0.1
    fitted_on: Mapping[str, Any] = field(default_factory=dict)
    image_radii_vox: tuple[float, ...] = ()
    feature_mean: NDArray[np.float64] | None = None
    feature_scale: NDArray[np.float64] | None = None

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.class_names)
        radii = tuple(float(r) for r in self.radii_vox)
        image_radii = tuple(float(r) for r in self.image_radii_vox)
        coef = np.asarray(self.coef, dtype=np.float64)
        intercept = np.asarray(self.intercept, dtype=np.float64).reshape(-1)
        rows = len(names) + 1
        if not names or not radii or any(not np.isfinite(r) or r < 0
                                         for r in radii + image_radii):
            raise ValueError(f"rescorer: needs classes and radii ≥ 0, got {names}, {radii}, "
                             f"image radii {image_radii}")
        if list(image_radii) != sorted(set(image_radii)):
            raise ValueError(f"rescorer: image radii must increase, got {image_radii}")
        n_features = rows * len(radii) + n_density_features(image_radii)
        if coef.shape != (rows, n_features) or intercept.shape != (rows,):
            raise ValueError(f"rescorer: coef must be ({rows}, {n_features}) and "
                             f"intercept ({rows},) for {len(names)} classes, {len(radii)} "
                             f"radii and {len(image_radii)} image radii, got {coef.shape} and "
                             f"{intercept.shape}")
        mean = np.zeros(n_features) if self.feature_mean is None else \
            np.asarray(self.feature_mean, dtype=np.float64).reshape(-1)
        scale = np.ones(n_features) if self.feature_scale is None else \
            np.asarray(self.feature_scale, dtype=np.float64).reshape(-1)
        if mean.shape != (n_features,) or scale.shape != (n_features,) or \
                not np.all(scale > 0):
            raise ValueError(f"rescorer: feature_mean and feature_scale must hold "
                             f"{n_features} numbers, the scales > 0")
        if not all(np.all(np.isfinite(a)) for a in (coef, intercept, mean, scale)):
            raise ValueError("rescorer: coef, intercept and the standardisation must be finite")
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "radii_vox", radii)
        object.__setattr__(self, "image_radii_vox", image_radii)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)
        object.__setattr__(self, "feature_mean", mean)
        object.__setattr__(self, "feature_scale", scale)
        object.__setattr__(self, "fitted_on", dict(self.fitted_on))

    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    @property
    def uses_image(self) -> bool:
        """Whether it needs the tomogram (image features), not only the maps."""
        return bool(self.image_radii_vox)

    def probabilities(self, features: NDArray[Any]) -> NDArray[np.float64]:
        """(n, 1 + K) probabilities: column 0 background, column k class k."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"rescorer: expected (n, {self.n_features}) features, got "
                             f"{x.shape}")
        logits = ((x - self.feature_mean) / self.feature_scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def rescore(self, features: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(class index into ``class_names``, score = 1 - P(background)) of each candidate."""
        p = self.probabilities(features)
        if not len(p):
            return np.zeros(0, np.int64), np.zeros(0)
        return np.argmax(p[:, 1:], axis=1).astype(np.int64), 1.0 - p[:, 0]

    def to_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "radii_vox": list(self.radii_vox),
                "image_radii_vox": list(self.image_radii_vox),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist(),
                "feature_mean": np.asarray(self.feature_mean).tolist(),
                "feature_scale": np.asarray(self.feature_scale).tolist(),
                "regularization": float(self.regularization),
                "fitted_on": dict(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateRescorer:
        """From :meth:`to_dict`; a dict without image radii or standardisation (a model saved
        before they existed) loads as a map-only rescorer without standardisation."""
        missing = [k for k in ("class_names", "radii_vox", "coef", "intercept") if k not in data]
        if missing:
            raise ValueError(f"rescorer: missing {', '.join(missing)}")
        optional = {k: np.asarray(data[k], dtype=np.float64)
                    for k in ("feature_mean", "feature_scale") if data.get(k) is not None}
        return cls(class_names=tuple(data["class_names"]), radii_vox=tuple(data["radii_vox"]),
                   coef=np.asarray(data["coef"], dtype=np.float64),
                   intercept=np.asarray(data["intercept"], dtype=np.float64),
                   regularization=float(data.get("regularization", 0.1)),
                   fitted_on=dict(data.get("fitted_on") or {}),
                   image_radii_vox=tuple(data.get("image_radii_vox") or ()), **optional)


def fit_rescorer(features: NDArray[Any], labels: Sequence[str], class_names: Sequence[str], *,
                 radii_vox: Sequence[float] = DEFAULT_RADII_VOX,
                 image_radii_vox: Sequence[float] = (), regularization: float = 0.1,
                 fitted_on: Mapping[str, Any] | None = None) -> CandidateRescorer:
    """Fit a :class:`CandidateRescorer` (scikit-learn's ``LogisticRegression``, L2, lbfgs) on
    the features standardised by their mean and σ. The fit runs to a tight tolerance
    (``tol=1e-8``): with scikit-learn's default the weights depended on the candidates' order
    by up to 0.008, enough to move a tuned class threshold by 0.04.

    Args:
        features: (n, F) features of validation candidates: :func:`neighbourhood_features`,
            then :func:`density_features` when ``image_radii_vox`` is not empty
            (``DetectionResult.features``).
        labels: (n,) what each candidate hit: a class of ``class_names`` or
            :data:`BACKGROUND`.
        class_names: the model's classes, in channel order.
        radii_vox: the radii the map features were computed with (tomogram voxels).
        image_radii_vox: the radii of the image features (empty: none).
        regularization: inverse L2 strength (``C``); 0.1 was best on the shipped model's
            validation and test tomograms, either way round (0.03–1 within 0.003 class F1).
        fitted_on: provenance stored with the rescorer.

    Raises:
        ValueError: shapes disagree, a label is not a class, or a class has fewer than
            :data:`MIN_EXAMPLES_PER_CLASS` candidates on its particles, or there is no
            background candidate (the message names the classes).
    """
    from sklearn.linear_model import LogisticRegression

    names = [str(n) for n in class_names]
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray([str(v) for v in labels], dtype=object)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"rescorer: {len(y)} labels for features of shape {x.shape}")
    expected = (len(names) + 1) * len(radii_vox) + n_density_features(image_radii_vox)
    if x.shape[1] != expected:
        raise ValueError(f"rescorer: {x.shape[1]} features, expected {expected}: (1 + "
                         f"{len(names)} classes) × {len(radii_vox)} radii + "
                         f"{n_density_features(image_radii_vox)} image features")
    rows = [BACKGROUND, *names]
    unknown = sorted(set(y.tolist()) - set(rows))
    if unknown:
        raise ValueError(f"rescorer: labels {unknown} are neither a class nor {BACKGROUND!r}")
    counts = {r: int(np.count_nonzero(y == r)) for r in rows}
    few = [r for r in names if counts[r] < MIN_EXAMPLES_PER_CLASS]
    if few or counts[BACKGROUND] == 0:
        short = few + ([BACKGROUND] if counts[BACKGROUND] == 0 else [])
        raise ValueError(f"rescorer: too few validation candidates of {', '.join(short)} "
                         f"(need {MIN_EXAMPLES_PER_CLASS} each; got "
                         + ", ".join(f"{r} {counts[r]}" for r in short) + ")")
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    model = LogisticRegression(C=float(regularization), max_iter=20000, tol=1e-8)
    model.fit((x - mean) / scale, y)
    order = [list(model.classes_).index(r) for r in rows]
    record = {"n_candidates": int(len(y)), "counts": counts, **dict(fitted_on or {})}
    return CandidateRescorer(class_names=tuple(names), radii_vox=tuple(radii_vox),
                             coef=model.coef_[order], intercept=model.intercept_[order],
                             regularization=float(regularization), fitted_on=record,
                             image_radii_vox=tuple(image_radii_vox), feature_mean=mean,
                             feature_scale=scale)


def candidate_labels(hit_particle: NDArray[Any], gt_class_names: Sequence[str],
                     class_names: Sequence[str]) -> list[str]:
    """What each candidate hit, from a score's ``hit_particle`` (0: nothing, i: particle i).

    A particle of a class outside ``class_names`` (e.g. a vesicle, fiducial) counts as
    :data:`BACKGROUND`: the model cannot name it."""
    wanted = {normalize_class_name(n): str(n) for n in class_names}
    gt = [wanted.get(normalize_class_name(str(n)), BACKGROUND) for n in gt_class_names]
    return [BACKGROUND if h <= 0 else gt[int(h) - 1] for h in np.asarray(hit_particle)]


@dataclass
class RescorerTuning:
    """What :func:`tune_rescorer` fitted.

    Attributes:
        rescorer: the fitted :class:`CandidateRescorer`.
        thresholds: {class: threshold on the rescored score} (mean over the volumes).
        per_volume: the thresholds tuned on each volume.
    """

    rescorer: CandidateRescorer
    thresholds: dict[str, float]
    per_volume: list[dict[str, float]]


def tune_rescorer(volumes: Sequence[tuple[Any, NDArray[Any], Any]], class_names: Sequence[str],
                  *, radii_vox: Sequence[float] = DEFAULT_RADII_VOX,
                  image_radii_vox: Sequence[float] = (), regularization: float = 0.1,
                  fitted_on: Mapping[str, Any] | None = None,
                  cancel: Any = None) -> RescorerTuning:
    """Fit a rescorer on validation candidates and tune per-class thresholds on its scores.

    Args:
        volumes: per validation volume ``(candidates, features, ground_truth)``: the
            candidates (a :class:`~napari_shrec.core.particles.ParticleList` from
            :func:`~napari_shrec.core.detect.detect` with a low ``min_score``, no class
            thresholds, in the ground truth's frame), their features
            (``DetectionResult.features`` at ``radii_vox`` and ``image_radii_vox``), and an
            object with
            ``particles``, ``occupancy_mask`` and ``class_table`` (e.g.
            :class:`~napari_shrec.io.dataset.ScoringGroundTruth`).
        class_names: the model's classes, in channel order.
        radii_vox, image_radii_vox, regularization, fitted_on: as in :func:`fit_rescorer`.
        cancel: a :class:`~napari_shrec.core.progress.CancelToken`.

    Raises:
        ValueError: as :func:`fit_rescorer` (too few examples of a class).
    """
    from .detect import mean_class_thresholds, tune_class_thresholds
    from .score import ScoreParams, score_submission

    if not volumes:
        raise ValueError("rescorer: no validation volume")
    all_features, all_labels = [], []
    for candidates, features, gt in volumes:
        if len(features) != len(candidates):
            raise ValueError(f"rescorer: {len(features)} feature rows for {len(candidates)} "
                             "candidates")
        result = score_submission(gt.particles, gt.occupancy_mask, candidates,
                                  ScoreParams(mode="native"), class_table=gt.class_table,
                                  submission_name="rescorer candidates", cancel=cancel)
        all_features.append(np.asarray(features))
        all_labels += candidate_labels(result.hit_particle, gt.particles.class_names,
                                       class_names)
    rescorer = fit_rescorer(np.concatenate(all_features), all_labels, class_names,
                            radii_vox=radii_vox, image_radii_vox=image_radii_vox,
                            regularization=regularization, fitted_on=fitted_on)
    per_volume = []
    for candidates, features, gt in volumes:
        labels, scores = rescorer.rescore(features)
        rescored = ParticleList.from_arrays(
            [rescorer.class_names[k] for k in labels],
            candidates.table[["x", "y", "z"]].to_numpy(), scores=scores,
            voxel_size_nm=candidates.voxel_size_nm)
        per_volume.append(tune_class_thresholds(
            rescored, gt.particles, gt.occupancy_mask, class_names,
            class_table=gt.class_table, floor=0.0, cancel=cancel))
    return RescorerTuning(rescorer=rescorer, thresholds=mean_class_thresholds(per_volume),
                          per_volume=per_volume)
