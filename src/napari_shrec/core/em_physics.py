"""Electron-optics formulas used by the tilt-series simulator (SI units inside, nm outside).

- :func:`electron_wavelength_nm`: relativistic de Broglie wavelength,
  λ = h / √(2 m₀ e U (1 + e U / (2 m₀ c²))); 1.9687 pm at 300 kV.
- :func:`interaction_constant`: σ = 2π m e λ / h² with the relativistic mass m = γ m₀, in
  rad / (V·nm); 6.53e-3 rad/(V·nm) at 300 kV. A slab of projected potential P (V·nm) shifts the
  wave's phase by σ P.
- :func:`aberration_phase`: the objective's wave aberration χ(q) = π λ Δf q² − (π/2) C_s λ³ q⁴
  (radians) for spatial frequency q (nm⁻¹), with Δf > 0 meaning underfocus. The lens multiplies
  the exit wave's spectrum by exp(+iχ) (equivalently: propagation by −Δf), so a weak phase object
  images as 1 − 2σ F⁻¹[P̂ sin χ]: proteins are dark in underfocus, as in real data.
- :func:`amplitude_contrast_ratio`: absorption is added as an imaginary potential −i·a·V with
  a = A / √(1 − A²); for a weak object this gives the familiar linear CTF
  −(√(1−A²) sin χ + A cos χ) ∝ −sin(χ + arcsin A), i.e. amplitude-contrast fraction A.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "electron_wavelength_nm",
    "interaction_constant",
    "aberration_phase",
    "amplitude_contrast_ratio",
    "linear_ctf",
    "ctf_zero_frequencies",
    "spatial_frequencies_sq",
]


def _constants() -> tuple[float, float, float, float]:
    from scipy import constants

    return constants.h, constants.m_e, constants.e, constants.c


def electron_wavelength_nm(voltage_kv: float) -> float:
    """Relativistic electron wavelength (nm) at an accelerating voltage (kV)."""
    h, m0, e, c = _constants()
    u = voltage_kv * 1e3
    return h / math.sqrt(2 * m0 * e * u * (1 + e * u / (2 * m0 * c ** 2))) * 1e9


def interaction_constant(voltage_kv: float) -> float:
    """σ in rad / (V·nm): phase shift per unit projected potential (relativistic)."""
    h, m0, e, c = _constants()
    u = voltage_kv * 1e3
    gamma = 1 + e * u / (m0 * c ** 2)
    wavelength_m = electron_wavelength_nm(voltage_kv) * 1e-9
    sigma_per_v_m = 2 * math.pi * gamma * m0 * e * wavelength_m / h ** 2
    return sigma_per_v_m * 1e-9


def spatial_frequencies_sq(shape_yx: tuple[int, int], pixel_nm: float) -> np.ndarray:
    """q² (nm⁻²) on the unshifted FFT grid of an image (y, x)."""
    qy = np.fft.fftfreq(shape_yx[0], d=pixel_nm)
    qx = np.fft.fftfreq(shape_yx[1], d=pixel_nm)
    return qy[:, None] ** 2 + qx[None, :] ** 2


def aberration_phase(q_sq: np.ndarray, *, wavelength_nm: float, defocus_nm: float,
                     cs_nm: float) -> np.ndarray:
    """χ(q) = π λ Δf q² − (π/2) C_s λ³ q⁴ (radians); Δf > 0 underfocus; q² in nm⁻²."""
    return (math.pi * wavelength_nm * defocus_nm * q_sq
            - 0.5 * math.pi * cs_nm * wavelength_nm ** 3 * q_sq ** 2)


def amplitude_contrast_ratio(amplitude_contrast: float) -> float:
    """a = A / √(1 − A²): imaginary-to-real ratio of the potential giving contrast fraction A."""
    if not 0.0 <= amplitude_contrast < 1.0:
        raise ValueError(f"amplitude_contrast must be in [0, 1), got {amplitude_contrast}")
    return amplitude_contrast / math.sqrt(1.0 - amplitude_contrast ** 2)


def linear_ctf(q_sq: np.ndarray, *, wavelength_nm: float, defocus_nm: float, cs_nm: float,
               amplitude_contrast: float) -> np.ndarray:
    """The weak-object CTF −(√(1−A²) sin χ + A cos χ) (image contrast per unit σP)."""
    chi = aberration_phase(q_sq, wavelength_nm=wavelength_nm, defocus_nm=defocus_nm, cs_nm=cs_nm)
    a = amplitude_contrast
    return -(math.sqrt(1 - a ** 2) * np.sin(chi) + a * np.cos(chi))


def ctf_zero_frequencies(q_max: float, *, wavelength_nm: float, defocus_nm: float, cs_nm: float,
                         amplitude_contrast: float, samples: int = 200_000) -> np.ndarray:
    """Spatial frequencies (nm⁻¹) up to ``q_max`` where the linear CTF crosses zero."""
    q = np.linspace(0.0, q_max, samples)
    ctf = linear_ctf(q ** 2, wavelength_nm=wavelength_nm, defocus_nm=defocus_nm, cs_nm=cs_nm,
                     amplitude_contrast=amplitude_contrast)
    crossings = np.nonzero(np.signbit(ctf[:-1]) != np.signbit(ctf[1:]))[0]
    # Linear interpolation between the two samples around each sign change.
    q0, q1, c0, c1 = q[crossings], q[crossings + 1], ctf[crossings], ctf[crossings + 1]
    return q0 - c0 * (q1 - q0) / (c1 - c0)
