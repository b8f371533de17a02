"""Angle sets for template matching: a near-uniform sampling of SO(3) at a given angular step.

Construction (a Hopf-fibration-style product, as in Yershova et al. 2010, with a Fibonacci
sphere instead of HEALPix): SO(3) is the set of directions on the sphere (where the template's
own z axis points) times a rotation about that axis. For a step ``s`` (radians):

- ``n_dir = ceil(4π / s²)`` directions on a Fibonacci sphere (each owns a patch of about ``s²``
  steradians; neighbours ≈ 1.07 s apart);
- ``n_psi = ceil(2π / s)`` in-plane angles ψ = 0, 2π/n_psi, … about the template's z axis;
- every direction with every ψ: ``n_dir × n_psi ≈ 8π² / s³`` rotations (12.85° → 7250, close
  to PyTom's 7112-rotation list for that step; 30° → 540).

With ZXZ angles ``R = Rz(φ)·Rx(θ)·Rz(ψ)`` (:mod:`napari_shrec.core.rotations`, active, degrees)
the direction ``R ẑ = (sin θ sin φ, −sin θ cos φ, cos θ)`` depends on (φ, θ) only, and the Haar
measure is ``sin θ dθ dφ dψ``: uniform directions times uniform ψ is uniform on SO(3). The
covering radius (the largest rotation angle from any rotation to its nearest sample) stays below
``s`` (measured: ≈ 0.8 s; ``tests/test_tm.py``).

The Crowther criterion gives the step that a particle of diameter D resolved to d needs:
``s = d / D`` radians (:func:`crowther_step_deg`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "crowther_step_deg",
    "angle_count",
    "uniform_angles",
    "rotation_distance_deg",
]

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def crowther_step_deg(diameter_nm: float, resolution_nm: float) -> float:
    """The Crowther angular step ``d / D`` in degrees (capped at 180°).

    Args:
        diameter_nm: particle (or mask) diameter D in nm.
        resolution_nm: resolution d in nm (e.g. 1 / the first CTF zero, or 2 voxels).
    """
    if not (math.isfinite(diameter_nm) and diameter_nm > 0):
        raise ValueError(f"diameter_nm must be > 0, got {diameter_nm!r}")
    if not (math.isfinite(resolution_nm) and resolution_nm > 0):
        raise ValueError(f"resolution_nm must be > 0, got {resolution_nm!r}")
    return min(math.degrees(resolution_nm / diameter_nm), 180.0)


def _counts(step_deg: float) -> tuple[int, int]:
    if not (math.isfinite(step_deg) and 0 < step_deg <= 180):
        raise ValueError(f"angular step must be in (0, 180] degrees, got {step_deg!r}")
    s = math.radians(step_deg)
    n_dir = max(1, math.ceil(4.0 * math.pi / (s * s) - 1e-9))
    n_psi = max(1, math.ceil(2.0 * math.pi / s - 1e-9))
    return n_dir, n_psi


def angle_count(step_deg: float) -> int:
    """Number of rotations :func:`uniform_angles` returns for ``step_deg``:
    ``ceil(4π/s²) · ceil(2π/s)``, s in radians."""
    n_dir, n_psi = _counts(step_deg)
    return n_dir * n_psi


def uniform_angles(step_deg: float) -> NDArray[np.float64]:
    """A near-uniform set of rotations with angular step ``step_deg`` (module docstring).

    Returns:
        (n, 3) ZXZ Euler angles (φ, θ, ψ) in degrees, direction-major (all ψ of the first
        direction, then the next direction …); the identity (0, 0, 0) is the first row.
    """
    n_dir, n_psi = _counts(step_deg)
    k = np.arange(n_dir, dtype=np.float64)
    # Fibonacci sphere: z from 1 (the identity's direction, ẑ) down to -1, golden-angle azimuths
    z = 1.0 - 2.0 * k / max(n_dir - 1, 1) if n_dir > 1 else np.ones(1)
    theta = np.degrees(np.arccos(np.clip(z, -1.0, 1.0)))
    azimuth = (k * _GOLDEN_ANGLE) % (2.0 * math.pi)
    # direction (sin θ sin φ, -sin θ cos φ, cos θ) = (sin θ cos a, sin θ sin a, cos θ) ⇒ φ = a + 90°
    phi = np.where(theta > 0, (np.degrees(azimuth) + 90.0) % 360.0, 0.0)
    psi = np.arange(n_psi, dtype=np.float64) * (360.0 / n_psi)
    out = np.empty((n_dir, n_psi, 3))
    out[:, :, 0] = phi[:, None]
    out[:, :, 1] = theta[:, None]
    out[:, :, 2] = psi[None, :]
    return out.reshape(-1, 3)


def rotation_distance_deg(a_zxz_deg: np.ndarray, b_zxz_deg: np.ndarray) -> NDArray[np.float64]:
    """Rotation angle (degrees, in [0, 180]) between every rotation of ``a`` (n, 3) and of ``b``
    (m, 3), ZXZ degrees: the (n, m) matrix of angles of ``Rₐᵀ R_b``."""
    from scipy.spatial.transform import Rotation

    qa = Rotation.from_euler("ZXZ", np.asarray(a_zxz_deg, dtype=np.float64).reshape(-1, 3),
                             degrees=True).as_quat()
    qb = Rotation.from_euler("ZXZ", np.asarray(b_zxz_deg, dtype=np.float64).reshape(-1, 3),
                             degrees=True).as_quat()
    dots = np.abs(qa @ qb.T)
    return np.degrees(2.0 * np.arccos(np.clip(dots, -1.0, 1.0)))
