"""Templates for template matching: CTF modulation, missing-wedge filter, spherical masks.

Conventions: cubes are (z, y, x) arrays of odd edge ``n`` with their centre at ``n // 2``;
frequencies are in nm⁻¹ on ``scipy.fft.rfftn`` grids (last axis halved); the tilt axis is y, as in
the simulator and :mod:`napari_shrec.core.reconstruct`.

CTF (paper §3.7: "modulated in the frequency domain using a standard CTF curve at 3 µm defocus;
frequencies beyond the first CTF zero set to 0"): the template's spectrum is multiplied by
``−CTF(|q|)`` with CTF the weak-object linear CTF of :func:`napari_shrec.core.em_physics.linear_ctf`
(``−(√(1−A²) sin χ + A cos χ)``) as a function of the 3D frequency magnitude, and set to 0 from
the first zero on. The minus sign makes the filter positive below the first zero, matching this
project's reconstructions, where protein is bright (each projection is turned into contrast
``−(I − Ī)/Ī`` before back-projection); data with dark protein need ``invert_contrast``.

Missing wedge: a projection at tilt θ (about y) fills the central Fourier plane through the ky axis
and the direction ``(kx, kz) ∝ (cos θ, sin θ)`` (the reconstruction's projection
``x' = x cos θ + z sin θ``). The filter is 1 where the direction of ``(kx, kz)`` lies in the tilt
range, on the ky axis (``kx = kz = 0``), and 0 elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .em_physics import ctf_zero_frequencies, electron_wavelength_nm, linear_ctf

__all__ = [
    "ctf_first_zero_nm_inv",
    "frequency_grid_rfft",
    "ctf_filter_rfft",
    "wedge_filter_rfft",
    "lowpass_filter_rfft",
    "spherical_mask",
    "support_radius_vox",
    "pad_or_crop_cube",
]


def frequency_grid_rfft(shape: tuple[int, int, int], voxel_size_nm: float
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(kz, ky, kx) in nm⁻¹ broadcastable over the ``rfftn`` grid of ``shape`` (z, y, x)."""
    kz = np.fft.fftfreq(shape[0], d=voxel_size_nm)[:, None, None]
    ky = np.fft.fftfreq(shape[1], d=voxel_size_nm)[None, :, None]
    kx = np.fft.rfftfreq(shape[2], d=voxel_size_nm)[None, None, :]
    return kz, ky, kx


def ctf_first_zero_nm_inv(*, defocus_um: float, voltage_kv: float, cs_mm: float,
                          amplitude_contrast: float, q_max_nm_inv: float = 5.0) -> float:
    """The first zero (nm⁻¹) of the linear CTF; ``inf`` when it lies beyond ``q_max_nm_inv``.
    3 µm underfocus, 300 kV, Cs 2.7 mm, A = 0.08: 0.406 nm⁻¹ (2.46 nm)."""
    zeros = ctf_zero_frequencies(q_max_nm_inv, wavelength_nm=electron_wavelength_nm(voltage_kv),
                                 defocus_nm=defocus_um * 1e3, cs_nm=cs_mm * 1e6,
                                 amplitude_contrast=amplitude_contrast)
    zeros = zeros[zeros > 0]
    return float(zeros[0]) if zeros.size else math.inf


def ctf_filter_rfft(shape: tuple[int, int, int], voxel_size_nm: float, *, defocus_um: float,
                    voltage_kv: float, cs_mm: float, amplitude_contrast: float
                    ) -> NDArray[np.float32]:
    """``−CTF(|q|)`` on the ``rfftn`` grid of ``shape``, 0 from the first CTF zero on
    (module docstring); float32, positive at low frequencies (underfocus)."""
    kz, ky, kx = frequency_grid_rfft(shape, voxel_size_nm)
    q_sq = kz ** 2 + ky ** 2 + kx ** 2
    q_zero = ctf_first_zero_nm_inv(defocus_um=defocus_um, voltage_kv=voltage_kv, cs_mm=cs_mm,
                                   amplitude_contrast=amplitude_contrast,
                                   q_max_nm_inv=2.0 / voxel_size_nm)
    ctf = -linear_ctf(q_sq, wavelength_nm=electron_wavelength_nm(voltage_kv),
                      defocus_nm=defocus_um * 1e3, cs_nm=cs_mm * 1e6,
                      amplitude_contrast=amplitude_contrast)
    ctf[q_sq >= q_zero ** 2] = 0.0
    return ctf.astype(np.float32)


def lowpass_filter_rfft(shape: tuple[int, int, int], voxel_size_nm: float, lowpass_nm: float
                        ) -> NDArray[np.float32]:
    """Gaussian low-pass ``exp(−(q · lowpass_nm)²)`` on the ``rfftn`` grid of ``shape`` (q in
    nm⁻¹): 1/e at q = 1 / lowpass_nm."""
    kz, ky, kx = frequency_grid_rfft(shape, voxel_size_nm)
    return np.exp(-(kz ** 2 + ky ** 2 + kx ** 2) * float(lowpass_nm) ** 2).astype(np.float32)


def wedge_filter_rfft(shape: tuple[int, int, int], tilt_range_deg: tuple[float, float]
                      ) -> NDArray[np.float32]:
    """Binary missing-wedge filter (1 = measured) on the ``rfftn`` grid of ``shape`` for tilts
    ``tilt_range_deg = (min, max)`` about y (module docstring)."""
    lo, hi = (float(a) for a in tilt_range_deg)
    kz, ky, kx = frequency_grid_rfft(shape, 1.0)
    kz = np.broadcast_to(kz, (shape[0], shape[1], kx.shape[2]))
    kx = np.broadcast_to(kx, kz.shape)
    # direction of (kx, kz) folded into (-90°, 90°]: a line through the origin
    angle = np.degrees(np.arctan2(kz, kx))
    angle = np.where(angle > 90.0, angle - 180.0, angle)
    angle = np.where(angle <= -90.0, angle + 180.0, angle)
    eps = 1e-9
    inside = (angle >= lo - eps) & (angle <= hi + eps)
    if hi - lo >= 180.0 - eps:
        inside[...] = True
    on_axis = (kx == 0) & (kz == 0)
    return (inside | on_axis).astype(np.float32)


def spherical_mask(edge: int, radius_vox: float, sigma_vox: float = 0.0) -> NDArray[np.float32]:
    """A sphere of ``radius_vox`` about the centre ``edge // 2`` of an (edge,)³ cube: 1 inside,
    a Gaussian fall-off ``exp(−(r − R)² / 2σ²)`` outside (cut at R + 3σ), 0 beyond."""
    c = edge // 2
    g = np.arange(edge, dtype=np.float64) - c
    r = np.sqrt(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2)
    mask = (r <= radius_vox + 1e-9).astype(np.float64)
    if sigma_vox > 0:
        outside = (r > radius_vox) & (r <= radius_vox + 3.0 * sigma_vox)
        mask[outside] = np.exp(-0.5 * ((r[outside] - radius_vox) / sigma_vox) ** 2)
    return mask.astype(np.float32)


def support_radius_vox(template: np.ndarray, fraction: float) -> float:
    """Largest distance (voxels) from the centre ``n // 2`` of a voxel with
    ``|T| ≥ fraction · max |T|``; 0 for an all-zero template."""
    a = np.abs(np.asarray(template, dtype=np.float64))
    top = a.max() if a.size else 0.0
    if top <= 0:
        return 0.0
    c = np.array(a.shape) // 2
    idx = np.argwhere(a >= fraction * top)
    return float(np.sqrt(((idx - c) ** 2).sum(axis=1)).max())


def pad_or_crop_cube(cube: np.ndarray, edge: int) -> np.ndarray:
    """The odd ``edge`` cube with the same centre (``n // 2`` → ``edge // 2``), zero-padded or
    cropped symmetrically."""
    n = cube.shape[0]
    out = np.zeros((edge,) * 3, dtype=cube.dtype)
    h_in, h_out = n // 2, edge // 2
    h = min(h_in, h_out)
    src = slice(h_in - h, h_in + h + 1)
    dst = slice(h_out - h, h_out + h + 1)
    out[dst, dst, dst] = cube[src, src, src]
    return out
