"""Offline surrogate shapes: a stand-in potential map for a class whose structure cannot be had.

A surrogate is a geometric body — a spheroid, optionally pierced by a coaxial channel like the
barrels of the proteasome, ClpB or TRiC — sized and shaped so that its shape mask (the same
threshold and measurements as real maps, :mod:`napari_shrec.core.shape_metrics`) has the class's
tabulated volume (within 5 %) and sphericity (within 0.05). Its potential is uniform inside the
body, anti-aliased at the boundary (each voxel holds its filled fraction, from 4³ sub-samples),
and scaled so that the integrated potential is that of a protein of the class's molecular weight
(:data:`~napari_shrec.core.potential.PROTEIN_POTENTIAL_PER_KDA_V_NM3`).

The construction is deterministic: the same class and voxel size always give the same array.
The symmetry axis is z. Surrogates are labelled as such in every output's provenance.

Shape path. One parameter t ∈ [0, 1] walks from a ball (t = 0) through ever more elongated
prolate spheroids (aspect up to 2.4 at t = 0.5) to spheroids of aspect 1.5 with a growing
channel (radius up to 70 % of the equatorial radius at t = 1); sphericity falls along the path.
A scan over t (refined around its best point) finds the target sphericity; for each t a secant
search on the overall scale finds the target volume. The fit is made at the voxel size of Table 1
(1 nm), where the targets are defined; the fitted body is then rendered at any voxel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .potential import PROTEIN_POTENTIAL_PER_KDA_V_NM3
from .shape_metrics import DEFAULT_MASK_THRESHOLD_V, ShapeMetrics, shape_metrics

__all__ = ["SurrogateShape", "SurrogateError", "fit_surrogate_shape", "render_surrogate",
           "surrogate_potential", "TABLE_VOXEL_SIZE_NM", "VOLUME_TOLERANCE",
           "SPHERICITY_TOLERANCE"]

TABLE_VOXEL_SIZE_NM = 1.0  # the voxel size at which paper Table 1's volumes were measured
VOLUME_TOLERANCE = 0.05  # relative
SPHERICITY_TOLERANCE = 0.05  # absolute
_SUBSAMPLES = 4


class SurrogateError(ValueError):
    """A class without the tabulated volume, sphericity and weight a surrogate needs."""


@dataclass(frozen=True)
class SurrogateShape:
    """Geometry of a surrogate (nm): equatorial radius, polar half-length, channel radius."""

    equatorial_radius_nm: float
    polar_half_length_nm: float
    channel_radius_nm: float
    path_parameter: float

    def to_dict(self) -> dict[str, float]:
        return {"equatorial_radius_nm": self.equatorial_radius_nm,
                "polar_half_length_nm": self.polar_half_length_nm,
                "channel_radius_nm": self.channel_radius_nm,
                "path_parameter": self.path_parameter}


def _path(t: float) -> tuple[float, float]:
    """(aspect c/a, channel fraction h) along the shape path."""
    if t <= 0.5:
        return 1.0 + 2.8 * t, 0.0
    u = (t - 0.5) / 0.5
    return 2.4 - 0.9 * u, 0.7 * u


def _shape_for(t: float, scale_nm: float) -> SurrogateShape:
    aspect, channel = _path(t)
    return SurrogateShape(scale_nm, scale_nm * aspect, scale_nm * channel, t)


def _fill_fraction(shape: SurrogateShape, voxel_size_nm: float) -> np.ndarray:
    """Fraction (0…1) of each voxel inside the body, on a cubic odd-edged grid (z, y, x)."""
    extent = max(shape.equatorial_radius_nm, shape.polar_half_length_nm)
    n = 2 * int(math.ceil(extent / voxel_size_nm + 1.0)) + 1
    sub = (np.arange(n * _SUBSAMPLES) + 0.5) / _SUBSAMPLES - n / 2.0  # voxel units, centred
    coords = sub * voxel_size_nm
    z = coords[:, None, None]
    y = coords[None, :, None]
    x = coords[None, None, :]
    radial2 = x ** 2 + y ** 2
    inside = (radial2 / shape.equatorial_radius_nm ** 2 + z ** 2 / shape.polar_half_length_nm ** 2
              <= 1.0)
    if shape.channel_radius_nm > 0:
        inside &= radial2 >= shape.channel_radius_nm ** 2
    s = _SUBSAMPLES
    return inside.reshape(n, s, n, s, n, s).mean(axis=(1, 3, 5))


def _potential(shape: SurrogateShape, voxel_size_nm: float, mass_kda: float) -> np.ndarray:
    fill = _fill_fraction(shape, voxel_size_nm)
    integral_target = PROTEIN_POTENTIAL_PER_KDA_V_NM3 * mass_kda
    return (fill * (integral_target / (fill.sum() * voxel_size_nm ** 3))).astype(np.float32)


def _measure(t: float, scale: float, voxel_size_nm: float, mass_kda: float,
             threshold_v: float) -> ShapeMetrics:
    potential = _potential(_shape_for(t, scale), voxel_size_nm, mass_kda)
    return shape_metrics(potential, voxel_size_nm, threshold_v)


def _fit_scale(t: float, volume_nm3: float, voxel_size_nm: float, mass_kda: float,
               threshold_v: float) -> tuple[float, ShapeMetrics]:
    """Scale (nm) whose mask volume matches ``volume_nm3``, by a few secant steps on the cube
    root of the volume (volume ∝ scale³ up to voxelisation)."""
    aspect, channel = _path(t)
    body = 4.0 / 3.0 * math.pi * aspect * (1.0 - channel ** 2) ** 1.5  # volume / scale³ (approx)
    scale = (volume_nm3 / body) ** (1.0 / 3.0)
    best: tuple[float, ShapeMetrics] | None = None
    for _ in range(8):
        metrics = _measure(t, scale, voxel_size_nm, mass_kda, threshold_v)
        error = metrics.volume_nm3 / volume_nm3 - 1.0
        if best is None or abs(error) < abs(best[1].volume_nm3 / volume_nm3 - 1.0):
            best = (scale, metrics)
        if abs(error) < VOLUME_TOLERANCE / 4:
            break
        scale *= (volume_nm3 / metrics.volume_nm3) ** (1.0 / 3.0)
    assert best is not None
    return best


def fit_surrogate_shape(
    *,
    volume_nm3: float,
    sphericity: float,
    mass_kda: float,
    fit_voxel_size_nm: float = TABLE_VOXEL_SIZE_NM,
    threshold_v: float = DEFAULT_MASK_THRESHOLD_V,
    name: str = "surrogate",
) -> tuple[SurrogateShape, ShapeMetrics]:
    """Body whose mask at ``fit_voxel_size_nm`` has the target volume and sphericity.

    Returns:
        ``(shape, metrics)``: the geometry and its measured statistics at the fitting voxel size.

    Raises:
        SurrogateError: a target that is missing or non-positive, or out of reach (the message
            gives what was reached).
    """
    for label, value in (("volume_nm3", volume_nm3), ("sphericity", sphericity),
                         ("mass_kda", mass_kda), ("fit_voxel_size_nm", fit_voxel_size_nm)):
        if value is None or not value > 0:
            raise SurrogateError(f"{name}: a surrogate needs a positive {label}, got {value}")
    candidates: list[tuple[float, ShapeMetrics, SurrogateShape]] = []

    def evaluate(t: float) -> None:
        scale, metrics = _fit_scale(t, volume_nm3, fit_voxel_size_nm, mass_kda, threshold_v)
        candidates.append((t, metrics, _shape_for(t, scale)))

    # Voxelisation makes the measured sphericity a ragged function of t: scan, then refine
    # around the best point of the scan.
    for t in np.linspace(0.0, 1.0, 21):
        evaluate(float(t))
    best_t = min(candidates, key=lambda item: abs(item[1].sphericity - sphericity))[0]
    for t in np.linspace(max(0.0, best_t - 0.05), min(1.0, best_t + 0.05), 11):
        evaluate(float(t))

    def badness(item: tuple[float, ShapeMetrics, SurrogateShape]) -> float:
        metrics = item[1]
        return (abs(metrics.volume_nm3 / volume_nm3 - 1.0) / VOLUME_TOLERANCE
                + abs(metrics.sphericity - sphericity) / SPHERICITY_TOLERANCE)

    _, metrics, shape = min(candidates, key=badness)
    if (abs(metrics.volume_nm3 / volume_nm3 - 1.0) > VOLUME_TOLERANCE
            or abs(metrics.sphericity - sphericity) > SPHERICITY_TOLERANCE):
        raise SurrogateError(
            f"{name}: no surrogate within tolerance at {fit_voxel_size_nm} nm voxels; best "
            f"reached volume {metrics.volume_nm3:.1f} nm³ (target {volume_nm3:.1f}) and "
            f"sphericity {metrics.sphericity:.3f} (target {sphericity:.3f})")
    return shape, metrics


def render_surrogate(shape: SurrogateShape, voxel_size_nm: float, mass_kda: float) -> np.ndarray:
    """Potential map (V, float32, (n, n, n), n odd, centred at n // 2) of a surrogate body."""
    if not voxel_size_nm > 0:
        raise ValueError(f"voxel_size_nm must be > 0, got {voxel_size_nm}")
    return _potential(shape, voxel_size_nm, mass_kda)


def surrogate_potential(
    *,
    volume_nm3: float,
    sphericity: float,
    mass_kda: float,
    voxel_size_nm: float,
    fit_voxel_size_nm: float = TABLE_VOXEL_SIZE_NM,
    threshold_v: float = DEFAULT_MASK_THRESHOLD_V,
    name: str = "surrogate",
) -> tuple[np.ndarray, ShapeMetrics, SurrogateShape]:
    """Fit a surrogate body at ``fit_voxel_size_nm`` and render it at ``voxel_size_nm``.

    The targets are defined at the voxel size of paper Table 1 (1 nm), so the body is fitted there
    and the same body is rendered at any other voxel size (its measured statistics then drift with
    the voxelisation, as a real protein's would).

    Returns:
        ``(potential, metrics, shape)``; ``metrics`` measured on the rendered map.
    """
    shape, _ = fit_surrogate_shape(volume_nm3=volume_nm3, sphericity=sphericity,
                                   mass_kda=mass_kda, fit_voxel_size_nm=fit_voxel_size_nm,
                                   threshold_v=threshold_v, name=name)
    potential = render_surrogate(shape, voxel_size_nm, mass_kda)
    return potential, shape_metrics(potential, voxel_size_nm, threshold_v), shape
