"""Euler-angle conventions, stated once.

napari-shrec's own convention (the one in :class:`~napari_shrec.core.particles.ParticleList` and in
SHREC ``particle_locations.txt``) is **ZXZ, intrinsic, active, right-handed, degrees**:

    R(phi, theta, psi) = Rz(phi) · Rx(theta) · Rz(psi)

acting on column vectors (x, y, z) in the tomogram frame (x = fastest MRC axis, z = beam at zero tilt).
``R`` is *active*: it rotates the reference structure into the particle's orientation, so a point
``p_ref`` of the reference (relative to its centre) lands at ``centre + R @ p_ref`` in the tomogram.
Equivalently (extrinsic reading): rotate by psi about the fixed z axis, then by theta about the fixed
x axis, then by phi about the fixed z axis. Each elementary rotation is right-handed
(counter-clockwise seen from the positive end of the axis): ``Rz(90°) @ x̂ = ŷ``, ``Rx(90°) @ ŷ = ẑ``.
This is ``scipy.spatial.transform.Rotation.from_euler("ZXZ", [phi, theta, psi], degrees=True)``.

RELION (rlnAngleRot, rlnAngleTilt, rlnAnglePsi) is ZYZ. RELION's ``Euler_angles2matrix`` returns
``A = Rz(rot)·Ry(tilt)·Rz(psi)`` *transposed* (passive), and RELION projects the reference rotated by
``A``; so the particle's active rotation is ``A = (Rz(rot)·Ry(tilt)·Rz(psi))⁻¹``, i.e.
``Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).inv()``. The conversions below go
through rotation matrices, never by shuffling angles.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

__all__ = [
    "zxz_to_matrix",
    "matrix_to_zxz",
    "relion_to_matrix",
    "matrix_to_relion",
    "zxz_to_relion",
    "relion_to_zxz",
    "random_rotations",
]


def _angles(angles_deg: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(angles_deg, dtype=np.float64)
    if arr.shape[-1:] != (3,):
        raise ValueError(f"Euler angles must have shape (..., 3), got {arr.shape}")
    return arr


def zxz_to_matrix(angles_deg: ArrayLike) -> NDArray[np.float64]:
    """Active rotation matrices (…, 3, 3) acting on (x, y, z) from ZXZ (phi, theta, psi) in degrees."""
    arr = _angles(angles_deg)
    flat = arr.reshape(-1, 3)
    mats = Rotation.from_euler("ZXZ", flat, degrees=True).as_matrix()
    return mats.reshape(arr.shape[:-1] + (3, 3))


def matrix_to_zxz(matrices: ArrayLike) -> NDArray[np.float64]:
    """ZXZ (phi, theta, psi) in degrees, phi and psi in (-180, 180], theta in [0, 180]."""
    mats = np.asarray(matrices, dtype=np.float64)
    flat = mats.reshape(-1, 3, 3)
    import warnings

    with warnings.catch_warnings():  # gimbal lock: scipy warns and sets psi = 0, which is fine
        warnings.simplefilter("ignore", UserWarning)
        angles = Rotation.from_matrix(flat).as_euler("ZXZ", degrees=True)
    return angles.reshape(mats.shape[:-2] + (3,))


def relion_to_matrix(rot_tilt_psi_deg: ArrayLike) -> NDArray[np.float64]:
    """Active rotation matrices (…, 3, 3) of particles from RELION (rot, tilt, psi) in degrees."""
    arr = _angles(rot_tilt_psi_deg)
    flat = arr.reshape(-1, 3)
    mats = Rotation.from_euler("ZYZ", flat, degrees=True).inv().as_matrix()
    return mats.reshape(arr.shape[:-1] + (3, 3))


def matrix_to_relion(matrices: ArrayLike) -> NDArray[np.float64]:
    """RELION (rot, tilt, psi) in degrees for active particle rotation matrices (…, 3, 3)."""
    mats = np.asarray(matrices, dtype=np.float64)
    flat = mats.reshape(-1, 3, 3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        angles = Rotation.from_matrix(flat).inv().as_euler("ZYZ", degrees=True)
    return angles.reshape(mats.shape[:-2] + (3,))


def zxz_to_relion(angles_deg: ArrayLike) -> NDArray[np.float64]:
    """Convert our ZXZ (phi, theta, psi) to RELION (rot, tilt, psi), same rotation."""
    return matrix_to_relion(zxz_to_matrix(angles_deg))


def relion_to_zxz(rot_tilt_psi_deg: ArrayLike) -> NDArray[np.float64]:
    """Convert RELION (rot, tilt, psi) to our ZXZ (phi, theta, psi), same rotation."""
    return matrix_to_zxz(relion_to_matrix(rot_tilt_psi_deg))


def random_rotations(n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """``n`` rotation matrices drawn uniformly from SO(3) (Haar measure), shape (n, 3, 3)."""
    return Rotation.random(n, random_state=rng).as_matrix().reshape(n, 3, 3)
