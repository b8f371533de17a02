"""Weighted back-projection (WBP) of a single-axis tilt series, in the simulator's frame.

Conventions (the same as :mod:`napari_shrec.core.tiltseries`, so a reconstruction lies on the
grandmodel by construction):

- projections are (tilt, y, x') arrays; the tilt axis is y; detector column ``nx_det // 2`` is the
  axis;
- the output volume is (z, y, x) with ``x`` spanning the detector width (same pixel size) and
  ``thickness`` slices in z; the tilt axis sits at ``axis_z`` (default ``thickness // 2``);
- voxel (z, y, x) projects at tilt θ onto x' = nx_det//2 + (x − nx//2) cos θ + (z − axis_z) sin θ.

The grandmodel of a simulation with nz slices lies in the reconstruction at
``z_rec = z + axis_z − nz // 2``: with ``thickness = nz`` (the ``native`` frame) that is the identity;
SHREC'20's 512³ reconstructions of 200-slice samples have ``axis_z = 256``, i.e. the slab at
z 156…355.

Each projection is first turned into contrast, −(I − Ī)/Ī with Ī its mean, so that protein is
positive as in the grandmodel (projections are dark where protein is, at the low frequencies that
dominate an underfocused image), optionally CTF-corrected by phase flipping, then filtered along x'
with the chosen weighting and back-projected with linear interpolation, each tilt weighted by its
angular interval (radians) so uneven tilt schemes are integrated correctly.

Weightings (q in cycles per pixel):

- ``ramp`` (SHREC'20's): min(|q|, q_c) with q_c the Crowther frequency N / (π D), N the number of
  tilts and D the object diameter in pixels (default: the reconstruction's thickness). Beyond q_c
  neighbouring projections no longer overlap in Fourier space, so the weight stays flat.
- ``imod``: |q| up to a cut-off, then a Gaussian fall-off (IMOD ``tilt``'s RADIAL cut-off 0.35,
  fall-off σ 0.05 cycles/pixel by default).
- ``sirt``: the SIRT-like filter, |q| (1 − (1 − 1/(n |q|))^k), which makes one back-projection
  look like k iterations of SIRT started from zero (low frequencies converged, high ones damped).
- ``none``: plain back-projection.

Backends: ``cpu`` is a compiled (numba) kernel parallel over z on every core, with a pure-numpy
fallback when numba is not installed; ``cuda`` / ``torch-cpu`` run the same interpolation with
PyTorch; ``auto`` takes a CUDA GPU when PyTorch sees one.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .devices import resolve_device
from .progress import CancelToken, ProgressCallback, ProgressReporter

__all__ = [
    "WEIGHTINGS",
    "ReconstructionParams",
    "weighting_filter",
    "tilt_weights_rad",
    "prepare_projections",
    "backproject",
    "reconstruct",
]

WEIGHTINGS = ("ramp", "imod", "sirt", "none")
DEVICES = ("auto", "cpu", "numpy", "cuda", "torch-cpu")


@dataclass(frozen=True)
class ReconstructionParams:
    """How to reconstruct.

    Attributes:
        thickness: number of z slices of the output (None: the detector width).
        axis_z: z index of the tilt axis in the output (None: thickness // 2).
        weighting: "ramp", "imod", "sirt" or "none" (see the module docstring).
        object_diameter_px: D of the Crowther frequency for "ramp" (None: the thickness).
        imod_cutoff, imod_falloff: cut-off and Gaussian σ (cycles/pixel) for "imod".
        sirt_iterations: k for "sirt".
        ctf_correction: phase-flip each projection with the CTF of its defocus.
        voltage_kv, cs_mm, amplitude_contrast: microscope, for the CTF correction.
        invert_tilt_angles: negate every tilt angle (data with the opposite tilt sign).
        device: "auto", "cpu" (numba, parallel), "numpy" (reference, slow), "cuda",
            "torch-cpu".
        threads: CPU threads for the filtering FFTs (0 = all cores).
    """

    thickness: int | None = None
    axis_z: float | None = None
    weighting: str = "ramp"
    object_diameter_px: float | None = None
    imod_cutoff: float = 0.35
    imod_falloff: float = 0.05
    sirt_iterations: int = 10
    ctf_correction: bool = False
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.08
    invert_tilt_angles: bool = False
    device: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.thickness is not None and self.thickness < 1:
            raise ValueError(f"thickness must be ≥ 1, got {self.thickness}")
        if self.sirt_iterations < 1:
            raise ValueError(f"sirt_iterations must be ≥ 1, got {self.sirt_iterations}")
        if not 0 < self.imod_cutoff <= 0.5 or self.imod_falloff <= 0:
            raise ValueError("imod_cutoff must be in (0, 0.5] and imod_falloff > 0")
        if self.object_diameter_px is not None and self.object_diameter_px <= 0:
            raise ValueError("object_diameter_px must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tilt_weights_rad(angles_deg: np.ndarray) -> np.ndarray:
    """Angular interval (radians) each tilt stands for: half the gaps to its neighbours (in
    angle order), the end tilts a full half gap on their open side. A single tilt gets 1."""
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.size == 1:
        return np.ones(1)
    order = np.argsort(angles)
    sorted_rad = np.deg2rad(angles[order])
    gaps = np.diff(sorted_rad)
    weights_sorted = np.empty_like(sorted_rad)
    weights_sorted[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    weights_sorted[0] = gaps[0]
    weights_sorted[-1] = gaps[-1]
    weights = np.empty_like(weights_sorted)
    weights[order] = weights_sorted
    return weights


def weighting_filter(n_padded: int, n_tilts: int, params: ReconstructionParams,
                     object_diameter_px: float, object_width_px: int) -> np.ndarray:
    """The 1D weighting h(q) on ``numpy.fft.rfftfreq(n_padded)`` (q in cycles/pixel)."""
    q = np.fft.rfftfreq(n_padded)
    if params.weighting == "none":
        return np.ones_like(q)
    if params.weighting == "ramp":
        crowther = n_tilts / (math.pi * object_diameter_px)
        return np.minimum(q, crowther)
    if params.weighting == "imod":
        h = q.copy()
        beyond = q > params.imod_cutoff
        h[beyond] = q[beyond] * np.exp(-((q[beyond] - params.imod_cutoff) ** 2)
                                       / (2 * params.imod_falloff ** 2))
        return h
    # SIRT-like: |q| (1 − (1 − 1/(n|q|))^k) for |q| ≥ 1/n; 0 at q = 0.
    n = float(object_width_px)
    h = np.zeros_like(q)
    positive = q >= 1.0 / n
    h[positive] = q[positive] * (1 - (1 - 1 / (n * q[positive])) ** params.sirt_iterations)
    return h


def _n_threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


def prepare_projections(projections: np.ndarray, angles_deg: np.ndarray,
                        params: ReconstructionParams, *, pixel_size_nm: float,
                        object_diameter_px: float, object_width_px: int,
                        defocus_um: np.ndarray | None = None) -> np.ndarray:
    """Contrast, optional CTF phase flip, weighting and angular-interval scaling:
    float32 (tilt, y, x') ready for :func:`backproject`."""
    from scipy import fft

    n_tilts, ny, nx_det = projections.shape
    workers = _n_threads(params.threads)
    stack = np.empty((n_tilts, ny, nx_det), dtype=np.float32)
    for t in range(n_tilts):
        image = np.asarray(projections[t], dtype=np.float64)
        mean = image.mean()
        stack[t] = -(image - mean) / mean if mean != 0 else -(image - mean)
    if params.ctf_correction:
        if defocus_um is None:
            raise ValueError("ctf_correction needs the defocus of each tilt (defocus_um)")
        from .em_physics import electron_wavelength_nm, linear_ctf, spatial_frequencies_sq

        q_sq = spatial_frequencies_sq((ny, nx_det), pixel_size_nm)
        wavelength = electron_wavelength_nm(params.voltage_kv)
        for t in range(n_tilts):
            ctf = linear_ctf(q_sq, wavelength_nm=wavelength, defocus_nm=defocus_um[t] * 1e3,
                             cs_nm=params.cs_mm * 1e6,
                             amplitude_contrast=params.amplitude_contrast)
            # The contrast image is −(I − Ī)/Ī, the CTF's sign flipped once more: multiply by
            # −sign(CTF) so a positive potential stays positive in every CTF lobe.
            spectrum = fft.fft2(stack[t], workers=workers)
            stack[t] = fft.ifft2(spectrum * -np.sign(ctf), workers=workers).real
    n_padded = fft.next_fast_len(2 * nx_det)
    h = weighting_filter(n_padded, n_tilts, params, object_diameter_px, object_width_px)
    scale = tilt_weights_rad(angles_deg).astype(np.float32)
    spectrum = fft.rfft(stack, n=n_padded, axis=2, workers=workers)
    spectrum *= h[None, None, :]
    filtered = fft.irfft(spectrum, n=n_padded, axis=2, workers=workers)[:, :, :nx_det]
    return (filtered * scale[:, None, None]).astype(np.float32)


# --------------------------------------------------------------------------- back-projection
def _backproject_numpy(filtered: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray,
                       out: np.ndarray, axis_z: float, cancel: CancelToken | None) -> None:
    n_tilts, ny, nx_det = filtered.shape
    nz, _, nx = out.shape
    x = np.arange(nx, dtype=np.float64) - nx // 2
    for z in range(nz):
        if cancel is not None:
            cancel.raise_if_cancelled()
        dz = z - axis_z
        for t in range(n_tilts):
            xp = nx_det // 2 + x * cos_t[t] + dz * sin_t[t]
            i0 = np.floor(xp).astype(np.int64)
            w = (xp - i0).astype(np.float32)
            ok = (i0 >= 0) & (i0 < nx_det - 1)
            if not ok.any():
                continue
            row = filtered[t]
            out[z][:, ok] += row[:, i0[ok]] * (1 - w[ok]) + row[:, i0[ok] + 1] * w[ok]


_NUMBA_KERNEL: Any = None
# numba's default (workqueue) threading layer must not run two parallel kernels at once: two
# widgets reconstructing in their own threads would abort the process. One kernel at a time.
_KERNEL_LOCK = threading.Lock()


def _numba_kernel() -> Any:
    """The compiled kernel, or None without numba (compiled once, cached on disk)."""
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is not None:
        return _NUMBA_KERNEL
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def kernel(filtered, cos_t, sin_t, out, axis_z, z_start, z_stop):  # pragma: no cover - jit
        n_tilts, ny, nx_det = filtered.shape
        nx = out.shape[2]
        half_det = nx_det // 2
        half_x = nx // 2
        for zi in numba.prange(z_stop - z_start):
            z = z_start + zi
            dz = z - axis_z
            for t in range(n_tilts):
                c = cos_t[t]
                s = sin_t[t]
                base = half_det - half_x * c + dz * s  # x' of voxel x = 0
                # Voxels whose x' lies in [0, nx_det − 1): c > 0 for |θ| < 90°.
                x_lo = int(math.ceil((0.0 - base) / c))
                x_hi = int(math.floor((nx_det - 1 - 1e-9 - base) / c))
                if x_lo < 0:
                    x_lo = 0
                if x_hi > nx - 1:
                    x_hi = nx - 1
                if x_hi < x_lo:
                    continue
                # The interpolation positions depend on (z, t, x) only: compute them once for
                # all y rows.
                width = x_hi - x_lo + 1
                index = np.empty(width, dtype=np.int64)
                weight = np.empty(width, dtype=np.float32)
                for k in range(width):
                    xp = base + (x_lo + k) * c
                    i0 = int(xp)
                    index[k] = i0
                    weight[k] = xp - i0
                for y in range(ny):
                    row = filtered[t, y]
                    dest = out[z, y]
                    for k in range(width):
                        i0 = index[k]
                        w = weight[k]
                        dest[x_lo + k] += row[i0] + w * (row[i0 + 1] - row[i0])

    _NUMBA_KERNEL = kernel
    return kernel


def _backproject_torch(filtered: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray,
                       out: np.ndarray, axis_z: float, device: Any,
                       reporter: ProgressReporter, block: int) -> None:
    import torch

    n_tilts, ny, nx_det = filtered.shape
    nz, _, nx = out.shape
    f = torch.from_numpy(filtered).to(device)  # (t, y, x')
    x = torch.arange(nx, device=device, dtype=torch.float64) - nx // 2
    for z0 in range(0, nz, block):
        z1 = min(nz, z0 + block)
        dz = torch.arange(z0, z1, device=device, dtype=torch.float64) - axis_z
        acc = torch.zeros((z1 - z0, ny, nx), dtype=torch.float32, device=device)
        for t in range(n_tilts):
            xp = nx_det // 2 + x[None, :] * float(cos_t[t]) + dz[:, None] * float(sin_t[t])
            i0 = torch.floor(xp)
            w = (xp - i0).to(torch.float32)
            i0 = i0.to(torch.int64)
            ok = ((i0 >= 0) & (i0 < nx_det - 1)).to(torch.float32)
            i0c = i0.clamp(0, nx_det - 2)
            row = f[t]  # (y, x')
            lo = row[:, i0c]  # (y, zb, x)
            hi = row[:, i0c + 1]
            acc += ((lo * (1 - w) + hi * w) * ok).permute(1, 0, 2)
        out[z0:z1] = acc.cpu().numpy()
        reporter.advance(f"slices {z1}/{nz}")


def backproject(filtered: np.ndarray, angles_deg: np.ndarray, *, thickness: int,
                axis_z: float, nx: int | None = None, device: str = "auto",
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None
                ) -> tuple[np.ndarray, str]:
    """Back-project prepared projections (tilt, y, x') into a (thickness, y, nx) volume.

    Returns ``(volume float32, device used)``.
    """
    filtered = np.ascontiguousarray(filtered, dtype=np.float32)
    n_tilts, ny, nx_det = filtered.shape
    nx = nx_det if nx is None else int(nx)
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if np.any(np.abs(theta) >= math.pi / 2):
        raise ValueError("tilt angles must lie strictly between −90° and 90°")
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    out = np.zeros((thickness, ny, nx), dtype=np.float32)
    used = resolve_device(device)
    block = 16
    reporter = ProgressReporter(int(math.ceil(thickness / block)), progress, cancel)
    if used in ("cuda", "torch-cpu"):
        import torch

        torch_device = torch.device("cuda" if used == "cuda" else "cpu")
        if used == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' asked for, but torch sees no CUDA GPU")
        _backproject_torch(filtered, cos_t, sin_t, out, axis_z, torch_device, reporter, block)
        return out, used
    kernel = _numba_kernel() if used == "cpu" else None
    if kernel is None:
        used = "numpy"
    for z0 in range(0, thickness, block):
        z1 = min(thickness, z0 + block)
        if kernel is not None:
            with _KERNEL_LOCK:
                kernel(filtered, cos_t, sin_t, out, float(axis_z), z0, z1)
        else:
            view = out[z0:z1]
            _backproject_numpy(filtered, cos_t, sin_t, view, float(axis_z) - z0, cancel)
        reporter.advance(f"slices {z1}/{thickness}")
    return out, used


def reconstruct(
    projections: np.ndarray,
    angles_deg: np.ndarray | list[float] | tuple[float, ...],
    params: ReconstructionParams = ReconstructionParams(),
    *,
    pixel_size_nm: float = 1.0,
    defocus_um: np.ndarray | list[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Reconstruct a tilt series (tilt, y, x') to a (thickness, y, x) volume by WBP.

    Args:
        projections: intensities (any positive scale), one image per tilt.
        angles_deg: tilt angle of each projection.
        params: see :class:`ReconstructionParams`.
        pixel_size_nm: detector pixel size (also the voxel size of the result).
        defocus_um: per-tilt defocus (underfocus > 0), needed for ``ctf_correction``.
        progress, cancel: see :mod:`napari_shrec.core.progress`.

    Returns:
        ``(volume, info)``: float32 (z, y, x) and a dict of what was used (device, axis_z,
        thickness, Crowther frequency, parameters).
    """
    projections = np.asarray(projections)
    if projections.ndim != 3:
        raise ValueError(f"projections must be (tilt, y, x), got shape {projections.shape}")
    angles = np.asarray(angles_deg, dtype=np.float64)
    if angles.shape != (projections.shape[0],):
        raise ValueError(f"{projections.shape[0]} projections but {angles.size} tilt angles")
    if params.invert_tilt_angles:
        angles = -angles
    n_tilts, ny, nx_det = projections.shape
    thickness = params.thickness or nx_det
    axis_z = float(params.axis_z) if params.axis_z is not None else float(thickness // 2)
    diameter = params.object_diameter_px or float(thickness)
    defocus = None if defocus_um is None else np.asarray(defocus_um, dtype=np.float64)
    if defocus is not None and defocus.shape != (n_tilts,):
        raise ValueError(f"{n_tilts} projections but {defocus.size} defocus values")
    filtered = prepare_projections(projections, angles, params, pixel_size_nm=pixel_size_nm,
                                   object_diameter_px=diameter, object_width_px=nx_det,
                                   defocus_um=defocus)
    if cancel is not None:
        cancel.raise_if_cancelled()
    volume, used = backproject(filtered, angles, thickness=thickness, axis_z=axis_z,
                               device=params.device, progress=progress, cancel=cancel)
    info = {"device": used, "thickness": thickness, "axis_z": axis_z,
            "crowther_frequency": n_tilts / (math.pi * diameter),
            "pixel_size_nm": pixel_size_nm, "params": params.to_dict(),
            "tilt_angles_deg": angles.tolist()}
    return volume, info
