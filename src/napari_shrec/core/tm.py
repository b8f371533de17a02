"""Template matching: the fast local normalised cross-correlation (FLCF) of a tomogram with a
rotated template, maximised over a uniform set of rotations (paper §3.7, PyTom's method).

Conventions: arrays are (z, y, x); the template is a cube of odd edge ``n`` centred at ``n // 2``
(a :class:`~napari_shrec.core.structures.StructureMap` potential as it is); sizes are nm in
:class:`MatchParams` and voxels elsewhere; angles are ZXZ degrees, active
(:mod:`napari_shrec.core.rotations`): the template rotated by ``R`` is ``T_R(r) = T(R⁻¹ r)``
(r = (x, y, z) about the centre) — the orientation a particle list stores.

The score (Roseman 2003). With a mask ``M`` (weights in [0, 1], P = Σ M), the rotated template
normalised under the mask, ``T̃ = M (T_R − μ_T) / σ_T`` (μ_T, σ_T² the M-weighted mean and
variance of T_R), and the local M-weighted statistics of the volume V around each voxel x,

    μ_V(x) = Σ_k M(k) V(x + k) / P,     σ_V²(x) = Σ_k M(k) V(x + k)² / P − μ_V(x)²,

the score at x is

    CC(x) = Σ_k T̃(k) V(x + k) / (P σ_V(x))      ∈ [−1, 1]

— the Pearson correlation of template and volume under the mask (for a binary mask; weighted for
a soft one). The sums over k are FFT correlations: ``irfftn(conj(F[T̃]) · F[V])``; F[V] and F[V²]
are computed once. For a spherical mask (the default) σ_V does not depend on the rotation and is
computed once: one pruned forward FFT of the small template and one inverse FFT of the volume
per rotation. A given mask is rotated with the template (``rotate_mask``): two more inverse FFTs
per rotation.

Per rotation the template goes through: cubic B-spline rotation (pre-filtered coefficients, as
the simulator rotates particles), the missing-wedge filter (in the tomogram frame, at the
template's box size), normalisation under the mask. The CTF (``−CTF(|q|)``, zero from the first
zero on, :mod:`napari_shrec.core.tm_templates`) is applied once before rotation: it is radial.

Borders: the volume (mean subtracted) is zero-padded to a fast FFT size of at least
``size + n // 2`` per axis, so no correlation wraps around; near the border the local statistics
see the zeros. With ``slab_z`` only those slices are searched (the correlation reads ``n // 2``
slices of context on either side where the tomogram has them); the score map is 0 and the angle
index −1 elsewhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .progress import CancelToken, ProgressCallback, ProgressReporter
from .tm_angles import crowther_step_deg, uniform_angles
from .tm_backends import DEVICES, FlcfBackend, make_backend
from .tm_templates import (
    ctf_filter_rfft,
    ctf_first_zero_nm_inv,
    lowpass_filter_rfft,
    pad_or_crop_cube,
    spherical_mask,
    support_radius_vox,
    wedge_filter_rfft,
)

__all__ = [
    "MatchParams",
    "MatchResult",
    "PreparedTemplate",
    "prepare_template",
    "match_template",
    "angles_for",
]

#: cubic B-spline reach (voxels) kept empty around the mask in the template box
_SPLINE_MARGIN = 2


@dataclass(frozen=True)
class MatchParams:
    """How :func:`match_template` runs.

    Attributes:
        angular_step_deg: step of the uniform rotation set (degrees); None: the Crowther step
            ``resolution / diameter`` with the mask's diameter (:func:`angles_for`).
        resolution_nm: resolution d of the Crowther step; None: 1 / (first CTF zero) with the
            CTF on (2.46 nm at 3 µm, 300 kV), else 2 voxels.
        mask_radius_nm: radius of the spherical mask; None: the template's support radius
            (farthest voxel with ``|T| ≥ support_fraction · max|T|``) plus one voxel.
        mask_edge_sigma_nm: σ of the mask's Gaussian edge beyond the radius (paper: "spherical
            masks with Gaussian smoothed edges"); 0: a hard sphere.
        support_fraction: see ``mask_radius_nm``.
        ctf: modulate the template with ``−CTF(|q|)``, zero from the first zero on.
        defocus_um, voltage_kv, cs_mm, amplitude_contrast: the CTF (underfocus positive;
            SHREC'20: 3 µm, 300 kV, 2.7 mm, 0.08).
        tilt_range_deg: (min, max) tilt about y of the missing-wedge filter; None: no wedge.
        lowpass_nm: Gaussian low-pass of both the template and the tomogram,
            ``exp(−(q · lowpass_nm)²)`` (q in nm⁻¹; the simulator's envelope has this form with
            ``lowpass_nm`` = 1 / (0.4 · Nyquist) = 5 nm at 1 nm voxels); None: off, as the
            paper. Not in the paper's recipe: on noisy data (SNR 0.004) it lifts the true
            particles well above the background (docs/template_matching.md).
        invert_contrast: negate the template (data where protein is dark; this project's
            reconstructions have protein bright).
        interpolation_order: 3 (pre-filtered cubic B-spline, as the simulator) or 1 (trilinear).
        device: "auto" (CUDA through PyTorch when present, else CPU), "cpu" (numpy/scipy.fft),
            "cuda" or "torch-cpu" (the torch code on the CPU; for tests).
        threads: FFT threads on the CPU (0: every core).
    """

    angular_step_deg: float | None = None
    resolution_nm: float | None = None
    mask_radius_nm: float | None = None
    mask_edge_sigma_nm: float = 1.0
    support_fraction: float = 0.05
    ctf: bool = True
    defocus_um: float = 3.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.08
    tilt_range_deg: tuple[float, float] | None = (-60.0, 60.0)
    lowpass_nm: float | None = None
    invert_contrast: bool = False
    interpolation_order: int = 3
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        def number(name: str, low: float, high: float = math.inf, *, optional: bool = False,
                   strict: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}") \
                    from None
            ok = math.isfinite(value) and (low < value if strict else low <= value) \
                and value <= high
            if not ok:
                bound = f"({low}, {high}]" if strict else f"[{low}, {high}]"
                raise ValueError(f"{name} must be in {bound}, got {value!r}")
            object.__setattr__(self, name, value)

        number("angular_step_deg", 0.0, 180.0, optional=True, strict=True)
        number("resolution_nm", 0.0, optional=True, strict=True)
        number("mask_radius_nm", 0.0, optional=True, strict=True)
        number("mask_edge_sigma_nm", 0.0)
        number("support_fraction", 0.0, 1.0, strict=True)
        number("defocus_um", 0.0, strict=True)
        number("voltage_kv", 0.0, strict=True)
        number("cs_mm", 0.0)
        number("amplitude_contrast", 0.0, 0.999)
        number("lowpass_nm", 0.0, optional=True, strict=True)
        if self.tilt_range_deg is not None:
            try:
                lo, hi = (float(a) for a in self.tilt_range_deg)
            except (TypeError, ValueError):
                raise ValueError(f"tilt_range_deg must be (min, max) degrees or None, got "
                                 f"{self.tilt_range_deg!r}") from None
            if not (-90.0 <= lo < hi <= 90.0):
                raise ValueError(f"tilt_range_deg must satisfy -90 ≤ min < max ≤ 90, got "
                                 f"{self.tilt_range_deg!r}")
            object.__setattr__(self, "tilt_range_deg", (lo, hi))
        if self.interpolation_order not in (1, 3):
            raise ValueError(f"interpolation_order must be 1 or 3, got "
                             f"{self.interpolation_order!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, (int, np.integer)) \
                or self.threads < 0:
            raise ValueError(f"threads must be an integer ≥ 0, got {self.threads!r}")
        object.__setattr__(self, "threads", int(self.threads))
        object.__setattr__(self, "ctf", bool(self.ctf))
        object.__setattr__(self, "invert_contrast", bool(self.invert_contrast))

    def replace(self, **changes: Any) -> MatchParams:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.tilt_range_deg is not None:
            out["tilt_range_deg"] = list(self.tilt_range_deg)
        return out

    def crowther_resolution_nm(self, voxel_size_nm: float) -> float:
        """The resolution d of the Crowther step (see ``resolution_nm``), never below 2 voxels."""
        if self.resolution_nm is not None:
            return max(float(self.resolution_nm), 2.0 * voxel_size_nm)
        if self.ctf:
            q0 = ctf_first_zero_nm_inv(defocus_um=self.defocus_um, voltage_kv=self.voltage_kv,
                                       cs_mm=self.cs_mm,
                                       amplitude_contrast=self.amplitude_contrast,
                                       q_max_nm_inv=1.0 / (2.0 * voxel_size_nm))
            if math.isfinite(q0):
                return max(1.0 / q0, 2.0 * voxel_size_nm)
        return 2.0 * voxel_size_nm


@dataclass
class PreparedTemplate:
    """A template ready for matching (:func:`prepare_template`).

    Attributes:
        data: float32 (n, n, n) template, CTF-filtered and signed, unrotated; n odd.
        mask: float32 (n, n, n) mask weights in [0, 1].
        mask_radius_vox: radius of the (spherical) mask, or of a given mask's support.
        spherical: the mask is the built-in sphere (rotation-invariant).
        voxel_size_nm: the voxel size the template is sampled at.
    """

    data: NDArray[np.float32]
    mask: NDArray[np.float32]
    mask_radius_vox: float
    spherical: bool
    voxel_size_nm: float

    @property
    def edge(self) -> int:
        return int(self.data.shape[0])

    @property
    def diameter_nm(self) -> float:
        return 2.0 * self.mask_radius_vox * self.voxel_size_nm


@dataclass
class MatchResult:
    """What :func:`match_template` computed.

    Attributes:
        scores: float32 (Z, Y, X) maximum FLCF over the rotations; 0 outside ``slab_z``.
        angle_index: int32 (Z, Y, X) row of ``angles_zxz_deg`` that gave the maximum; −1 outside.
        angles_zxz_deg: (n, 3) rotations searched (ZXZ degrees, active).
        slab_z: (start, stop) z slices searched.
        angular_step_deg: step of the uniform set (None when angles were given).
        mask_radius_vox: mask radius (voxels).
        template_edge: edge of the template box (voxels).
        fft_shape: padded FFT grid (z, y, x).
        device: backend used ("cpu", "cuda", "torch-cpu").
        timings_s: "prepare" (template, volume FFT, local statistics), "angles" (the loop),
            "per_angle", "total".
        params: the parameters used.
    """

    scores: NDArray[np.float32]
    angle_index: NDArray[np.int32]
    angles_zxz_deg: NDArray[np.float64]
    slab_z: tuple[int, int]
    angular_step_deg: float | None
    mask_radius_vox: float
    template_edge: int
    fft_shape: tuple[int, int, int]
    device: str
    timings_s: dict[str, float]
    params: MatchParams
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_angles(self) -> int:
        return int(self.angles_zxz_deg.shape[0])

    def best_angles(self, coords_zyx: np.ndarray) -> NDArray[np.float64]:
        """(n, 3) ZXZ angles of the best rotation at voxel positions (n, 3) (z, y, x; rounded);
        zeros where no rotation was searched."""
        idx = np.rint(np.asarray(coords_zyx, dtype=np.float64).reshape(-1, 3)).astype(np.int64)
        idx = np.clip(idx, 0, np.array(self.angle_index.shape) - 1)
        rows = self.angle_index[idx[:, 0], idx[:, 1], idx[:, 2]]
        out = np.zeros((rows.size, 3))
        ok = rows >= 0
        out[ok] = self.angles_zxz_deg[rows[ok]]
        return out


# --------------------------------------------------------------------------- preparation
def _voxel_size(volume: Any, voxel_size_nm: float | None) -> float:
    if voxel_size_nm is not None:
        v = float(voxel_size_nm)
    elif hasattr(volume, "voxel_size_nm"):
        vs = np.broadcast_to(np.asarray(volume.voxel_size_nm, dtype=np.float64), (3,))
        if not np.allclose(vs, vs[0], rtol=1e-4):
            raise ValueError(f"template matching needs isotropic voxels, got (z, y, x) = "
                             f"{tuple(vs)} nm")
        v = float(vs[0])
    else:
        v = 1.0
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"voxel_size_nm must be > 0, got {voxel_size_nm!r}")
    return v


def prepare_template(template_zyx: np.ndarray, params: MatchParams, *,
                     voxel_size_nm: float = 1.0, mask: np.ndarray | None = None
                     ) -> PreparedTemplate:
    """CTF-filter, sign and box a template and build its mask.

    Args:
        template_zyx: cube of odd edge, centre at ``n // 2`` (e.g. a structure's potential).
        params: mask, CTF and contrast settings.
        voxel_size_nm: the template's (and the tomogram's) voxel size.
        mask: optional mask of the template's shape (weights in [0, 1]); default a sphere.

    Returns:
        a :class:`PreparedTemplate` whose box holds the mask plus the spline's reach.
    """
    t = np.asarray(template_zyx, dtype=np.float32)
    if t.ndim != 3 or len(set(t.shape)) != 1 or t.shape[0] % 2 != 1 or t.shape[0] < 3:
        raise ValueError(f"the template must be a cube of odd edge ≥ 3 (z, y, x), got shape "
                         f"{t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("the template contains NaN or infinite values")
    n0 = t.shape[0]
    v = float(voxel_size_nm)
    if mask is None:
        if params.mask_radius_nm is not None:
            radius = params.mask_radius_nm / v
        else:
            radius = support_radius_vox(t, params.support_fraction) + 1.0
        sigma = params.mask_edge_sigma_nm / v
        reach = radius + (3.0 * sigma if sigma > 0 else 0.0)
        edge = 2 * int(math.ceil(reach + _SPLINE_MARGIN)) + 1
        mask_box = spherical_mask(edge, radius, sigma)
        spherical = True
    else:
        m = np.asarray(mask, dtype=np.float32)
        if m.shape != t.shape:
            raise ValueError(f"mask shape {m.shape} differs from the template's {t.shape}")
        if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1 + 1e-6:
            raise ValueError("mask weights must be finite and in [0, 1]")
        radius = support_radius_vox(m, 1e-3)
        edge = max(n0, 2 * int(math.ceil(radius + _SPLINE_MARGIN)) + 1)
        mask_box = pad_or_crop_cube(np.clip(m, 0.0, 1.0), edge)
        spherical = False
    if mask_box.sum() <= 0:
        raise ValueError("the mask is empty")
    data = t
    if params.ctf or params.lowpass_nm is not None:
        from scipy import fft

        pad = max(8, edge // 2)
        big = pad_or_crop_cube(t, max(n0, edge) + 2 * pad)
        filt = np.ones((1, 1, 1), dtype=np.float32)
        if params.ctf:
            filt = ctf_filter_rfft(big.shape, v, defocus_um=params.defocus_um,
                                   voltage_kv=params.voltage_kv, cs_mm=params.cs_mm,
                                   amplitude_contrast=params.amplitude_contrast)
        if params.lowpass_nm is not None:
            filt = filt * lowpass_filter_rfft(big.shape, v, params.lowpass_nm)
        data = fft.irfftn(fft.rfftn(big) * filt, s=big.shape).astype(np.float32)
    if params.invert_contrast:
        data = -data
    box = pad_or_crop_cube(np.asarray(data, dtype=np.float32), edge)
    inside = box[mask_box > 0]
    if inside.size < 2 or float(np.ptp(inside)) <= 0:
        raise ValueError("the template is constant under its mask; nothing to match")
    return PreparedTemplate(box, mask_box.astype(np.float32), float(radius), spherical, v)


def angles_for(prepared: PreparedTemplate, params: MatchParams
               ) -> tuple[NDArray[np.float64], float]:
    """The rotation set and its step: ``params.angular_step_deg``, else the Crowther step of
    the mask's diameter at ``params.crowther_resolution_nm``."""
    step = params.angular_step_deg
    if step is None:
        step = crowther_step_deg(max(prepared.diameter_nm, prepared.voxel_size_nm),
                                 params.crowther_resolution_nm(prepared.voxel_size_nm))
    return uniform_angles(step), float(step)


def _matrix_zyx(angles_deg: np.ndarray) -> NDArray[np.float64]:
    """(n, 3, 3) ``affine_transform`` matrices (z, y, x order) of the active rotations: the
    output voxel o reads the input at c + M (o − c), M = R⁻¹ with both axes reversed."""
    from .rotations import zxz_to_matrix

    rot = zxz_to_matrix(np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3))
    return np.ascontiguousarray(np.transpose(rot, (0, 2, 1))[:, ::-1, ::-1])


# --------------------------------------------------------------------------- matching
def match_template(
    volume_zyx: Any,
    template_zyx: np.ndarray,
    params: MatchParams = MatchParams(),
    *,
    mask: np.ndarray | None = None,
    rotate_mask: bool | None = None,
    angles_zxz_deg: np.ndarray | Sequence[Sequence[float]] | None = None,
    voxel_size_nm: float | None = None,
    slab_z: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MatchResult:
    """Match one template over a tomogram (module docstring).

    Args:
        volume_zyx: (Z, Y, X) tomogram: an array or a :class:`~napari_shrec.core.volume.Volume`
            (its voxel size is used unless ``voxel_size_nm`` is given).
        template_zyx: cube of odd edge, centre ``n // 2``, same voxel size (e.g.
            ``StructureMap.potential``); raw: CTF, sign and wedge follow ``params``.
        params: :class:`MatchParams`.
        mask: optional mask of the template's shape (weights in [0, 1]); default: a sphere
            (``params.mask_radius_nm``, ``params.mask_edge_sigma_nm``).
        rotate_mask: rotate the mask with the template and recompute the local statistics per
            rotation; default: False for the built-in sphere, True for a given mask.
        angles_zxz_deg: (n, 3) rotations to search (ZXZ degrees); default: the uniform set of
            :func:`angles_for`.
        voxel_size_nm: voxel size (nm) of volume and template (default: the Volume's, else 1).
        slab_z: (start, stop) z slices to search; default all.
        progress: ``progress(done, total, message)`` over the rotations.
        cancel: checked at every rotation.

    Returns:
        :class:`MatchResult` with full-size (Z, Y, X) maps.
    """
    from scipy import fft

    t_start = time.perf_counter()
    data = volume_zyx.data if hasattr(volume_zyx, "data") and not isinstance(
        volume_zyx, np.ndarray) else volume_zyx
    data = np.asarray(data)
    if data.ndim != 3 or min(data.shape) < 1:
        raise ValueError(f"the tomogram must be a 3D (z, y, x) array, got shape {data.shape}")
    voxel = _voxel_size(volume_zyx, voxel_size_nm)
    nz = data.shape[0]
    z0, z1 = (0, nz) if slab_z is None else (int(slab_z[0]), int(slab_z[1]))
    if not 0 <= z0 < z1 <= nz:
        raise ValueError(f"slab_z {slab_z} is not inside the tomogram's {nz} z slices")
    prepared = prepare_template(template_zyx, params, voxel_size_nm=voxel, mask=mask)
    if rotate_mask is None:
        rotate_mask = not prepared.spherical
    if angles_zxz_deg is None:
        angles, step = angles_for(prepared, params)
    else:
        angles = np.asarray(angles_zxz_deg, dtype=np.float64).reshape(-1, 3)
        step = None
        if angles.shape[0] == 0:
            raise ValueError("angles_zxz_deg is empty")
    n_angles = angles.shape[0]
    reporter = ProgressReporter(n_angles, progress, cancel)
    reporter.start(f"template matching: {n_angles} rotations")
    backend = make_backend(params.device, params.threads)

    # region read: the slab plus the template's half edge of context
    h = prepared.edge // 2
    r0, r1 = max(0, z0 - h), min(nz, z1 + h)
    sub = np.asarray(data[r0:r1], dtype=np.float32)
    if not np.isfinite(sub).all():
        raise ValueError("the tomogram contains NaN or infinite values in the searched region")
    sub = sub - np.float32(sub.mean(dtype=np.float64))
    fft_shape = tuple(int(fft.next_fast_len(s + h, real=True)) for s in sub.shape)
    rows = (z0 - r0, z1 - r0, 0, data.shape[1], 0, data.shape[2])
    padded = np.zeros(fft_shape, dtype=np.float32)
    padded[:sub.shape[0], :sub.shape[1], :sub.shape[2]] = sub
    variance_floor = 1e-6 * float(np.var(sub, dtype=np.float64)) + 1e-30
    del sub

    if params.lowpass_nm is not None:
        spectrum = fft.rfftn(padded, workers=-1)
        spectrum *= lowpass_filter_rfft(fft_shape, voxel, params.lowpass_nm)
        padded = fft.irfftn(spectrum, s=fft_shape, workers=-1).astype(np.float32)
        del spectrum
    vol = backend.put(padded)
    volume_spectrum = backend.rfftn(vol)
    volume_sq_spectrum = backend.rfftn(vol * vol)
    del vol, padded

    coefficients = prepared.data
    if params.interpolation_order == 3:
        from scipy import ndimage

        coefficients = ndimage.spline_filter(prepared.data, order=3, output=np.float32)
    coefficients_dev = backend.put(np.ascontiguousarray(coefficients, dtype=np.float32))
    mask_dev = backend.put(prepared.mask)
    wedge_dev = None
    if params.tilt_range_deg is not None:
        wedge_dev = backend.put(wedge_filter_rfft((prepared.edge,) * 3, params.tilt_range_deg))

    def correlate(box: Any, spectrum: Any) -> Any:
        return backend.correlate(backend.correlation_spectrum(box, fft_shape), spectrum,
                                 fft_shape, rows)

    def inverse_denominator(m: Any) -> tuple[Any, Any]:
        p = m.sum()
        s1 = correlate(m, volume_spectrum)
        s2 = correlate(m, volume_sq_spectrum)
        mean = s1 / p
        var = s2 / p - mean * mean
        return _inverse_std(backend, var, p, variance_floor), p

    fixed_inv, fixed_p = (None, None) if rotate_mask else inverse_denominator(mask_dev)
    if not rotate_mask:
        del volume_sq_spectrum  # only the per-rotation statistics need it
    out_shape = (z1 - z0, data.shape[1], data.shape[2])
    best = backend.put(np.full(out_shape, -np.inf, dtype=np.float32))
    best_index = backend.put(np.full(out_shape, -1, dtype=np.int32))
    matrices = _matrix_zyx(angles)
    backend.synchronize()
    t_loop = time.perf_counter()
    report_every = max(1, n_angles // 200)
    reported = 0
    for i in range(n_angles):
        if cancel is not None:
            cancel.raise_if_cancelled()
        t = backend.rotate(coefficients_dev, matrices[i], params.interpolation_order)
        if wedge_dev is not None:
            t = backend.filter_box(t, wedge_dev)
        if rotate_mask:
            m = backend.rotate(mask_dev, matrices[i], 1).clip(0.0, 1.0)
            inv, p = inverse_denominator(m)
        else:
            m, inv, p = mask_dev, fixed_inv, fixed_p
        mean = (m * t).sum() / p
        centred = t - mean
        var = (m * centred * centred).sum() / p
        normalised = m * centred / (var ** 0.5 + 1e-30)
        backend.update_max_scaled(best, best_index, correlate(normalised, volume_spectrum), inv,
                                  i)
        if (i + 1) % report_every == 0 or i + 1 == n_angles:
            reporter.advance(f"rotation {i + 1}/{n_angles}", steps=i + 1 - reported)
            reported = i + 1
    backend.synchronize()
    t_end_loop = time.perf_counter()

    scores = np.zeros(data.shape, dtype=np.float32)
    angle_index = np.full(data.shape, -1, dtype=np.int32)
    scores[z0:z1] = backend.get(best)
    angle_index[z0:z1] = backend.get(best_index)
    t_end = time.perf_counter()
    timings = {"prepare": t_loop - t_start, "angles": t_end_loop - t_loop,
               "per_angle": (t_end_loop - t_loop) / n_angles, "total": t_end - t_start}
    return MatchResult(
        scores=scores, angle_index=angle_index, angles_zxz_deg=angles, slab_z=(z0, z1),
        angular_step_deg=step, mask_radius_vox=prepared.mask_radius_vox,
        template_edge=prepared.edge, fft_shape=fft_shape, device=backend.name,
        timings_s=timings, params=params,
        metadata={"rotate_mask": bool(rotate_mask), "voxel_size_nm": voxel,
                  "mask_sum": float(prepared.mask.sum())})


def _inverse_std(backend: FlcfBackend, var: Any, p: Any, floor: float) -> Any:
    """``1 / (P σ_V)`` where the local variance exceeds ``floor``, else 0."""
    if isinstance(var, np.ndarray):
        out = np.zeros_like(var)
        ok = var > floor
        out[ok] = 1.0 / (float(p) * np.sqrt(var[ok]))
        return out
    torch = backend.torch  # type: ignore[attr-defined]
    ok = var > floor
    safe = torch.where(ok, var, torch.ones_like(var))
    return torch.where(ok, 1.0 / (p * safe.sqrt()), torch.zeros_like(var))
