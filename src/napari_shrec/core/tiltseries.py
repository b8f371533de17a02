"""Tilt series of a grandmodel: rotation, ice, multislice, CTF and detector noise (spec §2).

Geometry. The sample is the grandmodel potential V(z, y, x) (volts, voxel size v nm) sitting in
an amorphous-ice slab of the grandmodel's thickness that extends without limit in x and y (built
analytically per tilt, so tilted views never show slab edges and no padded volume is stored).
The tilt axis is y through the volume centre (voxel ``n // 2`` on each axis). A tilt angle θ
rotates the sample actively about +y: x' = x cos θ + z sin θ, z' = −x sin θ + z cos θ (relative
to the centre); the beam runs along +z' and the detector pixel (y, x') with x' centred on the
volume's centre column. Projection i of ``projections.mrc`` is the image at ``tilt_angles_deg[i]``.

Per tilt:

1. Rotation. Each (z, x) plane (one per y) is rotated with a pre-filtered cubic B-spline
   (the B-spline coefficients are computed once for all tilts) onto a grid x' ∈ [0, nx) and z'
   spanning the tilted slab, and summed over slices of ``slice_thickness_nm`` (5 nm): the
   projected protein potential of each slice, in V·nm.
2. Ice. The ice potential (4.53 V, amorphous ice's mean inner potential) times the analytic path
   length of each ray through the slab inside each slice, minus solvent exclusion: where protein
   is, water is not, so each voxel loses ice potential in proportion to its protein fraction
   min(V / V_protein, 1), V_protein = 8.07 V being a protein's mean inner potential.
3. Noise of the sample, redrawn per tilt: structural noise (beam damage) of σ = 1.21 V per
   protein voxel and ice density variation of σ = 0.30 V per ice voxel, both white in 3D, added to
   each slice's projection with the variance of a sum over the voxels the ray crosses.
4. Multislice. A plane wave passes slice after slice: transmission exp(iσ_e P − σ_e a P), with
   σ_e the relativistic interaction constant and a = A/√(1−A²) the absorption ratio that gives
   amplitude contrast A; Fresnel propagation exp(−iπλΔz q²) over each slice (band-limited to
   2/3 of Nyquist against aliasing). Particles at different depths are thereby at different
   defocus: the defocus gradient through the ice comes from the propagation.
5. Objective lens. The exit wave is taken back to the slab's central plane and multiplied by
   exp(+iχ(q)) · exp(−(q / (f · q_Nyquist))²) with χ from the set defocus (underfocus > 0),
   spherical aberration and wavelength (:mod:`napari_shrec.core.em_physics`), f = 0.4 the
   envelope's fraction of Nyquist. The noise-free image is |ψ|² (the beam's intensity is 1).
6. Detector. ``noise="gaussian"``: white Gaussian noise whose variance makes the image-domain
   ratio var(noise-free image) / var(noise) equal ``IMAGE_SNR_PER_SNR × snr`` exactly per tilt.
   ``snr`` is on the SHREC'20 paper's scale (0.004 by default, as the paper states): the paper's
   number is not an image variance ratio (its released code scales the noise against the
   variance of a CTF-corrected density projection, in other units than its images), so the
   scale is calibrated: at ``IMAGE_SNR_PER_SNR`` = 75, snr 0.004 gives images whose template
   matching and detection results match the paper's Tables 3/4 (docs/simulation.md, "Noise and
   SNR"). ``measured_snr`` reports the measured image ratio divided by the same factor, on the
   scale of ``snr``.
   ``noise="dose"``: Poisson counts of ``dose_per_tilt_e_per_nm2`` × pixel area × intensity,
   divided back by the expected count so the image stays in units of the beam intensity.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .em_physics import (
    amplitude_contrast_ratio,
    aberration_phase,
    electron_wavelength_nm,
    interaction_constant,
    spatial_frequencies_sq,
)
from .devices import resolve_device
from .progress import CancelToken, ProgressCallback, ProgressReporter

__all__ = [
    "TiltSeriesParams",
    "TiltSeries",
    "simulate_tilt_series",
    "shrec_tilt_angles",
    "resolve_device",
    "DEVICES",
    "projected_potential_zero_tilt",
    "ICE_POTENTIAL_V",
    "PROTEIN_MEAN_INNER_POTENTIAL_V",
    "IMAGE_SNR_PER_SNR",
    "image_snr",
    "add_detector_noise",
]

ICE_POTENTIAL_V = 4.53
"""Mean inner potential of amorphous ice (V); SHREC'20's ice density 0.15 in molmap units."""
PROTEIN_MEAN_INNER_POTENTIAL_V = 8.07
"""Mean inner potential of protein (V): 9.76 V·nm³ per kDa over 1.21 nm³ per kDa, hydrogens
included (see :data:`napari_shrec.core.potential.PROTEIN_POTENTIAL_PER_KDA_V_NM3`)."""

IMAGE_SNR_PER_SNR = 75.0
"""Calibration of ``snr``: the per-tilt image variance ratio var(noise-free image) / var(noise)
that one unit of ``snr`` gives. SHREC'20's stated SNR 0.004 is thereby an image ratio of 0.3, the
noise level at which this simulator and matcher come nearest the paper's template-matching
results on a full-density tomogram (localisation F1 and the per-size-group class F1;
docs/simulation.md, "Noise and SNR")."""


def image_snr(snr: float) -> float:
    """The image-domain ratio var(noise-free image) / var(noise) of a paper-scale ``snr``."""
    return float(snr) * IMAGE_SNR_PER_SNR


def add_detector_noise(image: np.ndarray, snr: float, rng: np.random.Generator
                       ) -> tuple[np.ndarray, float]:
    """``image`` (float32, beam intensity units) plus white Gaussian noise at paper-scale
    ``snr``, and the SNR measured on the result on the same scale (image ratio / calibration).
    """
    signal_var = float(image.var(dtype=np.float64))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(
        math.sqrt(signal_var / image_snr(snr)))
    measured = signal_var / max(float(noise.var(dtype=np.float64)), 1e-30)
    return (image + noise).astype(np.float32), measured / IMAGE_SNR_PER_SNR


_PAD = 8  # zero padding (voxels) around each (z, x) plane before the B-spline prefilter
_LATERAL_PAD = 16  # ice-filled margin (pixels) around the detector field during multislice
NOISE_MODES = ("gaussian", "dose", "none")
DEVICES = ("auto", "cpu", "cuda", "torch-cpu")


def shrec_tilt_angles(start_deg: float = -60.0, stop_deg: float = 60.0,
                      step_deg: float = 3.0) -> tuple[float, ...]:
    """Tilt angles from ``start`` to ``stop`` inclusive in ``step`` (SHREC'20: −60:3:60, 41)."""
    count = int(round((stop_deg - start_deg) / step_deg)) + 1
    return tuple(float(start_deg + i * step_deg) for i in range(count))


@dataclass(frozen=True)
class TiltSeriesParams:
    """Microscope and sample parameters of a tilt series (SHREC'20 defaults; units in names).

    Attributes:
        tilt_angles_deg: tilt angles in degrees, in acquisition-file order.
        voltage_kv: accelerating voltage.
        defocus_um: defocus at the sample's central plane, underfocus positive.
        defocus_jitter_um: σ of a per-tilt Gaussian defocus error (0 = none).
        cs_mm: spherical aberration.
        amplitude_contrast: fraction A of amplitude contrast (0 ≤ A < 1).
        envelope_fraction_of_nyquist: Gaussian envelope exp(−(q / (f q_Nyquist))²); None = none.
        slice_thickness_nm: multislice slice thickness.
        ice_thickness_nm: ice slab thickness (default: the grandmodel's z extent).
        ice_potential_v, ice_variation_v: ice mean inner potential and its per-voxel σ.
        protein_potential_v: protein mean inner potential, for solvent exclusion.
        structural_noise_v: σ per protein voxel, redrawn per tilt (beam damage).
        support_threshold_v: a voxel counts as protein (for structural noise) at or above this.
        noise: "gaussian" (at ``snr``), "dose" (Poisson at ``dose_per_tilt_e_per_nm2``) or "none".
        snr: signal-to-noise ratio on the SHREC'20 paper's scale, for ``noise="gaussian"``:
            the image ratio var(noise-free image) / var(noise) per tilt is
            ``IMAGE_SNR_PER_SNR × snr`` (0.004 → 0.3; see :data:`IMAGE_SNR_PER_SNR`).
        dose_per_tilt_e_per_nm2: electrons per nm² per tilt, for ``noise="dose"``.
        seed: random seed (sample noise and detector noise).
        threads: worker threads (0 = all cores).
        device: "auto" (a CUDA GPU through PyTorch when there is one, else the CPU), "cpu"
            (numpy/scipy), "cuda" (PyTorch on the GPU; error without one) or "torch-cpu"
            (the PyTorch code on the CPU: for checking the GPU code without a GPU).
    """

    tilt_angles_deg: tuple[float, ...] = field(default_factory=shrec_tilt_angles)
    voltage_kv: float = 300.0
    defocus_um: float = 3.0
    defocus_jitter_um: float = 0.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.08
    envelope_fraction_of_nyquist: float | None = 0.4
    slice_thickness_nm: float = 5.0
    ice_thickness_nm: float | None = None
    ice_potential_v: float = ICE_POTENTIAL_V
    ice_variation_v: float = 0.30
    protein_potential_v: float = PROTEIN_MEAN_INNER_POTENTIAL_V
    structural_noise_v: float = 1.21
    support_threshold_v: float = 0.03
    noise: str = "gaussian"
    snr: float = 0.004
    dose_per_tilt_e_per_nm2: float = 300.0
    seed: int = 0
    threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        object.__setattr__(self, "tilt_angles_deg",
                           tuple(float(a) for a in self.tilt_angles_deg))
        if not self.tilt_angles_deg:
            raise ValueError("tilt_angles_deg must hold at least one angle")
        if any(abs(a) >= 90 for a in self.tilt_angles_deg):
            raise ValueError("tilt_angles_deg must lie strictly between −90 and 90")
        for name in ("voltage_kv", "slice_thickness_nm", "protein_potential_v"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("defocus_jitter_um", "cs_mm", "ice_potential_v", "ice_variation_v",
                     "structural_noise_v", "support_threshold_v", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        amplitude_contrast_ratio(self.amplitude_contrast)  # validates 0 ≤ A < 1
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {self.noise!r}")
        if self.noise == "gaussian" and not self.snr > 0:
            raise ValueError(f"snr must be > 0, got {self.snr}")
        if self.noise == "dose" and not self.dose_per_tilt_e_per_nm2 > 0:
            raise ValueError("dose_per_tilt_e_per_nm2 must be > 0")
        if self.ice_thickness_nm is not None and not self.ice_thickness_nm > 0:
            raise ValueError(f"ice_thickness_nm must be > 0, got {self.ice_thickness_nm}")
        if (self.envelope_fraction_of_nyquist is not None
                and not self.envelope_fraction_of_nyquist > 0):
            raise ValueError("envelope_fraction_of_nyquist must be > 0 or None")

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["tilt_angles_deg"] = list(self.tilt_angles_deg)
        return record


@dataclass
class TiltSeries:
    """A simulated tilt series.

    Attributes:
        projections: float32 (n_tilts, ny, nx), detector images with noise (beam intensity 1).
        projections_noisefree: the same without detector noise.
        tilt_angles_deg: angle of each projection.
        defocus_um: defocus used for each projection (with jitter).
        measured_snr: var(noise-free) / var(noise) of each projection divided by
            :data:`IMAGE_SNR_PER_SNR`, i.e. on the scale of ``snr`` (None for "none").
        pixel_size_nm: detector pixel size (the grandmodel's voxel size).
        params: the parameters.
        device: where it was computed ("cpu", "cuda" or "torch-cpu").
    """

    projections: np.ndarray
    projections_noisefree: np.ndarray
    tilt_angles_deg: tuple[float, ...]
    defocus_um: tuple[float, ...]
    measured_snr: tuple[float, ...] | None
    pixel_size_nm: float
    params: TiltSeriesParams
    device: str = "cpu"


def _n_threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


def _spline_coefficients(volume: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of each (z, x) plane, zero-padded by _PAD (float32)."""
    from scipy import ndimage

    padded = np.pad(np.asarray(volume, dtype=np.float32),
                    ((_PAD, _PAD), (0, 0), (_PAD, _PAD)))
    coefficients = ndimage.spline_filter1d(padded, order=3, axis=0, mode="mirror",
                                           output=np.float32)
    return ndimage.spline_filter1d(coefficients, order=3, axis=2, mode="mirror",
                                   output=np.float32)


@dataclass(frozen=True)
class _TiltGeometry:
    """Rotated grid of one tilt: z' spans ``n_slices`` slices of ``slice_vox`` voxels, enough
    for every ray's path through the ice slab; the grandmodel box lies within slices
    [box_start, box_stop), the only ones where protein is interpolated."""

    angle_rad: float
    n_slices: int
    slice_vox: int
    centre_zp: float  # z' index of the rotation centre in the rotated grid
    box_start: int
    box_stop: int
    matrix: np.ndarray  # (z', x') → (z, x) in the padded plane
    offset: np.ndarray  # for z' counted from the first row of slice box_start


def _tilt_geometry(angle_deg: float, shape_zyx: tuple[int, int, int], slice_vox: int,
                   ice_thickness_vox: float) -> _TiltGeometry:
    nz, _, nx = shape_zyx
    theta = math.radians(angle_deg)
    c, s = math.cos(theta), math.sin(theta)
    half_box = 0.5 * (nx * abs(s) + nz * c) + 2.0  # + interpolation support
    half_ice = (0.5 * ice_thickness_vox + 0.5 * nx * abs(s)) / c + 1.0
    half_slices = int(math.ceil(max(half_box, half_ice) / slice_vox))
    n_slices = 2 * half_slices
    centre_zp = float(half_slices * slice_vox)
    box_start = max(0, int(math.floor((centre_zp - half_box) / slice_vox)))
    box_stop = min(n_slices, int(math.ceil((centre_zp + half_box) / slice_vox)))
    # Sample (relative): x = x' c − z' s, z = x' s + z' c  →  (z, x) = M (z', x').
    matrix = np.array([[c, s], [-s, c]])
    centre_in = np.array([nz // 2 + _PAD, nx // 2], dtype=np.float64)
    centre_in[1] += _PAD
    centre_out = np.array([centre_zp - box_start * slice_vox, nx // 2], dtype=np.float64)
    offset = centre_in - matrix @ centre_out
    return _TiltGeometry(theta, n_slices, slice_vox, centre_zp, box_start, box_stop, matrix,
                         offset)


def _ice_path_lengths(geometry: _TiltGeometry, xr: np.ndarray, ice_thickness_vox: float
                      ) -> np.ndarray:
    """Path length (voxels) of each ray through the ice slab inside each slice:
    (n_slices, len(xr)), for rays at x' = ``xr`` relative to the centre column. The slab is
    |z − centre| ≤ T/2 in the sample, infinite in x and y."""
    c, s = math.cos(geometry.angle_rad), math.sin(geometry.angle_rad)
    # z = x' s + z' c within ±T/2  →  z' ∈ [(−T/2 − x' s)/c, (T/2 − x' s)/c] (relative).
    lo = (-ice_thickness_vox / 2 - xr * s) / c + geometry.centre_zp
    hi = (ice_thickness_vox / 2 - xr * s) / c + geometry.centre_zp
    # A voxel z' covers [z' − 0.5, z' + 0.5]; slice k covers voxels [k·d, (k+1)·d).
    edges = np.arange(geometry.n_slices + 1) * geometry.slice_vox - 0.5
    start = np.maximum(edges[:-1, None], lo[None, :])
    stop = np.minimum(edges[1:, None], hi[None, :])
    return np.clip(stop - start, 0.0, None).astype(np.float32)


def bspline_weights(t: Any) -> list[Any]:
    """Cubic B-spline weights of the taps at floor − 1 … floor + 2 for fractional part ``t``
    (numpy arrays or torch tensors)."""
    t2 = t * t
    t3 = t2 * t
    return [(1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6,
            t3 / 6]


def _rotation_taps(geometry: _TiltGeometry, rows: int, nx: int, nzc: int, nxc: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cubic B-spline taps of the rotated grid's (rows, nx) points in a (nzc, nxc) plane of
    coefficients: tap indices ``zi`` (rows, nx, 4) and ``xi`` (rows, nx, 4), clamped into the
    plane, and separable weights ``wz``, ``wx`` (rows, nx, 4) float32 that are 0 for taps
    outside the plane and (``wz``) for points outside it — scipy's
    ``affine_transform(order=3, mode="constant", cval=0, prefilter=False)``."""
    zp = np.arange(rows, dtype=np.float64)[:, None]
    xp = np.arange(nx, dtype=np.float64)[None, :]
    m = geometry.matrix
    z_in = m[0, 0] * zp + m[0, 1] * xp + geometry.offset[0]
    x_in = m[1, 0] * zp + m[1, 1] * xp + geometry.offset[1]
    inside = (z_in >= -0.5) & (z_in <= nzc - 0.5) & (x_in >= -0.5) & (x_in <= nxc - 0.5)
    out = []
    for coord, size, mask in ((z_in, nzc, inside), (x_in, nxc, None)):
        base = np.floor(coord)
        weights = np.stack(bspline_weights(coord - base), axis=-1)
        taps = base.astype(np.int64)[..., None] + np.arange(-1, 3)
        weights *= (taps >= 0) & (taps < size)
        if mask is not None:
            weights *= mask[..., None]
        out += [np.clip(taps, 0, size - 1).astype(np.int32), weights.astype(np.float32)]
    zi, wz, xi, wx = out
    return zi, xi, wz, wx


_ROTATE_KERNEL: Any = None


def _rotate_kernel() -> Any:
    """The numba kernel of :func:`_rotate_rows` (compiled once, cached on disk)."""
    global _ROTATE_KERNEL
    if _ROTATE_KERNEL is None:
        import numba

        @numba.njit(nogil=True, cache=True)
        def kernel(coef_zxy, y0, zi, xi, wz, wx, out):  # pragma: no cover - compiled
            n_y = out.shape[0]
            rows, nx = zi.shape[0], zi.shape[1]
            acc = np.empty(n_y, dtype=np.float32)
            for r in range(rows):
                for c in range(nx):
                    acc[:] = 0.0
                    for a in range(4):
                        wa = wz[r, c, a]
                        if wa == 0.0:
                            continue
                        za = zi[r, c, a]
                        for b in range(4):
                            w = wa * wx[r, c, b]
                            if w == 0.0:
                                continue
                            xb = xi[r, c, b]
                            for j in range(n_y):
                                acc[j] += w * coef_zxy[za, xb, y0 + j]
                    for j in range(n_y):
                        out[j, r, c] = acc[j]

        _ROTATE_KERNEL = kernel
    return _ROTATE_KERNEL


def _rotate_rows(coefficients_zxy: np.ndarray, y_start: int, taps: tuple[np.ndarray, ...],
                 out: np.ndarray) -> None:
    """``out[j]`` (rows, nx) = the coefficients' (z, x) plane at y = ``y_start + j``
    interpolated at the rotated grid's points (``taps`` from :func:`_rotation_taps`), for every
    j of ``out`` (n_y, rows, nx) float32; ``coefficients_zxy`` is (z, x, y), y contiguous, so
    the 16 taps of a point are read for all rows at once. Releases the GIL."""
    _rotate_kernel()(coefficients_zxy, y_start, *taps, out)


def _project_slices(coefficients: np.ndarray, geometry: _TiltGeometry, nx: int,
                    params: TiltSeriesParams, voxel_nm: float, ice_paths: np.ndarray,
                    rng_seed: np.random.SeedSequence, threads: int,
                    cancel: CancelToken | None) -> np.ndarray:
    """Projected potential (V·nm) of every slice, protein + ice + sample noise:
    float32 (n_slices, ny, nx). ``coefficients`` are (z, x, y) (see :func:`_rotate_rows`)."""
    nzc, nxc, ny = coefficients.shape
    d = geometry.slice_vox
    b0, b1 = geometry.box_start, geometry.box_stop
    out = np.empty((geometry.n_slices, ny, nx), dtype=np.float32)
    box_rows = (b1 - b0) * d
    ice_v = params.ice_potential_v
    chunks = [range(start, min(start + 16, ny)) for start in range(0, ny, 16)]
    seeds = rng_seed.spawn(len(chunks))
    taps = _rotation_taps(geometry, box_rows, nx, nzc, nxc)
    _rotate_kernel()  # made here, once, not by several pool threads at the same time

    def work(index: int) -> None:
        if cancel is not None and cancel.cancelled:
            return
        rng = np.random.default_rng(seeds[index])
        planes = np.empty((len(chunks[index]), box_rows, nx), dtype=np.float32)
        _rotate_rows(coefficients, chunks[index].start, taps, planes)
        for y, plane in zip(chunks[index], planes):
            protein = plane.reshape(b1 - b0, d, nx)
            fraction = np.minimum(np.clip(protein, 0.0, None) / params.protein_potential_v, 1.0)
            ice_voxels = ice_paths.copy()
            # Solvent exclusion: each voxel loses ice in proportion to its protein fraction.
            ice_voxels[b0:b1] = np.clip(ice_voxels[b0:b1] - fraction.sum(axis=1), 0.0, None)
            total = ice_v * ice_voxels
            total[b0:b1] += protein.sum(axis=1)
            if params.structural_noise_v > 0:
                count = (protein >= params.support_threshold_v).sum(axis=1)
                total[b0:b1] += params.structural_noise_v * np.sqrt(count) * \
                    rng.standard_normal(count.shape, dtype=np.float32)
            if params.ice_variation_v > 0:
                total += params.ice_variation_v * np.sqrt(ice_voxels) * rng.standard_normal(
                    ice_voxels.shape, dtype=np.float32)
            out[:, y, :] = total * voxel_nm

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(len(chunks))))
    if cancel is not None:
        cancel.raise_if_cancelled()
    return out


@dataclass(frozen=True)
class _MultisliceSetup:
    """Everything the multislice needs besides the slices, the same for every backend.

    The wave is computed on a field (ny, nx) wider than the detector by ``_LATERAL_PAD`` pixels
    on each side, filled with the ice's projected potential (``margin``: (n_slices, nx)), so
    that the FFT's periodic boundary does not join mismatched ice phases at the image edges
    (the slab is infinite; a tilted slice's ice varies along x'). The detector field sits at
    [y0:y0 + ny_fov, x0:x0 + nx_fov]."""

    ny: int
    nx: int
    y0: int
    x0: int
    margin: np.ndarray  # float32 (n_slices, nx), V·nm
    propagator: np.ndarray  # complex64 (ny, nx): Fresnel over one slice, band-limited
    phase_factor: complex  # transmission exp(phase_factor · P)
    transfer: np.ndarray  # complex64 (ny, nx): objective lens and envelope


def _multislice_setup(fov_yx: tuple[int, int], *, geometry: _TiltGeometry, voxel_nm: float,
                      params: TiltSeriesParams, defocus_nm: float,
                      ice_margin_vnm: np.ndarray) -> _MultisliceSetup:
    from scipy import fft

    ny_fov, nx_fov = fov_yx
    pad = _LATERAL_PAD
    ny, nx = fft.next_fast_len(ny_fov + 2 * pad), fft.next_fast_len(nx_fov + 2 * pad)
    y0, x0 = (ny - ny_fov) // 2, (nx - nx_fov) // 2
    margin = np.zeros((geometry.n_slices, nx), dtype=np.float32)
    margin[:, x0 - pad:x0 + nx_fov + pad] = ice_margin_vnm
    margin[:, :x0 - pad] = ice_margin_vnm[:, :1]
    margin[:, x0 + nx_fov + pad:] = ice_margin_vnm[:, -1:]

    wavelength = electron_wavelength_nm(params.voltage_kv)
    sigma = interaction_constant(params.voltage_kv)
    absorption = amplitude_contrast_ratio(params.amplitude_contrast)
    q_sq = spatial_frequencies_sq((ny, nx), voxel_nm)
    q_nyquist = 0.5 / voxel_nm
    band = q_sq <= (2.0 / 3.0 * q_nyquist) ** 2
    propagator = np.exp(-1j * math.pi * wavelength * params.slice_thickness_nm * q_sq) * band
    # After the last slice the wave is at the bottom of the stack; the set defocus refers to the
    # central plane (depth − centre above the bottom): the lens sees that much more underfocus.
    depth_nm = geometry.n_slices * geometry.slice_vox * voxel_nm
    below_centre_nm = depth_nm - geometry.centre_zp * voxel_nm
    chi = aberration_phase(q_sq, wavelength_nm=wavelength,
                           defocus_nm=defocus_nm + below_centre_nm, cs_nm=params.cs_mm * 1e6)
    transfer = np.exp(1j * chi)
    if params.envelope_fraction_of_nyquist is not None:
        transfer = transfer * np.exp(-q_sq / (params.envelope_fraction_of_nyquist
                                              * q_nyquist) ** 2)
    return _MultisliceSetup(ny, nx, y0, x0, margin, propagator.astype(np.complex64),
                            complex(-sigma * absorption, sigma), transfer.astype(np.complex64))


def _multislice_image(slices_vnm: np.ndarray, setup: _MultisliceSetup, threads: int
                      ) -> np.ndarray:
    """Noise-free image |ψ|² (float32, detector (ny, nx)) of a stack of slice projections
    (V·nm), on the CPU."""
    from scipy import fft

    _, ny_fov, nx_fov = slices_vnm.shape
    y0, x0 = setup.y0, setup.x0
    wave = np.ones((setup.ny, setup.nx), dtype=np.complex64)
    phase_factor = np.complex64(setup.phase_factor)
    field = np.empty((setup.ny, setup.nx), dtype=np.float32)
    for k in range(slices_vnm.shape[0]):
        field[:] = setup.margin[k][None, :]
        field[y0:y0 + ny_fov, x0:x0 + nx_fov] = slices_vnm[k]
        wave *= np.exp(phase_factor * field)
        wave = fft.ifft2(fft.fft2(wave, workers=threads) * setup.propagator, workers=threads)
    image_wave = fft.ifft2(fft.fft2(wave, workers=threads) * setup.transfer, workers=threads)
    image_wave = image_wave[y0:y0 + ny_fov, x0:x0 + nx_fov]
    return (image_wave.real ** 2 + image_wave.imag ** 2).astype(np.float32)


def _detector(image: np.ndarray, params: TiltSeriesParams, voxel_nm: float,
              rng: np.random.Generator) -> tuple[np.ndarray, float | None]:
    if params.noise == "none":
        return image.copy(), None
    if params.noise == "gaussian":
        return add_detector_noise(image, params.snr, rng)
    else:
        expected = params.dose_per_tilt_e_per_nm2 * voxel_nm ** 2
        counts = rng.poisson(np.clip(image, 0.0, None) * expected)
        noisy = (counts / expected).astype(np.float32)
        noise = noisy - image
    return noisy.astype(np.float32), float(image.var(dtype=np.float64)
                                           / max(float(noise.var(dtype=np.float64)), 1e-30)
                                           ) / IMAGE_SNR_PER_SNR


def simulate_tilt_series(
    potential: np.ndarray,
    voxel_size_nm: float,
    params: TiltSeriesParams = TiltSeriesParams(),
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> TiltSeries:
    """Simulate the tilt series of a sample potential.

    Args:
        potential: the grandmodel's noise-free potential, float (z, y, x), volts.
        voxel_size_nm: its (isotropic) voxel size; also the detector pixel size.
        params: microscope and sample parameters.
        progress, cancel: see :mod:`napari_shrec.core.progress` (one step per tilt).

    Returns:
        :class:`TiltSeries` with projections (n_tilts, ny, nx).
    """
    potential = np.asarray(potential)
    if potential.ndim != 3:
        raise ValueError(f"potential must be 3D (z, y, x), got shape {potential.shape}")
    if not voxel_size_nm > 0:
        raise ValueError(f"voxel_size_nm must be > 0, got {voxel_size_nm}")
    slice_vox = max(1, int(round(params.slice_thickness_nm / voxel_size_nm)))
    if not math.isclose(slice_vox * voxel_size_nm, params.slice_thickness_nm, rel_tol=1e-6):
        raise ValueError(f"slice_thickness_nm ({params.slice_thickness_nm}) must be a whole "
                         f"number of voxels ({voxel_size_nm} nm)")
    nz, ny, nx = potential.shape
    threads = _n_threads(params.threads)
    ice_thickness_vox = (params.ice_thickness_nm / voxel_size_nm
                         if params.ice_thickness_nm is not None else float(nz))
    reporter = ProgressReporter(len(params.tilt_angles_deg) + 1, progress, cancel)
    reporter.start("tilt series: B-spline coefficients")
    coefficients = _spline_coefficients(potential)
    reporter.advance("B-spline coefficients")

    device = resolve_device(params.device)
    torch_worker = None
    if device != "cpu":
        from .tiltseries_torch import TorchTiltWorker, torch_device

        torch_worker = TorchTiltWorker(coefficients, torch_device(device), params.seed)
    else:  # the numpy backend reads (z, x, y): see _rotate_rows
        coefficients = np.ascontiguousarray(coefficients.transpose(0, 2, 1))
    root = np.random.SeedSequence(params.seed)
    sample_seeds = root.spawn(len(params.tilt_angles_deg))
    detector_rng = np.random.default_rng(root.spawn(1)[0])
    defocus_rng = np.random.default_rng(np.random.SeedSequence([params.seed, 1]))
    n = len(params.tilt_angles_deg)
    noisefree = np.empty((n, ny, nx), dtype=np.float32)
    noisy = np.empty((n, ny, nx), dtype=np.float32)
    defoci: list[float] = []
    snrs: list[float] = []
    for index, angle in enumerate(params.tilt_angles_deg):
        geometry = _tilt_geometry(angle, (nz, ny, nx), slice_vox, ice_thickness_vox)
        columns = np.arange(-_LATERAL_PAD, nx + _LATERAL_PAD) - nx // 2
        ice_paths_wide = _ice_path_lengths(geometry, columns, ice_thickness_vox)
        ice_paths = ice_paths_wide[:, _LATERAL_PAD:_LATERAL_PAD + nx]
        defocus_um = params.defocus_um + (params.defocus_jitter_um * defocus_rng.standard_normal()
                                          if params.defocus_jitter_um > 0 else 0.0)
        defoci.append(float(defocus_um))
        setup = _multislice_setup(
            (ny, nx), geometry=geometry, voxel_nm=voxel_size_nm, params=params,
            defocus_nm=defocus_um * 1e3,
            ice_margin_vnm=params.ice_potential_v * ice_paths_wide * np.float32(voxel_size_nm))
        if torch_worker is not None:
            slices_t = torch_worker.project_slices(geometry, nx, params, voxel_size_nm,
                                                   ice_paths)
            noisefree[index] = torch_worker.multislice_image(slices_t, setup)
            del slices_t
        else:
            slices = _project_slices(coefficients, geometry, nx, params, voxel_size_nm,
                                     ice_paths, sample_seeds[index], threads, cancel)
            noisefree[index] = _multislice_image(slices, setup, threads)
            del slices
        noisy[index], snr = _detector(noisefree[index], params, voxel_size_nm, detector_rng)
        if snr is not None:
            snrs.append(snr)
        reporter.advance(f"tilt {angle:+.1f}°")
    return TiltSeries(
        projections=noisy, projections_noisefree=noisefree,
        tilt_angles_deg=params.tilt_angles_deg, defocus_um=tuple(defoci),
        measured_snr=tuple(snrs) if snrs else None, pixel_size_nm=float(voxel_size_nm),
        params=params, device=device)


def projected_potential_zero_tilt(potential: np.ndarray, voxel_size_nm: float) -> np.ndarray:
    """∫ V dz (V·nm) of a (z, y, x) volume: the first-order (weak-phase) reference image."""
    return np.asarray(potential, dtype=np.float64).sum(axis=0) * voxel_size_nm
